"""Where catalog rows and their images come from: the hub, a local table, and an on-disk image cache.

Every row whose image cannot be had is reported with a reason, never dropped silently and never
allowed to crash the run (defect 4 of the seed pipeline).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from PIL import Image

from harness.core import hub
from harness.core.errors import HarnessError
from harness.core.store import write_atomic

if TYPE_CHECKING:  # loaded when a table is read or an image downloaded, not for a reused split
    import pandas as pd
    import requests

# Download knobs (module-level so tests can shrink them).
WORKERS = 8
TIMEOUT = (5.0, 30.0)  # connect, read seconds
RETRIES = 3
BACKOFF = 0.5  # seconds; doubles per retry
FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


def read_table(path: Path) -> pd.DataFrame:
    """A CSV / Parquet / JSONL catalog table (its columns are the task's to check)."""
    import pandas as pd

    suffix = path.suffix.lower()
    readers = {
        ".csv": pd.read_csv,
        ".parquet": pd.read_parquet,
        ".jsonl": lambda p: pd.read_json(p, lines=True),
        ".json": lambda p: pd.read_json(p, lines=True),
    }
    if not path.is_file():
        raise HarnessError(f"{path}: no such file (expected hub, synthetic or a CSV/Parquet/JSONL path)")
    if suffix not in readers:
        raise HarnessError(f"{path}: unsupported file type {suffix!r} (use .csv, .parquet or .jsonl)")
    try:
        df = readers[suffix](path)
    except Exception as err:  # noqa: BLE001 - any parser failure is the user's file, reported in one line
        raise HarnessError(f"{path}: cannot be read as {suffix[1:]}: {type(err).__name__}: {err}") from err
    return df


def missing_columns(df: pd.DataFrame, required: list[str], any_of: list[str]) -> list[str]:
    """The required columns ``df`` lacks, plus "a or b" when it has none of ``any_of``."""
    missing = [c for c in dict.fromkeys(required) if c not in df.columns]
    if any_of and not any(c in df.columns for c in any_of):
        missing.append(" or ".join(any_of))
    return missing


def hub_dataset_commit(repo: str, revision: str | None) -> str:
    """A hub dataset's commit for ``revision`` (default main): a benchmark is keyed on data that cannot move."""
    return hub.commit(
        repo, revision, repo_type="dataset", hint="; without network use `--data synthetic` or a local table"
    )


def load_hub_table(repo: str, revision: str) -> pd.DataFrame:
    import datasets  # lazy: a second of import time the synthetic and local paths never need

    try:
        ds = datasets.load_dataset(repo, revision=revision, split="train")
    except Exception as err:  # noqa: BLE001 - offline, unknown revision, auth...: one clear line
        raise HarnessError(
            f"cannot load the dataset {repo} (revision {revision}) from the Hugging Face hub or its cache "
            f"({type(err).__name__}); without network use `--data synthetic` or a local CSV/Parquet/JSONL path"
        ) from err
    return ds.to_pandas()


def check_image(path: Path, data: bytes | None = None) -> str | None:
    """The one image check: None if PIL fully decodes the file (or its downloaded ``data``), else
    the reason why not.

    A full decode, not ``verify()``: a truncated file passes verify() and would crash training
    mid-epoch. Done once per file: the data manifest and the download cache remember checked images.
    """
    if data is None and not path.is_file():
        return f"image file not found: {path}"
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im.load()
    except Exception as err:  # noqa: BLE001 - any decoder error means "not a usable image"
        return f"not a readable image ({type(err).__name__}): {path.name}"
    return None


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def make_session() -> requests.Session:
    """A session that retries connection errors, read timeouts and 429/5xx with exponential backoff."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        status=RETRIES,
        backoff_factor=BACKOFF,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=WORKERS)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def cached_image(url: str, images_dir: Path) -> Path | None:
    key = hashlib.sha256(url.encode()).hexdigest()
    return next(iter(sorted(images_dir.glob(f"{key}.*"))), None)


def _download(session: requests.Session, url: str, images_dir: Path) -> Path:
    key = hashlib.sha256(url.encode()).hexdigest()
    resp = session.get(url, timeout=TIMEOUT)
    if resp.status_code != 200:
        raise ValueError(f"HTTP {resp.status_code}")
    if check_image(images_dir / key, resp.content):
        raise ValueError(f"downloaded bytes are not a readable image ({len(resp.content)} bytes)")
    with Image.open(io.BytesIO(resp.content)) as im:
        ext = FORMAT_EXT.get(im.format or "", "img")
    final = images_dir / f"{key}.{ext}"
    write_atomic(final, resp.content)  # a cache entry is always a whole, checked image
    return final


def fetch_images(urls: Iterable[str], images_dir: Path) -> dict[str, Path | str]:
    """Each URL -> its cached image path, or the reason it could not be had. Cached URLs are not fetched."""
    images_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path | str] = {}
    todo = []
    for url in dict.fromkeys(urls):
        if urlparse(url).scheme not in ("http", "https"):
            result[url] = f"not an http(s) URL: {url[:80]!r}"
        elif (hit := cached_image(url, images_dir)) is not None:
            result[url] = hit
        else:
            todo.append(url)
    if not todo:
        return result
    import requests
    from tqdm.auto import tqdm

    session = make_session()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {pool.submit(_download, session, url, images_dir): url for url in todo}
        for future in tqdm(as_completed(futures), total=len(todo), desc="images", unit="img", disable=None):
            url = futures[future]
            try:
                result[url] = future.result()
            except requests.RequestException as err:
                # After retries requests wraps the cause (e.g. ReadTimeoutError) in a ConnectionError: name the cause.
                cause = getattr(err.args[0], "reason", None) if err.args else None
                result[url] = f"download failed ({type(cause or err).__name__}): {url[:80]}"
            except ValueError as err:
                result[url] = f"download failed ({err}): {url[:80]}"
    return result


def write_manifest(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
