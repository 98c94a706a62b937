"""Field kinds are objects: a new kind is one declaration, and config checks, data, parsing,
scoring, metrics and reports all follow it (reports choose metrics by role, never by name)."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image
from test_report_fakes import write_run

from harness.core.schema import MetricSpec, Record
from reports.compare import make_report
from tasks import get_task
from tasks.kinds import KINDS, FieldKind

RATING_TOML = """\
name = "reviews"
question = "What is shown, and how many stars did it get?"
answer = "Title: {title}, Stars: {stars}"
fields = [
  {name = "title", column = "title", kind = "text", labels = ["Title"]},
  {name = "stars", column = "stars", kind = "rating", labels = ["Stars", "Rating"]},
]
[data]
file = "reviews.csv"
id_column = "sku"
image_column = "image"
"""


def _rating_metrics(field) -> list[MetricSpec]:
    n = field.name
    return [
        MetricSpec(name=f"{n}_exact", label=f"{n} exact", role="accuracy", binary=True, percent=True, field=n),
        MetricSpec(name=f"{n}_off", label=f"{n} stars off", role="error", higher_is_better=False,
                   fill_missing=False, field=n),
    ]  # fmt: skip


def _rating_score(field, predictions, truths, labels):
    exact = [float(p is not None and round(p) == t) for p, t in zip(predictions, truths, strict=True)]
    off = [None if p is None else abs(p - t) for p, t in zip(predictions, truths, strict=True)]
    return {f"{field.name}_exact": exact, f"{field.name}_off": off}


@pytest.fixture
def rating(monkeypatch):
    """A throw-away kind: 1-5 stars, read as a number, scored exact and by stars off."""
    kind = FieldKind("rating", "number", ("exact", "off"), _rating_metrics, _rating_score, positive=True)
    monkeypatch.setitem(KINDS, "rating", kind)
    return kind


def write_reviews(root, stars=(1, 2, 3, 4, 5, 0) * 5):
    rows = []
    for i, s in enumerate(stars):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(root / f"{i}.png")
        rows.append({"sku": f"R{i}", "title": f"Lamp {i}", "stars": s, "image": f"{i}.png"})
    pd.DataFrame(rows).to_csv(root / "reviews.csv", index=False)
    (root / "reviews.toml").write_text(RATING_TOML)
    return root / "reviews.toml"


def test_a_new_kind_is_one_declaration(tmp_path, rating):
    task = get_task(str(write_reviews(tmp_path)))
    splits = [task.load(None, split, cache_dir=tmp_path / "c") for split in ("train", "validation", "test")]
    samples = [s for data in splits for s in data.samples]
    excluded = [e for data in splits for e in data.excluded]
    assert len(samples) == 25  # the kind's own check: a rating of 0 is not a positive number
    assert sorted(e.id for e in excluded) == ["R11", "R17", "R23", "R29", "R5"]
    assert "field 'stars' (column 'stars') must be a positive number, got 0" in excluded[0].reason

    assert task.parse("Title: Desk Lamp, Stars: 4") == {"title": "Desk Lamp", "stars": 4.0}
    assert task.target(samples[0]).startswith("Title: Lamp ") and ", Stars: " in task.target(samples[0])
    scores = task.score([{"title": "Desk Lamp", "stars": 5.0}], [task.parse("Title: Desk Lamp, Stars: 4")])
    assert scores[0]["stars_exact"] == 0.0 and scores[0]["stars_off"] == 1.0 and scores[0]["parsed"] == 1.0
    specs = {s.name: s for s in task.metric_specs()}
    assert specs["stars_off"].role == "error" and not specs["stars_off"].higher_is_better
    (info,) = [f for f in task.field_infos() if f.name == "stars"]
    assert info.numeric and not info.categorical


def test_a_config_naming_an_unknown_scorer_of_the_new_kind_is_refused(tmp_path, rating):
    from harness.core.errors import HarnessError

    path = write_reviews(tmp_path)
    path.write_text(RATING_TOML.replace('kind = "rating",', 'kind = "rating", scorers = ["ape"],'))
    with pytest.raises(HarnessError, match=r"unknown scorer 'ape' for kind 'rating'; valid: exact, off"):
        get_task(str(path))


def test_reports_choose_the_new_kinds_metrics_by_role(tmp_path, rating):
    """The report's examples and plots follow roles: the kind's "error" metric gets no CDF (only a
    relative error does) and no example table (only relative errors and similarities do)."""
    task = get_task(str(write_reviews(tmp_path)))
    specs = task.metric_specs()
    image = str(tmp_path / "0.png")

    def record(i: int, stars: float | None) -> Record:
        truth = {"title": f"Lamp {i}", "stars": 3.0}
        parsed = {"title": f"Lamp {i}", "stars": stars}
        scores = task.score([truth], [parsed])[0]
        return Record(
            id=f"r{i}", image=image, prompt="p", output="x", truth=truth, parsed=parsed, scores=scores
        )

    runs = tmp_path / "runs"
    same = {"specs": specs, "task": "reviews", "fields": task.field_infos()}
    a = write_run(runs, "a", "base", [record(i, 3.0 if i % 2 else 1.0) for i in range(20)], **same)
    b = write_run(runs, "b", "tuned", [record(i, 3.0) for i in range(20)], **same)
    result = make_report(a, b, out=tmp_path / "r.md", n_boot=200)
    md = result.markdown.read_text()
    assert "stars stars off" in md and "stars exact" in md
    assert "Biggest wins of B (title similarity (0-100))" in md  # examples by similarity, not by "error"
    assert not any("cdf" in p.name for p in result.plots)
