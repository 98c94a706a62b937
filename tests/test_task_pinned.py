"""Burberry's numbers on the synthetic catalog, pinned before the task became a config file.

The expected values in fixtures/burberry_synthetic_pinned.json were computed by this exact script
on the code of commit 4e4d38e (before catalog tasks were config-driven); the config-driven task
must reproduce them: same split, same prompt and target, same parser, scorers and bootstrap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core.schema import Record
from tasks import get_task

PINNED = Path(__file__).parent / "fixtures" / "burberry_synthetic_pinned.json"


def answers(samples) -> list[str]:
    """Eight answer shapes a model produces, right and wrong, formatted and not."""
    out = []
    for i, s in enumerate(samples):
        name, category, price = s.truth["name"], s.truth["category"], s.truth["price"]
        out.append(
            [
                f"Product: {name}, Category: {category}, Full Price: {float(price)}",
                f"Product: {name}, Category: BAGS, Full Price: {price * 1.15}",
                f"**Product:** {name.lower()}\n**Category:** {category.title()}\n**Price:** ${price * 0.7:,.2f}",
                f"The image shows a {name.lower()} with 2 pockets, a belt, and 8 buttons.",
                f"{name}, {category}, {price * 1.05}",
                f"Product: {' '.join(name.split()[:-1]) or name}, Category: {category}",
                f"Category: {category} | Product: {name} | Full Price: USD {price * 2:.0f}",
                f"This {category.lower()} costs about ${price:,.0f}.",
            ][i % 8]
        )
    return out


def compute() -> dict:
    task = get_task("burberry")
    data = task.load("synthetic", "test")
    texts = answers(data.samples)
    parsed = [task.parse(a) for a in texts]
    scores = task.score([s.truth for s in data.samples], parsed)
    records = [
        Record(id=s.id, image=s.image, prompt="", output=a, parsed=p, truth=s.truth, scores=sc)
        for s, a, p, sc in zip(data.samples, texts, parsed, scores, strict=True)
    ]
    metrics, per_group = task.aggregate(records)
    return {
        "n": len(data.samples),
        "ids": [s.id for s in data.samples],
        "metrics": {k: v.model_dump() for k, v in metrics.items()},
        "per_category": per_group["category"],  # the pinned file's name for the per-label table
    }


def test_burberry_numbers_on_the_synthetic_catalog_are_unchanged():
    expected = json.loads(PINNED.read_text())
    got = json.loads(json.dumps(compute()))
    assert got["n"] == expected["n"] and got["ids"] == expected["ids"]  # the same test split
    # Every pinned metric is still there; the one added since is the closed-set reading of the category.
    assert set(got["metrics"]) - set(expected["metrics"]) == {"category_mapped"}
    assert set(expected["metrics"]) <= set(got["metrics"])
    for name, value in expected["metrics"].items():
        for key in ("value", "ci_low", "ci_high", "n"):
            assert got["metrics"][name][key] == pytest.approx(value[key], rel=1e-12, abs=1e-12), (name, key)
    for category, row in expected["per_category"].items():
        for key, value in row.items():
            assert got["per_category"][category][key] == pytest.approx(value, rel=1e-12, abs=1e-12), (
                category,
                key,
            )


if __name__ == "__main__":  # how the fixture was made
    PINNED.write_text(json.dumps(compute(), indent=1, sort_keys=True) + "\n")
