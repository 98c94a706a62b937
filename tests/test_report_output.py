"""What `harness report` writes: escaped markdown, thumbnails, PNG plots, a W&B offline run."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_report_fakes import image, record, write_run

from reports.compare import make_report
from reports.markdown import cell, thumbnail

HOSTILE = [
    "a | b || c",
    "line one\nline two\r\n\n| x | y |",
    "```python\nimport os\n```",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "[click me](http://evil.example) ![pic](http://evil.example/p.png) <http://evil.example>",
    "\\| escaped pipe \\",
]


def _tables(markdown: str) -> list[list[str]]:
    """Consecutive table lines, as blocks of raw rows."""
    blocks, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks + ([current] if current else [])


def _cells(row: str) -> int:
    """Columns of a GFM table row: `|` splits cells unless backslash-escaped."""
    return len(re.split(r"(?<!\\)\|", row.strip()[1:-1]))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A two-run report whose B outputs and one error message are hostile strings."""
    root = tmp_path_factory.mktemp("report")
    images = [image(root / "img" / f"{c}.png", c) for c in ("red", "green", "blue")]
    a_recs = [
        record(i, correct=i % 2 == 0, ape=0.5 if i % 3 else None, sim=40, img=images[i % 3])
        for i in range(30)
    ]
    b_recs = [
        record(
            i,
            correct=True,
            ape=0.02 * (i % 4),
            sim=80 + i % 5,
            img=images[i % 3],
            output=HOSTILE[i % len(HOSTILE)],
        )
        for i in range(30)
    ]
    b_recs[7] = record(
        7, correct=False, ape=None, sim=0, img=str(root / "missing.png"), error="boom | <b>x</b>\nmore"
    )
    b_recs[8] = record(
        8, correct=False, ape=0.9, sim=10, img=images[0], category="Bags | <i>x</i> [l](http://e)"
    )
    a_recs[8] = record(
        8, correct=True, ape=0.01, sim=90, img=images[0], category="Bags | <i>x</i> [l](http://e)"
    )
    runs = root / "runs"
    write_run(runs, "base-run", "base", a_recs)
    write_run(runs, "tuned-run", "tuned", b_recs, torn=True)
    out = root / "out" / "cmp.md"
    result = make_report(runs / "base-run", runs / "tuned-run", out=out, wandb=True, n_boot=1000)
    return result, out.read_text()


def test_hostile_outputs_never_break_a_table_or_render(report):
    _, md = report
    tables = _tables(md)
    assert len(tables) >= 5
    for rows in tables:
        assert {_cells(r) for r in rows} == {_cells(rows[0])}, rows
    assert "<script" not in md.lower() and "<img" not in md.lower() and "<i>" not in md and "<b>" not in md
    assert "```" not in md and "<http" not in md
    assert all(
        target.startswith("cmp-assets/") for target in re.findall(r"\]\(([^)]*)\)", md)
    )  # only our links
    assert "&#60;script&#62;" in md  # the output is shown, inert, not dropped
    assert "boom &#124; &#60;b&#62;x&#60;/b&#62; more" in md


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_cell_is_single_line_and_inert_for_any_text(text):
    value = cell(text, limit=10_000)
    assert not set(value) & set("|\n\r<>`[]")
    assert html.unescape(value) == " ".join(text.split())  # nothing lost, only made inert


def test_report_names_what_was_compared(report):
    result, md = report
    for expected in (
        "base",
        "tuned",
        "/models/tuned",
        "/adapters/x",
        "fp-test-1",
        "SYNTHETIC",
        "transformers 5.24",
    ):
        assert expected in md
    assert "McNemar exact" in md and "Wilcoxon signed-rank" in md
    assert "torn last line dropped | no | yes" in md
    assert "| errors (scored as wrong) | 0 | 1 |" in md
    assert result.exit_code == 0 and result.comparison.by_name()["category_exact"].better


def test_plots_and_thumbnails_are_valid_images_linked_relatively(report, tmp_path):
    result, md = report
    assert [p.name for p in result.plots] == [
        "price_scatter.png",
        "price_ape_cdf.png",
        "category_accuracy.png",
    ]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) > 3 and all(not Path(link).is_absolute() for link in links)
    for link in set(links):
        with Image.open(result.markdown.parent / link) as img:
            img.verify()
    assert thumbnail(str(tmp_path / "missing.png"), tmp_path) is None  # shown as "(no image)", no crash


def test_wandb_offline_run_holds_the_tables(report):
    result, _ = report
    tables = {p.name.split("_0_")[0]: p for p in (result.wandb_dir / "media" / "table").glob("*.table.json")}
    assert set(tables) == {"summary", "per_category", "samples"}
    summary = json.loads(tables["summary"].read_text())
    assert summary["columns"][:4] == ["metric", "n", "A", "B"]
    assert {row[0] for row in summary["data"]} >= {"category_exact", "price_ape"}
    samples = json.loads(tables["samples"].read_text())
    assert len(samples["data"]) == 30  # every shared id; B's torn duplicate of s000 was dropped
    column = samples["columns"].index("B_output")
    assert {type(row[column]) for row in samples["data"]} == {str}
    assert list((result.wandb_dir / "media" / "images").rglob("*.png"))


def test_single_run_report(tmp_path):
    runs = tmp_path / "runs"
    recs = [record(i, correct=i % 2 == 0, ape=0.1 * (i % 4) if i % 5 else None, sim=60) for i in range(12)]
    recs[4] = record(4, correct=True, ape=None, sim=0, error="timeout")
    write_run(runs, "only", "tiny", recs)
    result = make_report(runs / "only", None, out=tmp_path / "tiny.md", n_boot=500)
    md = result.markdown.read_text()
    assert result.comparison is None and result.exit_code == 0
    assert "| category accuracy | 12 | 41.7 % |" in md  # 5 of 12 right (the errored one counts as wrong)
    assert "Wilcoxon" not in md and all(p.is_file() for p in result.plots)
    for rows in _tables(md):
        assert {_cells(r) for r in rows} == {_cells(rows[0])}
