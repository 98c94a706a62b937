"""Model identity that cannot drift, and the runs made with a model.

:func:`pin` turns what a name resolved to (harness.models) into an identity for the run key: a hub
id's revision resolved to its commit sha, a local model or adapter directory identified by the
hash of its contents. :func:`find_runs` finds the runs of a model by what they loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from backends.families import get_family
from harness.core import hub
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir
from harness.core.run import run_dirs
from harness.core.schema import CONFIG_FILE, TRAIN_MANIFEST_FILE, ModelInfo
from harness.core.store import read_config
from harness.models import resolve


def pin(info: ModelInfo) -> ModelInfo:
    """``info`` with an identity that cannot drift: hub revision -> commit sha, local dirs -> content hash."""
    update: dict = {}
    if get_family(info.family).served:  # a served model is what the server says it serves now
        from backends.api import server_identity

        return info.model_copy(update={"revision": server_identity(info)})
    if Path(info.path).is_dir():
        update["content"] = content_hash(Path(info.path))
    else:
        update["revision"] = hub_commit(info.path, info.revision)
    if info.adapter:
        update["adapter_content"] = content_hash(Path(info.adapter))
    return info.model_copy(update=update)


def hub_commit(repo: str, revision: str | None) -> str:
    """A model repository's commit for ``revision`` (harness.core.hub.commit), offline from the cache."""
    return hub.commit(repo, revision, hint="; pass --revision <40-character commit sha>")


# Not part of what a model computes: training provenance, checkpoints, logs.
_NOT_MODEL = {TRAIN_MANIFEST_FILE, "harness-export.json", "wandb", "runs"}


def _model_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if any(p.startswith(".") or p.startswith("checkpoint-") or p in _NOT_MODEL for p in rel):
            continue
        if path.is_file():
            files.append(path)
    return files


def content_hash(root: Path) -> str:
    """sha256 over the relative names and bytes of a model or adapter directory's files.

    Cached per directory by (name, size, mtime) of each file, so an unchanged multi-GB model is
    hashed once; any change of a file (a re-training into the same directory, a `--resume`) or of
    the file list gives a new hash.
    """
    root = Path(root).resolve()
    files = _model_files(root)
    signature = [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache = cache_dir() / "identity" / (hashlib.sha256(str(root).encode()).hexdigest()[:24] + ".json")
    try:
        saved = json.loads(cache.read_text())
        if saved["signature"] == signature:
            return saved["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    value = digest.hexdigest()
    from harness.core.store import write_atomic

    cache.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache, json.dumps({"path": str(root), "signature": signature, "sha256": value}))
    return value


def find_runs(name: str, *, task: str, data: str | None, runs_dir: Path) -> list[Path]:
    """Run directories under ``runs_dir`` of the model ``name`` resolves to, for ``task``, newest first.

    ``name`` is resolved exactly as ``harness run --model`` resolves it (aliases, ``-tuned``, hub ids,
    paths), and runs are matched on what they loaded, not on the name typed then: a run made with
    ``--model base`` is found as ``phi-3-vision``. A revision pinned in harness.toml must match too.
    """
    info = resolve(name, build=False)
    found = []
    for run_dir in run_dirs(runs_dir):
        config_file = run_dir / CONFIG_FILE
        try:
            config = read_config(config_file)
        except HarnessError:
            continue
        model = config.model
        same_model = model.path == info.path and (model.adapter or None) == (info.adapter or None)
        same_model = same_model and model.endpoint == info.endpoint
        pinned = (
            info.revision is None or not hub.COMMIT.match(info.revision) or model.revision == info.revision
        )
        if same_model and pinned and config.task == task and (data is None or config.data.source == data):
            found.append((config.created, config_file.stat().st_mtime, config_file.parent))
    if not found:
        where = f"task {task!r}" + (f", data {data!r}" if data else "")
        raise HarnessError(
            f"no run of model {name!r} ({info.path}{' + ' + info.adapter if info.adapter else ''}; {where}) "
            f"under {runs_dir}: run `harness run --model {name}` first"
        )
    return [path for *_, path in sorted(found, reverse=True)]
