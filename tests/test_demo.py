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
    rows = [line for line in board.splitlines() if line.startswith("| 1") or line.startswith("| 2")]
    assert rows and "tiny-phi3v-tuned" in rows[0]  # the fine-tune ranks first
    assert "choices" in board and "instructed" in board
