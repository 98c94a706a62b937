"""Scorers (evaluate modules loaded from local files), aggregation and bootstrap CIs."""

from __future__ import annotations

import math

import pytest

from harness.core.schema import Record
from harness.core.stats import mean_ci
from tasks import get_task

TASK = get_task("burberry")
SCORE_KEYS = [spec.name for spec in TASK.metric_specs()]
TRUTH = dict(name="Vintage Check Cashmere Scarf", category="PONCHOS & CAPES", price=1000.0)


def score(truth: dict, parsed: dict) -> dict:
    return TASK.score([truth], [parsed])[0]


def bootstrap_ci(values):
    mean, low, high, n = mean_ci([values])[0]
    return mean, low, high, n


def test_perfect_answer_with_other_spelling():
    s = score(TRUTH, dict(name="vintage  check cashmere-scarf", category="Ponchos and Capes", price=1000))
    assert s["name_exact"] == 1.0 and s["name_similarity"] == 100.0 and s["category_exact"] == 1.0
    assert s["price_abs_error"] == 0.0 and s["price_ape"] == 0.0 and s["price_log_error"] == 0.0
    assert s["price_within_10"] == s["price_within_25"] == s["parsed"] == 1.0


def test_price_errors_hand_checked():
    s = score(TRUTH, dict(name="Check Scarf", category="CAPES", price=1200.0))
    assert s["price_abs_error"] == pytest.approx(200.0)
    assert s["price_ape"] == pytest.approx(0.2)
    assert s["price_within_10"] == 0.0 and s["price_within_25"] == 1.0
    assert s["price_log_error"] == pytest.approx(math.log(1.2))
    assert s["category_exact"] == 0.0 and s["name_exact"] == 0.0
    # token-sort ratio of "check scarf" vs "vintage check cashmere scarf" = 2*11/(11+28)
    assert s["name_similarity"] == pytest.approx(200 * 11 / 39, abs=0.01)
    low = score(TRUTH, dict(price=500.0))
    assert low["price_ape"] == pytest.approx(0.5) and low["price_log_error"] == pytest.approx(math.log(2))


def test_missing_price_is_a_miss_not_zero():
    s = score(TRUTH, dict(name="Vintage Check Cashmere Scarf", category="PONCHOS & CAPES"))
    assert s["price_abs_error"] is None and s["price_ape"] is None and s["price_log_error"] is None
    assert s["price_within_10"] == 0.0 and s["price_within_25"] == 0.0 and s["parsed"] == 0.0
    zero = score(TRUTH, dict(price=0.0))
    assert zero["price_ape"] == 1.0 and zero["price_log_error"] is None and zero["name_similarity"] == 0.0


def _record(i, parsed, truth=TRUTH, error=None):
    """As the runner writes it: an errored sample is scored as an empty answer."""
    parsed = {} if error else parsed
    return Record(
        id=str(i),
        image="x.png",
        prompt="p",
        output=None if error else "o",
        parsed=parsed,
        truth=truth,
        error=error,
        scores=score(truth, parsed),
    )


def test_aggregate_counts_errors_as_failures():
    other = dict(name="Leather Boots", category="BOOTS", price=990.0)
    good = dict(name=TRUTH["name"], category=TRUTH["category"], price=1050.0)
    records = [
        _record(0, good),
        _record(1, good),
        _record(2, good, error="CUDA out of memory"),  # its parsed fields must be ignored
        _record(3, dict(name="Leather Boots", category="BOOTS")),
        _record(4, dict(), other),
    ]
    records[3] = _record(3, dict(name="Leather Boots", category="BOOTS"), other)
    metrics, per_group = TASK.aggregate(records)
    per_cat = per_group["category"]
    assert set(SCORE_KEYS) == set(metrics) and "parse_rate" not in metrics  # one name per number
    assert metrics["parsed"].value == pytest.approx(2 / 5) and metrics["parsed"].n == 5
    assert metrics["name_read"].value == pytest.approx(3 / 5) and metrics[
        "price_read"
    ].value == pytest.approx(2 / 5)
    assert metrics["name_exact"].value == pytest.approx(3 / 5)
    assert metrics["price_within_10"].value == pytest.approx(2 / 5)
    assert metrics["price_ape"].n == 2 and metrics["price_ape"].value == pytest.approx(0.05)
    assert metrics["price_ape"].ci_low == metrics["price_ape"].ci_high == pytest.approx(0.05)
    assert per_cat["PONCHOS & CAPES"] == {
        "n": 3, "name_exact": pytest.approx(2 / 3), "category_exact": pytest.approx(2 / 3),
        "price_within_25": pytest.approx(2 / 3), "parsed": pytest.approx(2 / 3), "price_ape": pytest.approx(0.05),
    }  # fmt: skip
    assert per_cat["BOOTS"]["n"] == 2 and per_cat["BOOTS"]["price_ape"] is None
    assert per_cat["BOOTS"]["category_exact"] == 0.5


