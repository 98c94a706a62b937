"""Paired statistics and run pairing of `harness report`, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from test_report_fakes import record, write_run

from harness.core.errors import HarnessError
from harness.core.run import read_run
from harness.core.stats import bootstrap_means
from harness.identity import find_runs
from harness.models import resolve
from reports.compare import compare_runs, make_report

# A: right on even ids; B: right on ids divisible by 3 or 4 -> known discordant counts.
N = 48
A_CORRECT = [i % 2 == 0 for i in range(N)]
B_CORRECT = [i % 3 == 0 or i % 4 == 0 for i in range(N)]
A_APE = [None if i % 5 == 0 else 0.02 * (i % 7) for i in range(N)]
B_APE = [None if i % 6 == 0 else 0.03 * (i % 5) for i in range(N)]


def _runs(tmp_path, **kw):
    a = write_run(
        tmp_path, "a", "base", [record(i, correct=A_CORRECT[i], ape=A_APE[i], sim=40 + i) for i in range(N)]
    )
    b = write_run(tmp_path, "b", "tuned", [record(i, correct=B_CORRECT[i], ape=B_APE[i], sim=45 + i % 9 * 3) for i in range(N)], **kw)  # fmt: skip
    return read_run(a), read_run(b)


def test_mcnemar_and_mean_difference_match_a_hand_computation(tmp_path):
    a, b = _runs(tmp_path)
    m = compare_runs(a, b, n_boot=2000).by_name()["category_exact"]
    a_only = sum(x and not y for x, y in zip(A_CORRECT, B_CORRECT, strict=True))
    b_only = sum(y and not x for x, y in zip(A_CORRECT, B_CORRECT, strict=True))
    assert m.discordant == (a_only, b_only)
    assert m.p_value == pytest.approx(stats.binomtest(b_only, a_only + b_only, 0.5).pvalue)
    assert m.test == "McNemar exact"
    assert m.n == N
    assert m.a == pytest.approx(np.mean(A_CORRECT))
    assert m.diff == pytest.approx(np.mean(B_CORRECT) - np.mean(A_CORRECT))


def test_error_metrics_pair_only_where_both_are_defined_and_use_wilcoxon(tmp_path):
    a, b = _runs(tmp_path)
    m = compare_runs(a, b, n_boot=2000).by_name()["price_ape"]
    both = [i for i in range(N) if A_APE[i] is not None and B_APE[i] is not None]
    va, vb = np.array([A_APE[i] for i in both]), np.array([B_APE[i] for i in both])
    assert m.n == len(both) < N
    assert m.a == pytest.approx(va.mean()) and m.b == pytest.approx(vb.mean())
    assert m.p_value == pytest.approx(stats.wilcoxon(vb - va).pvalue)
    assert m.test == "Wilcoxon signed-rank"


def test_bootstrap_matches_a_loop_with_the_same_seed_and_covers_the_truth():
    rng = np.random.default_rng(7)
    n, true_diff = 400, 0.3
    diff = rng.normal(true_diff, 1.0, n)
    diff[::10] = np.nan  # undefined pairs are left out of each resample's mean
    boot = bootstrap_means(diff, n_boot=3000, seed=11)[:, 0]
    # Straightforward re-implementation: one multinomial draw of the ids per resample.
    loop_rng, defined = np.random.default_rng(11), ~np.isnan(diff)
    expected = []
    for _ in range(3000):
        counts = loop_rng.multinomial(n, np.full(n, 1 / n))[defined]
        expected.append(np.sum(counts * diff[defined]) / counts.sum())
    np.testing.assert_allclose(boot, expected, rtol=1e-10)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert lo < true_diff < hi
    assert lo < np.nanmean(diff) < hi and hi - lo < 0.4


def test_ci_and_verdict_on_a_clear_regression(tmp_path):
    a = write_run(tmp_path, "a", "base", [record(i, correct=True, ape=0.01, sim=90) for i in range(40)])
    b = write_run(tmp_path, "b", "tuned", [record(i, correct=i % 4 == 0, ape=0.5, sim=90) for i in range(40)])
    cmp = compare_runs(read_run(a), read_run(b), n_boot=2000).by_name()
    assert cmp["category_exact"].worse and cmp["category_exact"].ci_high < 0
    assert cmp["price_ape"].worse and cmp["price_ape"].ci_low > 0  # lower is better: worse means up
    assert not cmp["name_similarity"].worse and cmp["name_similarity"].p_value == 1.0


def test_fail_if_worse_exit_codes(tmp_path):
    runs = tmp_path / "runs"
    a = write_run(runs, "a", "base", [record(i, correct=True, ape=0.01, sim=90) for i in range(40)])
    b = write_run(runs, "b", "tuned", [record(i, correct=i % 4 == 0, ape=0.01, sim=90) for i in range(40)])
    kw = dict(n_boot=1000)
    worse = make_report(a, b, out=tmp_path / "w.md", fail_if_worse=["category_exact"], **kw)
    assert worse.exit_code == 1 and worse.worse == {"category_exact": True}
    same = make_report(a, b, out=tmp_path / "s.md", fail_if_worse=["price_ape"], **kw)
    assert same.exit_code == 0 and same.worse == {"price_ape": False}
    better = make_report(b, a, out=tmp_path / "b.md", fail_if_worse=["category_exact"], **kw)
    assert better.exit_code == 0
    with pytest.raises(HarnessError, match="unknown metric 'accuracy'.*category_exact"):
        make_report(a, b, fail_if_worse=["accuracy"], **kw)


def test_different_fingerprints_are_refused(tmp_path):
    runs = tmp_path / "runs"
    a = write_run(runs, "a", "base", [record(i, correct=True, ape=0.1, sim=50) for i in range(10)])
    b = write_run(
        runs, "b", "tuned", [record(i, correct=True, ape=0.1, sim=50) for i in range(10)], fingerprint="other"
    )
    with pytest.raises(HarnessError, match="different data fingerprints"):
        make_report(a, b, out=tmp_path / "r.md")
    assert not (tmp_path / "r.md").exists()


def test_same_fingerprint_different_ids_are_refused(tmp_path):
    runs = tmp_path / "runs"
    a = write_run(runs, "a", "base", [record(i, correct=True, ape=0.1, sim=50) for i in range(10)])
    b = write_run(runs, "b", "tuned", [record(i, correct=True, ape=0.1, sim=50) for i in range(8)])
    with pytest.raises(HarnessError, match="different sample ids: 2 only in A, 0 only in B"):
        make_report(a, b, out=tmp_path / "r.md")


def test_model_names_resolve_to_the_newest_pair_on_the_same_test_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    recs = [record(i, correct=True, ape=0.1, sim=50) for i in range(10)]
    write_run(runs, "base-old", "org/base", recs, created="2026-01-01", path="org/base")
    write_run(runs, "tuned-same", "org/other", recs, created="2026-01-02", path="org/other")
    write_run(
        runs, "other-newer-set", "org/other", recs, fingerprint="x", created="2026-01-03", path="org/other"
    )
    write_run(runs, "tiny", "tiny", recs, created="2026-01-04", path="org/tiny")
    found = {n: find_runs(n, task="burberry", data=None, runs_dir=runs) for n in ("org/base", "org/other")}
    assert [p.name for p in found["org/other"]] == ["other-newer-set", "tuned-same"]  # newest first
    result = make_report(found["org/base"], found["org/other"], out=tmp_path / "r.md", n_boot=500)
    assert (result.run_a.name, result.run_b.name) == ("base-old", "tuned-same")
    with pytest.raises(HarnessError, match="no run of model 'org/large'"):
        find_runs("org/large", task="burberry", data=None, runs_dir=runs)


def test_report_names_resolve_as_run_does_not_literally(tmp_path, monkeypatch):
    """A run made with --model base is found as phi-3-vision, and a hub id is a model, not a path."""
    from typer.testing import CliRunner

    from harness.cli import app

    monkeypatch.chdir(tmp_path)
    recs = [record(i, correct=i % 2 == 0, ape=0.1, sim=50) for i in range(10)]
    phi3 = resolve("phi-3-vision", build=False)
    write_run(tmp_path / "runs", "by-alias", "base", recs, path=phi3.path, revision=phi3.revision)
    write_run(tmp_path / "runs", "other-commit", "base", recs, path=phi3.path, revision="0" * 40)
    write_run(tmp_path / "runs", "hub", "org/model", recs, path="org/model")
    by_real_name = find_runs("phi-3-vision", task="burberry", data=None, runs_dir=tmp_path / "runs")
    assert [p.name for p in by_real_name] == ["by-alias"]
    out = CliRunner().invoke(app, ["report", "phi-3-vision", "org/model", "--out", "r.md"])
    assert out.exit_code == 0, out.output
    assert "by-alias" in (tmp_path / "r.md").read_text()
    (tmp_path / "harness.toml").write_text('[aliases]\nbase = "phi-3.5-vision"\n')
    moved = CliRunner().invoke(app, ["report", "base"])  # base now names another model: no stale run
    assert moved.exit_code == 2 and "no run of model 'base'" in moved.output


def test_incomplete_and_unfinished_runs_are_refused_unless_allowed(tmp_path):
    recs = [record(i, correct=True, ape=0.1, sim=50) for i in range(10)]
    good = write_run(tmp_path, "good", "base", recs)
    bad = write_run(tmp_path, "bad", "tuned", recs, status="incomplete")
    unfinished = write_run(tmp_path, "unfinished", "tuned2", recs, status=None)
    for run, why in ((bad, "incomplete"), (unfinished, "unfinished")):
        with pytest.raises(HarnessError, match=f"{why}.*--allow-incomplete"):
            make_report(good, run, out=tmp_path / "r.md")
        result = make_report(good, run, out=tmp_path / "r.md", allow_incomplete=True, n_boot=200)
        assert f"is {why}" in result.markdown.read_text()


def test_only_metrics_both_runs_scored_are_compared(tmp_path):
    """A metric missing from one run is left out and listed, never compared against a filled-in 0."""
    a_recs = [record(i, correct=True, ape=0.1, sim=50) for i in range(20)]
    b_recs = [record(i, correct=True, ape=0.1, sim=50) for i in range(20)]
    for r in b_recs:
        r.scores.pop("price_within_10")
    a = write_run(tmp_path, "a", "base", a_recs)
    b = write_run(tmp_path, "b", "tuned", b_recs)
    result = make_report(a, b, out=tmp_path / "r.md", n_boot=200)
    assert "price_within_10" not in result.comparison.by_name()
    assert result.comparison.left_out == {"price_within_10": "only in A"}
    assert (
        "Not compared (scored by one run only): price within 10 % (only in A)" in result.markdown.read_text()
    )


def test_single_run_report_cis_equal_metrics_json(tmp_path):
    """One bootstrap: the report's CIs of a run are exactly its metrics.json's."""
    from harness.core.schema import METRICS_FILE, RunMetrics
    from reports.paired import summarize_run
    from tasks import get_task

    recs = [
        record(i, correct=i % 3 == 0, ape=None if i % 4 == 0 else 0.05 * (i % 6), sim=30 + i)
        for i in range(40)
    ]
    values, _ = get_task("burberry").aggregate(recs)
    run = write_run(tmp_path, "run", "base", recs)
    metrics = RunMetrics(task="burberry", model="base", n=40, metrics=values)
    (run / METRICS_FILE).write_text(metrics.model_dump_json())
    summary = {s.metric: s for s in summarize_run(read_run(run))}
    for name, value in values.items():
        assert (summary[name].value, summary[name].ci_low, summary[name].ci_high, summary[name].n) == (
            value.value,
            value.ci_low,
            value.ci_high,
            value.n,
        ), name


def test_torn_last_line_is_dropped_but_corruption_elsewhere_is_an_error(tmp_path):
    recs = [record(i, correct=True, ape=0.1, sim=50) for i in range(5)]
    run = read_run(write_run(tmp_path, "torn", "base", recs, torn=True))
    assert run.torn_last_line and [r.id for r in run.records] == [r.id for r in recs]
    bad = write_run(tmp_path, "bad", "base", recs)
    lines = (bad / "predictions.jsonl").read_text().splitlines()
    lines[2] = '{"id": "s002", "image": 3'
    (bad / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(HarnessError, match=r"predictions.jsonl, line 3: not a valid record"):
        read_run(bad)
