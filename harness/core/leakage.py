"""Leakage: a model is never judged on a sample it learned from, nor on another colour of the same
product (its group). The one check behind the split, `harness train` and evaluating an adapter."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.schema import DataInfo, Sample, TrainManifest


def shared(seen: Iterable[Sample], judged: Iterable[Sample]) -> tuple[list[str], list[str]]:
    """The ids and the (non-empty) groups of ``judged`` that are also in ``seen``, sorted."""
    seen = list(seen)
    return _shared({s.id for s in seen}, {s.group for s in seen if s.group}, judged)


def _shared(ids: set[str], groups: set[str], judged: Iterable[Sample]) -> tuple[list[str], list[str]]:
    judged = list(judged)
    return sorted({s.id for s in judged} & ids), sorted({s.group for s in judged if s.group} & groups)


def check_disjoint(seen: Iterable[Sample], judged: Iterable[Sample], what: str) -> None:
    """Raise a one-line "data leak" error when ``judged`` shares an id or a group with ``seen``."""
    ids, groups = shared(seen, judged)
    if ids or groups:
        raise HarnessError(
            f"data leak: {len(ids)} ids and {len(groups)} product groups of {what} (e.g. "
            f"{(ids or groups)[0]!r})"
        )


def check_adapter_never_saw(
    manifest: TrainManifest, where: Path, task: str, samples: list[Sample], info: DataInfo
) -> None:
    """Refuse to evaluate an adapter on samples (or product groups) it was trained or validated on.

    Checked against what its harness-train.json (``where``) records, when it was trained on the same
    task and data source: another catalog's ids and titles say nothing about this one's.
    """
    if manifest.task != task or manifest.data.source != info.source:
        return
    if not manifest.train_ids:
        raise HarnessError(
            f"{where}: records no training ids (made by an older harness), so it cannot be checked for "
            "train/test leakage; re-train the adapter"
        )
    ids, groups = _shared(
        set(manifest.train_ids) | set(manifest.validation_ids),
        set(manifest.train_groups) | set(manifest.validation_groups),
        samples,
    )
    if ids or groups:
        raise HarnessError(
            f"data leak: adapter {where.parent} was trained or validated on {len(ids)} of the evaluated "
            f"{info.split} samples and {len(groups)} of their product groups (e.g. {(ids or groups)[0]!r}); "
            "evaluate it on a split it never saw"
        )
