"""The burberry task's prompt, target and its parser wiring (the parser's rules: test_task_parsing.py)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.core.schema import Sample
from tasks import get_task

TASK = get_task("burberry")
QUESTION = "What is shown in this image?"
PHI3_PROMPT = "<|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n"


def test_prompt_and_target_format():
    truth = {"name": "Cashmere Reversible Hooded Cape", "category": "PONCHOS & CAPES", "price": 4350.0}
    sample = Sample(id="1", image="x.png", truth=truth)
    assert TASK.messages(sample) == [
        {"role": "user", "content": [{"type": "image", "path": "x.png"}, {"type": "text", "text": QUESTION}]}
    ]
    assert (
        TASK.target(sample)
        == "Product: Cashmere Reversible Hooded Cape, Category: PONCHOS & CAPES, Full Price: 4350.0"
    )
    from backends.phi3v import Phi3VProcessor

    rendered = Phi3VProcessor.from_pretrained().apply_chat_template(
        TASK.messages(sample), add_generation_prompt=True
    )
    assert rendered == PHI3_PROMPT  # the seed pipeline's prompt, exactly


def test_prose_never_becomes_fields():
    for text in (
        "The image shows a beige trench coat with a belt, two pockets, and 8 buttons.",
        "A trench coat, beige, from the 2023 collection",
    ):
        parsed = TASK.parse(text)
        assert parsed == {"name": None, "category": None, "price": None}, text
    assert TASK.parse("Product: St. James Trench Coat, Category: TRENCH COATS, Full Price: 2290.0")[
        "name"
    ] == ("St. James Trench Coat")


ALIASES = [a.lower() for f in TASK.fields for a in f.labels]
value = st.text(
    alphabet=st.sampled_from(
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.&-'\"/, éüßø中")
    ),
    min_size=1,
    max_size=30,
).map(str.strip)


@settings(max_examples=200, deadline=None)
@given(name=value, category=value, cents=st.integers(min_value=1, max_value=10**9))
def test_every_target_the_task_renders_parses_back_to_its_truth(name, category, cents):
    assume(name and category)
    assume(not any(f"{a}:" in (name + category).lower() for a in ALIASES))
    truth = {"name": name, "category": category, "price": cents / 100}
    parsed = TASK.parse(TASK.target(Sample(id="1", image="x.png", truth=truth)))
    assert parsed == truth
