"""The command line's fast paths and its one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from harness.cli import app


def test_help_tasks_and_models_do_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from harness.cli import app\n"
        "for args in (['--help'], ['tasks'], ['models']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "    print(result.output)\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False False")
    assert "burberry" in out and "phi-3-vision" in out and "tiny-phi3v" in out


def test_unknown_names_get_one_line_listing_the_valid_ones():
    runner = CliRunner()
    task = runner.invoke(app, ["run", "--task", "nope", "--model", "tiny", "--data", "synthetic"])
    assert task.exit_code == 2
    (line,) = task.output.strip().splitlines()
    assert line.startswith("error: unknown task 'nope'; valid tasks: burberry, dbq:<Brand>.<Country>")
    model = runner.invoke(app, ["run", "--model", "no-such-model", "--data", "synthetic"])
    assert model.exit_code == 2 and "valid:" in model.output and "tiny-phi3v" in model.output
    assert len(model.output.strip().splitlines()) == 1
    backend = runner.invoke(app, ["train", "--backend", "deepspeed"])
    assert backend.exit_code == 2
    assert backend.output == "error: backend (--backend): Input should be 'trl', got 'deepspeed'\n"
    report = runner.invoke(app, ["train", "--model", "tiny", "--report-to", "tensorboard"])
    assert (
        report.exit_code == 2
        and "report_to (--report-to): Input should be 'none' or 'wandb'" in report.output
    )


def test_bad_options_from_python_fail_in_one_line_naming_the_option():
    import harness
    from harness.core.errors import HarnessError

    with pytest.raises(
        HarnessError, match=r"^batch_size \(--batch-size\): Input should be a valid integer.*got 'x'$"
    ):
        harness.evaluate("burberry", "tiny", batch_size="x")
    with pytest.raises(
        HarnessError, match=r"^limit \(--limit\): Input should be greater than or equal to 1, got 0$"
    ):
        harness.evaluate("burberry", "tiny", limit=0)
    with pytest.raises(HarnessError, match=r"^max_batch \(--max-batch\): Extra inputs are not permitted"):
        harness.evaluate("burberry", "tiny", max_batch=4)
    with pytest.raises(HarnessError, match=r"^give --epochs or --max-steps, not both$"):
        harness.train("tiny", epochs=1, max_steps=2)
