"""The run directory: config.json (atomic), predictions.jsonl (append + fsync), metrics.json (atomic).

One directory per run identity: everything that decides the outputs (task prompt, model content,
data, limit, generation settings, device kind, dtype) -- not batch size, which does not change
outputs -- so re-running the same command resumes or re-uses the same run, and a changed model
gets a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from harness.core.errors import HarnessError
from harness.core.schema import (
    CONFIG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    Record,
    RunConfig,
    RunMetrics,
    TrainManifest,
)

M = TypeVar("M", bound=BaseModel)


def run_identity(config: RunConfig) -> dict:
    """Everything that decides a run's outputs, and nothing else.

    The typed name is not in it ("base" and "phi-3-vision" are the same run); a local model or
    adapter is identified by its content hash, not its path (a moved copy is the same model, a
    re-trained one in the same place is not); a hub model by its resolved commit sha.
    """
    model = config.model.model_dump(exclude={"name"})
    if model["content"]:
        model.pop("path")
    if model["adapter_content"]:
        model.pop("adapter")
    return {
        "task": config.task,
        "prompt": config.prompt,
        "model": model,
        "data": config.data.model_dump(
            include={"source", "split", "fingerprint", "split_seed", "revision", "budget_targets"}
        ),
        "limit": config.limit,
        "generation": config.generation.model_dump(exclude={"resolved_max_new_tokens"}),
        "device": config.device.split(":")[0],
        "dtype": config.dtype,
    }


def run_key(config: RunConfig) -> str:
    """Hash of :func:`run_identity`: names the run directory."""
    return hashlib.sha256(json.dumps(run_identity(config), sort_keys=True).encode()).hexdigest()[:12]


def run_name(config: RunConfig) -> str:
    model = Path(config.model.path).name + (
        f"+{Path(config.model.adapter).name}" if config.model.adapter else ""
    )
    data = (
        Path(config.data.source).stem
        if config.data.source not in {"hub", "synthetic"}
        else config.data.source
    )
    parts = [config.task, model, f"{data}-{config.data.split}", f"n{config.limit or 'all'}", config.key]
    return "__".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", p) for p in parts)


def write_atomic(path: Path, data: str | bytes) -> None:
    """The one atomic write: temp file in the same directory + fsync + os.replace, so readers never
    see half a file (run files, manifests, reports, plots, thumbnails)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def latest(records: list[Record]) -> dict[str, Record]:
    """Each sample id's record: the last line written for it (a retry supersedes an error)."""
    by_id: dict[str, Record] = {}
    for record in records:
        by_id.pop(record.id, None)  # re-inserted last: dict order follows the latest line
        by_id[record.id] = record
    return by_id


def read_records(path: Path, repair: bool = False) -> list[Record]:
    """Records of a predictions.jsonl. An unterminated last line (the writer was killed mid-write) is
    dropped -- and cut off the file when ``repair`` -- while a bad complete line is an error naming it."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    records = []
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(Record.model_validate_json(line))
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            raise HarnessError(f"{path}, line {number}: not a valid record: {err}".splitlines()[0]) from err
    if repair and len(complete) < len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
            os.fsync(f.fileno())
    return records


def rank_files(directory: Path) -> list[Path]:
    """predictions.rank<k>.jsonl of a data-parallel run, by rank."""
    found = Path(directory).glob("predictions.rank*.jsonl")
    return sorted(found, key=lambda p: int(p.name.removeprefix("predictions.rank").removesuffix(".jsonl")))


def read_all_records(directory: Path, repair: bool = False) -> list[Record]:
    """predictions.jsonl, then the rank files of a data-parallel run in progress, in that order: the
    rank files are newer (a run consolidates them into predictions.jsonl when it starts and ends)."""
    directory = Path(directory)
    records = read_records(directory / PREDICTIONS_FILE, repair=repair)
    for path in rank_files(directory):
        records += read_records(path, repair=repair)
    return records


class RunStore:
    """The files of one run directory, opened for writing by the runner.

    A data-parallel run (``rank`` of ``world`` processes) appends to ``predictions.rank<k>.jsonl``,
    one file per process so that no two processes append to one file; rank 0 consolidates them into
    predictions.jsonl.
    """

    def __init__(self, directory: Path, rank: int = 0, world: int = 1):
        self.dir = Path(directory)
        self.rank, self.world = rank, world

    @classmethod
    def open(
        cls, output_dir: Path, config: RunConfig, fresh: bool = False, rank: int = 0, world: int = 1
    ) -> RunStore:
        """The run directory for ``config`` (its key filled in); ``fresh`` throws away what is there."""
        if not config.key:
            config.key = run_key(config)
        store = cls(Path(output_dir) / run_name(config), rank, world)
        if fresh and rank == 0 and store.dir.exists():
            shutil.rmtree(store.dir)
        return store  # the directory appears with config.json: a model that fails to load leaves none

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def predictions_path(self) -> Path:
        return self.dir / PREDICTIONS_FILE

    @property
    def append_path(self) -> Path:
        """Where this process appends: predictions.jsonl, or its own rank file in a data-parallel run."""
        return self.predictions_path if self.world == 1 else self.dir / f"predictions.rank{self.rank}.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.dir / METRICS_FILE

    def write_config(self, config: RunConfig) -> None:
        """Written when the run starts; a resumed run keeps the first one (it started the run)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            write_atomic(self.config_path, config.model_dump_json(indent=2) + "\n")

    def read_config(self) -> RunConfig:
        return read_config(self.config_path)

    def finished(self) -> RunMetrics | None:
        """The metrics of a complete run; None while unfinished or incomplete (a re-run retries errors)."""
        if not self.metrics_path.exists():
            return None
        metrics = read_metrics(self.metrics_path)
        return metrics if metrics.status == "complete" else None

    def records(self) -> list[Record]:
        """Records written so far (every process's), torn last lines cut away so appends start clean."""
        return read_all_records(self.dir, repair=True)

    def consolidate(self, order: list[str] | None = None) -> list[Record]:
        """Rank files folded into predictions.jsonl (each sample's latest record, in ``order`` when
        given), written atomically before the rank files go: a kill in between loses nothing."""
        records = list(latest(self.records()).values())
        if order is not None:
            position = {sid: i for i, sid in enumerate(order)}
            records.sort(key=lambda r: position.get(r.id, len(position)))
        leftovers = rank_files(self.dir)
        if leftovers or order is not None:
            self.replace_records(records)
            for path in leftovers:
                path.unlink()
        return records

    def append(self, records: list[Record]) -> None:
        """One batch: appended, flushed and fsynced, so a kill loses at most the batch in flight."""
        if not records:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.append_path, "a") as f:
            f.write("".join(r.model_dump_json() + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())

    def finish(self, metrics: RunMetrics) -> None:
        write_atomic(self.metrics_path, metrics.model_dump_json(indent=2) + "\n")

    def replace_records(self, records: list[Record]) -> None:
        """Rewrite predictions.jsonl at once (re-scoring a finished run): readers see old or new, never half."""
        write_atomic(self.predictions_path, "".join(r.model_dump_json() + "\n" for r in records))


def read_metrics(path: Path) -> RunMetrics:
    return _read(RunMetrics, path)


def read_config(path: Path) -> RunConfig:
    return _read(RunConfig, path)


def read_manifest(path: Path) -> TrainManifest:
    return _read(TrainManifest, path)


def _read(model: type[M], path: Path) -> M:
    """One of the run store's JSON files, validated; a one-line error naming the file otherwise."""
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise HarnessError(f"{path}: not a valid {path.name}: {err}".splitlines()[0]) from err
