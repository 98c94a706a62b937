"""Hub revisions pinned to commits: a run or a dataset must never be keyed on a moving branch name."""

from __future__ import annotations

import re
from pathlib import Path

from harness.core.errors import HarnessError

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def commit(repo: str, revision: str | None, *, repo_type: str = "model", hint: str = "") -> str:
    """The commit sha ``revision`` (a branch, tag or sha; default main) of a hub repository points at now.

    Asks the hub; offline, reads the local Hugging Face cache (what a load would use). Neither ->
    a one-line error ending with ``hint``.
    """
    revision = revision or "main"
    if COMMIT.match(revision):
        return revision
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi().repo_info(repo, revision=revision, repo_type=repo_type, timeout=10)
        if info.sha:
            return info.sha
    except Exception:  # noqa: BLE001 - offline, no access...: fall back to the cache
        pass
    try:
        return Path(
            snapshot_download(repo, repo_type=repo_type, revision=revision, local_files_only=True)
        ).name
    except Exception as err:  # noqa: BLE001 - not cached either: one clear line
        raise HarnessError(
            f"{repo_type} {repo!r}: cannot resolve revision {revision!r} to a commit (the hub is unreachable "
            f"and it is not in the Hugging Face cache){hint}"
        ) from err
