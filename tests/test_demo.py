"""`harness demo --quick` end to end through the CLI: evaluate, fine-tune, evaluate, report."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from harness.cli import app
from harness.core.run import read_run
from reports.compare import compare_runs


@pytest.mark.slow
def test_quick_demo_fine_tune_wins_in_its_report(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--quick"])
    assert result.exit_code == 0, result.output

    runs = {}
    for run in (tmp_path / "runs").iterdir():
        if run.name == "reports":  # the report lands beside the runs, never in the source package
            continue
        config = json.loads((run / "config.json").read_text())
        assert config["data"]["synthetic"] is True
        runs["tuned" if config["model"]["adapter"] else f"base {config['prompt_name']}"] = run
    assert sorted(runs) == ["base choices", "base default", "base instructed", "tuned"]
    runs["base"] = runs["base default"]
    metrics = {k: json.loads((run / "metrics.json").read_text())["metrics"] for k, run in runs.items()}
    # The random base model cannot answer in the format; a short fine-tune can.
    assert metrics["base"]["parsed"]["value"] < 0.2
    assert metrics["tuned"]["parsed"]["value"] > 0.6
    # The paired comparison behind the report calls that significant...
    comparison = compare_runs(read_run(runs["base"]), read_run(runs["tuned"])).by_name()
    assert comparison["parsed"].better and not comparison["parsed"].worse
    # ...and the report exists and links plots that are real PNGs.
    report = tmp_path / "runs" / "reports" / "demo.md"
    text = report.read_text()
    pngs = re.findall(r"\(([^)]+\.png)\)", text)
    assert pngs
    for png in pngs:
        with Image.open(report.parent / png) as image:
            image.verify()

    # The leaderboard ranks the prompts against the fine-tune on the same test set.
    board = (tmp_path / "runs" / "reports" / "leaderboard.md").read_text()
    assert "Ranked by **category accuracy**" in board
    ranking = board.split("| rank |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]  # the first table's rows
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in ranking]
    # The fine-tune leads. Whether the base prompts trail it significantly is the paired test's call on
    # these 48 samples: a row shares rank 1 exactly when its Holm p-value is at least 0.05.
    assert (cells[0][0].split()[0], cells[0][3], cells[0][5]) == ("1", "default", "best")
    assert "tiny-phi3v-tuned" in cells[0][1]
    base = cells[1:]
    assert sorted(c[3] for c in base) == ["choices", "default", "instructed"]
    for c in base:  # a p-value prints as a number or as "< 0.0001"
        assert c[0].startswith("1") == (float(c[6].lstrip("< ")) >= 0.05), c
    # The random base model scores 0 whatever it is asked: its three prompts tie with one another.
    assert len({(c[0], c[4], c[6]) for c in base}) == 1
