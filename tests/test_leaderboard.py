"""`harness leaderboard`: runs grouped by test set, ranked with honest ties, every metric with its CI,
costs, refusals, and a ranking that never depends on the order runs are given in."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_report_fakes import METRIC_SPECS, image, record, write_run
from typer.testing import CliRunner

import harness
from harness.cli import app
from harness.core.errors import HarnessError
from harness.core.run import read_run
from reports.leaderboard import Leaderboard, build

N = 60


def runs_with_accuracies(root, accuracies: dict[str, float], fingerprint: str = "fp-test-1", **kw):
    """One fake run per model: the first ``accuracy * N`` samples right (category, name), the rest wrong."""
    img = image(root / "img" / "x.png")
    paths = {}
    for model, accuracy in accuracies.items():
        right = round(accuracy * N)
        records = [
            record(i, correct=i < right, ape=0.05 if i < right else 0.5, sim=50, img=img) for i in range(N)
        ]
        paths[model] = write_run(
            root / "runs", f"{model}-{fingerprint}", model, records, fingerprint=fingerprint, **kw
        )
    return paths


@pytest.fixture
def three(tmp_path):
    return runs_with_accuracies(tmp_path, {"alpha": 0.9, "beta": 0.85, "gamma": 0.2})


def test_ties_with_the_best_share_rank_one_and_the_worse_follow(three):
    board = build([read_run(p) for p in three.values()], n_boot=500)
    (b,) = board.boards
    assert b.metric.name == "category_exact" and b.metric.primary  # the task's primary metric
    by_name = {e.name: e for e in b.entries}
    assert [e.name for e in b.entries] == ["alpha", "beta", "gamma"]
    assert (by_name["alpha"].rank, by_name["beta"].rank, by_name["gamma"].rank) == (1, 1, 3)
    assert by_name["beta"].tied_with_best and not by_name["gamma"].tied_with_best
    beta, gamma = by_name["beta"], by_name["gamma"]
    assert beta.diff == pytest.approx(-0.05) and beta.diff_ci[0] < 0 <= beta.diff_ci[1]
    assert gamma.p_value < 1e-6 and gamma.p_holm >= gamma.p_value and beta.p_holm >= beta.p_value
    assert by_name["alpha"].p_value is None and by_name["alpha"].diff is None  # the best itself
    assert (
        by_name["alpha"].value == pytest.approx(0.9) and by_name["alpha"].ci[0] < 0.9 < by_name["alpha"].ci[1]
    )


def test_a_lower_is_better_metric_ranks_the_smallest_error_first(three):
    board = build([read_run(p) for p in three.values()], metric="price_ape", n_boot=300)
    (b,) = board.boards
    assert not b.metric.higher_is_better and b.entries[0].name == "alpha" and b.entries[-1].name == "gamma"
    with pytest.raises(HarnessError, match="unknown metric 'nope'; valid: name_similarity"):
        build([read_run(p) for p in three.values()], metric="nope")


def test_runs_of_different_test_sets_are_never_ranked_together(tmp_path):
    a = runs_with_accuracies(tmp_path, {"alpha": 0.9, "beta": 0.2}, fingerprint="fp-one")
    b = runs_with_accuracies(tmp_path, {"alpha": 0.1, "delta": 0.5}, fingerprint="fp-two")
    board = build([read_run(p) for p in (*a.values(), *b.values())], n_boot=300)
    assert len(board.boards) == 2
    assert {tuple(e.name for e in x.entries) for x in board.boards} == {("alpha", "beta"), ("delta", "alpha")}
    md = board.to_markdown(tmp_path / "lb.md").read_text()
    assert "2 test sets: runs of different test sets are never ranked together" in md


@settings(max_examples=12, deadline=None)
@given(order=st.permutations(range(5)))
def test_ranks_do_not_depend_on_the_order_runs_are_given_in(tmp_path_factory, order):
    root = tmp_path_factory.mktemp("order")
    paths = list(runs_with_accuracies(root, {"a": 0.8, "b": 0.8, "c": 0.75, "d": 0.3, "e": 0.3}).values())
    runs = [read_run(paths[i]) for i in order]
    got = [
        (e.name, e.rank, e.tied_with_best, e.value, e.p_holm)
        for e in build(runs, n_boot=200).boards[0].entries
    ]
    reference = [(e.name, e.rank, e.tied_with_best, e.value, e.p_holm) for e in build([read_run(p) for p in paths], n_boot=200).boards[0].entries]  # fmt: skip
    assert got == reference
    assert [r for _, r, *_ in got] == [1, 1, 1, 4, 4]  # a, b, c tied; d and e equal, behind the tied


def test_unfinished_runs_are_refused_when_named_and_left_out_when_found(tmp_path):
    paths = runs_with_accuracies(tmp_path, {"alpha": 0.9, "beta": 0.5})
    unfinished = runs_with_accuracies(tmp_path, {"gamma": 0.95}, status=None)["gamma"]
    with pytest.raises(HarnessError, match="unfinished .*--allow-incomplete"):
        harness.leaderboard([*paths.values(), unfinished], task="burberry")
    found = harness.leaderboard(task="burberry", output_dir=tmp_path / "runs")
    assert [e.name for e in found.boards[0].entries] == ["alpha", "beta"]
    assert len(found.skipped) == 1 and "unfinished" in found.skipped[0]
    allowed = harness.leaderboard(task="burberry", output_dir=tmp_path / "runs", allow_incomplete=True)
    assert allowed.boards[0].entries[0].name == "gamma"


def test_every_metric_with_its_ci_costs_and_escaped_markdown(tmp_path):
    paths = runs_with_accuracies(tmp_path, {"alpha": 0.9, "evil | <b>x</b>": 0.4})
    board = harness.leaderboard(list(paths.values()))
    frame = board.to_frame()
    for spec in METRIC_SPECS:
        assert {spec.name, f"{spec.name}_ci_low", f"{spec.name}_ci_high"} <= set(frame.columns)
    assert {"rank", "tied_with_best", "model", "prompt", "p_holm", "errors", "truncated", "samples_per_s",
            "mean_answer_tokens", "peak_memory_gb", "mean_latency_s", "revision", "adapter"} <= set(frame.columns)  # fmt: skip
    assert list(frame["rank"]) == [1, 2]
    md = board.to_markdown(tmp_path / "out" / "lb.md").read_text()
    assert "evil &#124; &#60;b&#62;x&#60;/b&#62;" in md and "<b>" not in md
    assert "share rank 1" in md and "Holm" in md and "![forest plot](lb-assets/" in md
    assert (tmp_path / "out" / "lb-assets").is_dir() and any(
        (tmp_path / "out" / "lb-assets").glob("*forest.png")
    )
    rows = json.loads(board.to_json(tmp_path / "lb.json").read_text())
    assert rows[0]["model"] == "alpha" and rows[0]["category_exact"] == pytest.approx(0.9)
    assert board.to_csv(tmp_path / "lb.csv").read_text().splitlines()[0].startswith("test_set,rank,")


def test_the_cli_writes_markdown_csv_and_json_and_says_the_ranks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs_with_accuracies(tmp_path, {"alpha": 0.9, "beta": 0.1})
    args = ["leaderboard", "--output-dir", "runs", "--csv", "lb.csv", "--json", "lb.json", "--out", "lb.md"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "   1  alpha [default] 0.9\n" in result.output and "   2  beta [default] 0.1\n" in result.output
    assert (
        (tmp_path / "lb.md").is_file()
        and (tmp_path / "lb.csv").is_file()
        and (tmp_path / "lb.json").is_file()
    )
    wandb = CliRunner().invoke(app, ["leaderboard", "--output-dir", "runs", "--out", "w.md", "--wandb"])
    assert wandb.exit_code == 0 and "W&B run:" in wandb.output, wandb.output
    none = CliRunner().invoke(app, ["leaderboard", "--output-dir", "nowhere"])
    assert none.exit_code == 2 and "no finished run of task 'burberry' under nowhere" in none.output


def test_a_run_without_the_ranking_metric_is_listed_not_ranked(tmp_path):
    from test_report_fakes import METRIC_SPECS

    paths = runs_with_accuracies(tmp_path, {"alpha": 0.9, "beta": 0.5})
    older = [s for s in METRIC_SPECS if s.name != "category_mapped"]  # written before the metric existed
    paths |= runs_with_accuracies(tmp_path, {"gamma": 0.95}, specs=older)
    board = build([read_run(p) for p in paths.values()], metric="category_mapped", n_boot=200).boards[0]
    by_name = {e.name: e for e in board.entries}
    assert by_name["alpha"].rank == 1 and by_name["beta"].rank == 2
    gamma = by_name["gamma"]
    assert gamma.rank is None and not gamma.tied_with_best and board.entries[-1] is gamma
    md = Leaderboard([board]).to_markdown(tmp_path / "lb.md").read_text()
    assert "Not ranked (no category accuracy (nearest label) scored): gamma" in md and "– (no value)" in md


def test_runs_naming_different_primary_metrics_need_a_metric(tmp_path):
    from test_report_fakes import METRIC_SPECS

    other = [s.model_copy(update={"primary": s.name == "name_exact"}) for s in METRIC_SPECS]
    paths = runs_with_accuracies(tmp_path, {"alpha": 0.9}) | runs_with_accuracies(
        tmp_path, {"beta": 0.5}, specs=other
    )
    with pytest.raises(HarnessError, match="name different primary metrics .*choose one with --metric"):
        build([read_run(p) for p in paths.values()])
    assert (
        build([read_run(p) for p in paths.values()], metric="name_exact").boards[0].metric.name
        == "name_exact"
    )


def test_speed_counts_only_what_the_last_session_generated(tmp_path):
    from harness.core.schema import METRICS_FILE, RunMetrics

    (path,) = runs_with_accuracies(tmp_path, {"alpha": 0.9}).values()
    metrics = RunMetrics.model_validate_json((path / METRICS_FILE).read_text())
    (path / METRICS_FILE).write_text(
        metrics.model_copy(update={"wall_s": 10.0, "timed": 6}).model_dump_json()
    )
    row = build([read_run(path)], n_boot=100).to_frame().iloc[0]
    assert row["samples_per_s"] == pytest.approx(0.6)  # a run resumed for its last 6 of 60 samples
