"""The answer parser: real-world answer shapes, round trips of the training target, and fuzzing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.schema import Sample, Truth
from tasks.burberry import PHI3_PROMPT, QUESTION, BurberryTask, parse_answer, parse_price

CASES = [
    ("Product: Vintage Check Cashmere Scarf, Category: SCARVES, Full Price: 790.0",
     ("Vintage Check Cashmere Scarf", "SCARVES", 790.0)),
    ("**Product:** Leather Boots\n**Category:** BOOTS\n**Price:** $1,290.00", ("Leather Boots", "BOOTS", 1290.0)),
    ("- Product: Cotton Shorts\n- Category: SKIRTS & TROUSERS\n- Full Price: USD 300",
     ("Cotton Shorts", "SKIRTS & TROUSERS", 300.0)),
    ("Category: BOOTS, Product: Nubuck Trek Boots, Full Price: 1190 USD. These boots are great for hiking.",
     ("Nubuck Trek Boots", "BOOTS", 1190.0)),
    ("Product: Check, Wool and Cashmere Scarf, Category: SCARVES, Full Price: 1.290,00",
     ("Check, Wool and Cashmere Scarf", "SCARVES", 1290.0)),
    ("Product: Cashmere Reversible Hooded Cape\nCategory: PONCHOS & CAPES\nFull Price: 4350.0<|end|>",
     ("Cashmere Reversible Hooded Cape", "PONCHOS & CAPES", 4350.0)),
    ("**Product**: Trench Coat\n**Category**: TRENCH COATS", ("Trench Coat", "TRENCH COATS", None)),
    ("Sure! Here are the details:\n* Product name: Icon Stripe Tote\n* Category: Totes\n* Price: $2,190",
     ("Icon Stripe Tote", "Totes", 2190.0)),
    ("This appears to be a scarf that costs about $450.", (None, None, 450.0)),
    ("Vintage Check Scarf, SCARVES, 450.0", ("Vintage Check Scarf", "SCARVES", 450.0)),
    ("Product: Leather Card Case, Category: WALLETS & CARD CASES, Full Price: N/A", ("Leather Card Case",
     "WALLETS & CARD CASES", None)),
    ("I cannot identify the product in this image.", (None, None, None)),
    ("Product: Monogram Bucket Hat, Category: CAPS & HATS. It is a lovely hat, Full Price: 590.0",
     ("Monogram Bucket Hat", "CAPS & HATS", 590.0)),
    ("PRODUCT: Wool Cape | CATEGORY: PONCHOS & CAPES | PRICE (USD): 2,490", ("Wool Cape", "PONCHOS & CAPES", 2490.0)),
    ("", (None, None, None)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_real_world_answers(text, expected):
    got = parse_answer(text)
    assert (got["name"], got["category"], got["price"]) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [("$1,290.00", 1290.0), ("USD 1290", 1290.0), ("1290 USD", 1290.0), ("1.290,00 €", 1290.0),
     ("12,345,678", 12345678.0), ("4350.0", 4350.0), ("99,5", 99.5), ("none", None)],
)  # fmt: skip
def test_parse_price(text, value):
    assert parse_price(text) == value


def test_prompt_and_target_format():
    task = BurberryTask()
    truth = Truth(name="Cashmere Reversible Hooded Cape", category="PONCHOS & CAPES", price=4350)
    sample = Sample(id="1", image="x.png", truth=truth)
    assert task.messages(sample) == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    assert (
        task.target(sample)
        == "Product: Cashmere Reversible Hooded Cape, Category: PONCHOS & CAPES, Full Price: 4350.0"
    )
    assert PHI3_PROMPT == "<|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n"


words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=10)


@settings(max_examples=150, deadline=None)
@given(
    title=st.lists(words, min_size=1, max_size=6).map(" ".join),
    comma=st.booleans(),
    category=st.lists(
        st.sampled_from(["BOOTS", "&", "CAPES", "T-SHIRTS", "SCARVES"]), min_size=1, max_size=3
    ).map(" ".join),
    cents=st.integers(min_value=100, max_value=10_000_000),
)
def test_target_round_trips(title, comma, category, cents):
    title = title.replace(" ", ", ", 1) if comma else title
    price = cents / 100
    sample = Sample(id="1", image="x.png", truth=Truth(name=title, category=category, price=price))
    parsed = BurberryTask().parse(BurberryTask().target(sample))
    assert (parsed.name, parsed.category, parsed.price) == (title, category, price)


labels = st.sampled_from(
    ["Product:", "**Product:**", "Category:", "Full Price:", "Price:", "\n", ",", "$", "USD"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.text(max_size=30), labels, st.floats(allow_nan=True).map(str)), max_size=12).map(
        "".join
    )
)
def test_parser_never_raises(text):
    got = parse_answer(text)
    assert set(got) == {"name", "category", "price"}
    assert got["price"] is None or math.isfinite(got["price"])
    assert got["name"] is None or (isinstance(got["name"], str) and got["name"])