def test_bootstrap_edge_cases_and_shrinking_width():
    assert bootstrap_ci([]) == (None, None, None, 0)
    assert bootstrap_ci([None, None]) == (None, None, None, 0)
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7, 1)
    assert bootstrap_ci([None, 0.7]) == (0.7, 0.7, 0.7, 1)  # undefined values are left out
    _, low, high, _ = bootstrap_ci([1.0] * 50)
    assert low == high == 1.0
    small = bootstrap_ci([0.0, 1.0] * 10)
    large = bootstrap_ci([0.0, 1.0] * 1000)
    assert small[1] < 0.5 < small[2] and large[1] < 0.5 < large[2]
    assert (large[2] - large[1]) < (small[2] - small[1]) / 5
    assert bootstrap_ci([0.0, 1.0] * 10) == small  # fixed seed: reproducible


def test_evaluate_modules_load_offline_and_equal_the_scorers_the_harness_calls():
    """tasks/metrics/ wraps tasks/scorers.py as evaluate modules: same numbers, loaded from files offline."""
    from pathlib import Path

    import evaluate

    from tasks import scorers

    metrics = Path(scorers.__file__).with_name("metrics")
    module = evaluate.load(str(metrics / "number_error.py"), keep_in_memory=True)  # offline: no hub lookup
    preds, refs = [None, 110.0, 0.0, 97.5], [100.0, 100.0, 50.0, 100.0]
    out = module.compute(predictions=preds, references=refs, tolerances=[10.0, 5.0])
    assert out == scorers.columns(scorers.number_scores, preds, refs, tolerances=[10.0, 5.0])
    assert out["within_10"] == [0.0, 1.0, 0.0, 1.0] and out["within_5"] == [0.0, 0.0, 0.0, 1.0]
    texts, truths = ["", "Check Scarf", "vintage check scarf"], ["Vintage Check Scarf"] * 3
    text = evaluate.load(str(metrics / "text_match.py"), keep_in_memory=True)
    assert text.compute(predictions=texts, references=truths) == scorers.columns(
        scorers.text_scores, texts, truths
    )
    label = evaluate.load(str(metrics / "label_match.py"), keep_in_memory=True)
    assert label.compute(predictions=["", "Bags"], references=["BAGS", "bags"])["exact"] == [0.0, 1.0]
    known = ["BAGS", "SCARVES", "TRENCH COATS"]
    mapped = label.compute(predictions=["", "a trench coat", "scarf"], references=["BAGS", "TRENCH COATS", "BAGS"], labels=known)  # fmt: skip
    assert mapped == scorers.columns(scorers.label_scores, ["", "a trench coat", "scarf"], ["BAGS", "TRENCH COATS", "BAGS"], labels=known)  # fmt: skip
    assert mapped["exact"] == [0.0, 0.0, 0.0] and mapped["mapped"] == [0.0, 1.0, 0.0]


def test_a_non_answer_is_never_read_as_the_commonest_label():
    from tasks.scorers import label_scores

    labels = ["COATS", "BAGS", "TRENCH COATS"]  # commonest first, as the train split lists them
    for answer in ("I cannot tell", "--", "", None):
        assert label_scores(answer, "COATS", labels)["mapped"] == 0.0
    assert label_scores("a trench coat", "TRENCH COATS", labels)["mapped"] == 1.0
    assert label_scores("bag", "BAGS", labels)["mapped"] == 1.0
    assert label_scores("bag", "BAGS", None)["mapped"] is None  # no label set known: undefined
    tie = label_scores("ab", "AB X", ["AB X", "AB Y"])  # equally near both: read as neither
    assert tie["mapped"] == 0.0
