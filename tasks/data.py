"""A catalog's data: the table (hub at a pinned commit, a local file, or the synthetic catalog), the
rows the task keeps, the grouped split with the task's fixed seed, images fully decoded once.

Every row that does not become a sample is listed with its reason (naming the row and the field)
and counted; the resolved split is saved as a manifest and reused while its table and images are
unchanged, so a finished re-run costs milliseconds.

Locating, reading, checking and splitting rows are one job (rows in, samples out); splitting the
module would pass the same half-dozen values between modules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.errors import HarnessError
from harness.core.paths import cache_dir as default_cache_dir
from harness.core.schema import DataInfo, Excluded, Sample, Truth
from tasks import sources, synthetic
from tasks.base import TaskData
from tasks.config import TaskConfig
from tasks.kinds import get_kind
from tasks.text import normalise

if TYPE_CHECKING:  # pandas loads only when a table is read: a reused split needs none
    import pandas as pd

SPLITS = ("train", "validation", "test")
SYNTHETIC_SEED = 0  # `--data synthetic` is one fixed catalog
BUDGET_TARGETS = 5  # longest targets kept to size the generation budget (max_new_tokens "auto")


def split_of(group: str, split_seed: int = 0) -> str:
    """test ~20 %, validation ~10 %, train the rest, by a stable hash (same on every machine)."""
    bucket = int.from_bytes(hashlib.sha256(f"{split_seed}:{group}".encode()).digest()[:8], "big") % 100
    return "test" if bucket < 20 else "validation" if bucket < 30 else "train"


def _identity(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CatalogData:
    """Loads a catalog task's splits; ``render`` turns a truth into its target (for the budget)."""

    def __init__(
        self,
        config: TaskConfig,
        *,
        base_dir: Path | None,
        synthetic_size: int,
        render: Callable[[Truth], str],
    ):
        self.config = config
        self.name = config.name
        self.fields = list(config.fields)
        self.base_dir = base_dir
        self.synthetic_size = synthetic_size
        self._render = render

    @property
    def split_seed(self) -> int:
        return self.config.data.split_seed

    def default_source(self) -> str:
        return self.config.data.file or ("hub" if self.config.data.hub else "synthetic")

    def load(
        self,
        source: str | None = None,
        split: str = "test",
        *,
        limit: int | None = None,
        cache_dir: Path | None = None,
    ) -> TaskData:
        """``split`` of ``source`` ("hub", "synthetic" or a table's path; None: the config's own)."""
        if split not in SPLITS:
            raise HarnessError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        source = source or self.default_source()
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        data = self.config.data
        table, revision, where, data_dir = self._locate(source, cache)
        base = table.parent if table is not None else None
        # The manifest belongs to this task's reading of the table (columns, filters, grouping, split).
        reading = _identity(data.model_dump(exclude={"hub", "revision", "file"}), [f.model_dump(include={"name", "column", "kind"}) for f in self.fields])  # fmt: skip
        manifest = data_dir / f"manifest-{reading}-{split}{f'-limit{limit}' if limit else ''}.json"
        reused = _reuse(manifest, table) if table is not None else None
        if reused is not None:
            return reused
        df = self._read(table, revision, where)
        units = self._units(df, where)
        samples, excluded, n_filtered = self._samples(df, split, limit, base, cache / "images", where)
        info = DataInfo(
            source=source if source in ("hub", "synthetic") else str(table),
            split=split,
            fingerprint=fingerprint(samples, self.split_seed),
            n_samples=len(samples),
            n_excluded=len(excluded),
            n_filtered=n_filtered,
            synthetic=source == "synthetic",
            revision=revision,
            split_seed=self.split_seed,
            group_by=", ".join(self.config.group_columns),
            manifest=str(manifest),
            budget_targets=self._longest_targets(df, where),
            train_labels=self._train_labels(df, where),
            units=units,
        )
        payload = {
            **info.model_dump(),
            "excluded": [e.model_dump() for e in excluded],
            "samples": [s.model_dump() for s in samples],
            "signature": _signature([table, *(Path(s.image) for s in samples)]) if table else None,
        }
        sources.write_manifest(manifest, payload)
        if excluded and not samples:
            hint = "; offline? use `--data synthetic`" if source == "hub" else ""
            raise HarnessError(
                f"{where}: all {len(excluded)} rows of the {split} split were excluded "
                f"(first: {excluded[0].reason}); see {manifest}{hint}"
            )
        return TaskData(samples=samples, info=info, excluded=excluded)

    def preview(self, source: str | None = None, n: int = 3) -> list[tuple[int, Truth | str]]:
        """The first ``n`` rows the task keeps, as (row number, truth or the reason it has none):
        what `harness task check` shows. Reads the table only (no images)."""
        table, revision, where, _ = self._locate(source or self.default_source(), default_cache_dir())
        df = self._read(table, revision, where)
        self._units(df, where)
        rows = [(i, row) for i, row in enumerate(df.to_dict("records")) if self._kept(row)][:n]
        return [(i, self._truth(row, f"{where} row {i}")) for i, row in rows]

    def _locate(self, source: str, cache: Path) -> tuple[Path | None, str | None, str, Path]:
        """(table file or None for the hub, hub commit, how errors name it, where its manifests go)."""
        data = self.config.data
        if source == "hub":
            if not data.hub:
                raise HarnessError(
                    f"task {self.name!r} has no hub dataset; use --data synthetic or a table's path"
                )
            revision = sources.hub_dataset_commit(data.hub, data.revision)
            return (
                None,
                revision,
                f"{data.hub}@{revision[:12]}",
                cache / "hub" / data.hub.replace("/", "--") / revision,
            )
        if source == "synthetic":
            if not data.synthetic:
                raise HarnessError(
                    f"task {self.name!r} does not run on the synthetic catalog (data.synthetic = false)"
                )
            table = synthetic.build_catalog(SYNTHETIC_SEED, self.synthetic_size, cache)
            return table, None, "synthetic", table.parent
        table = Path(source).expanduser()
        if not table.is_absolute() and self.base_dir is not None and source == data.file:
            table = self.base_dir / table  # a config's own file is relative to the config
        digest = hashlib.sha256(str(table.resolve()).encode()).hexdigest()[:12]
        return table, None, str(table), cache / "local" / f"{table.stem}-{digest}"

    def _read(self, table: Path | None, revision: str | None, where: str) -> pd.DataFrame:
        d = self.config.data
        df = sources.load_hub_table(d.hub, revision) if table is None else sources.read_table(table)
        self._check_columns(df, where)
        return df

    def _check_columns(self, df: pd.DataFrame, where: str) -> None:
        d = self.config.data
        # The id column may be absent (row numbers then); everything that makes a truth must be there.
        required = [f.column for f in self.fields] + list(self.config.group_columns)
        required += [flt.column for flt in d.filters] + [
            f.currency_column for f in self.fields if f.currency_column
        ]
        missing = sources.missing_columns(df, required, [c for c in (d.image_column, d.url_column) if c])
        if missing:
            raise HarnessError(
                f"{where}: task {self.name!r} needs column(s) {', '.join(missing)} "
                f"(has: {', '.join(map(str, df.columns))})"
            )

    def _units(self, df: pd.DataFrame, where: str) -> dict[str, str]:
        """A price field's currency from its column: one currency per task, or a price error is meaningless."""
        units = {}
        for f in self.fields:
            if f.currency_column:
                found = sorted({str(v) for v in df[f.currency_column].dropna().unique()})
                if len(found) > 1:
                    raise HarnessError(
                        f"{where}: column {f.currency_column!r} holds several currencies ({', '.join(found)}); "
                        f"errors of field {f.name!r} across currencies are meaningless: filter the rows"
                    )
                units[f.name] = found[0] if found else ""
            elif f.currency:
                units[f.name] = f.currency
        return units

    def _truth(self, row: dict, where: str) -> Truth | str:
        """The row's field values, or the reason (naming the field and column) why it has none."""
        truth: Truth = {}
        for f in self.fields:
            raw = row.get(f.column)
            value = get_kind(f.kind).value(None if _missing(raw) else raw)
            if value is None:
                return (
                    f"{where}: field {f.name!r} (column {f.column!r}) must be {get_kind(f.kind).expects()}, "
                    f"got {raw!r}"
                )
            truth[f.name] = value
        return truth

    def _kept(self, row: dict) -> bool:
        """The task's filters: rows with an empty or excluded value are out of the task (by design)."""
        for flt in self.config.data.filters:
            value = _text(row, flt.column)
            if not value or value in flt.exclude:
                return False
        return True

    def _group(self, row: dict) -> str:
        return normalise(" ".join(_text(row, c) for c in self.config.group_columns))

    def _longest_targets(self, df: pd.DataFrame, where: str) -> list[str]:
        """The catalog's longest targets (every split): what the generation budget is sized from."""
        targets = set()
        for row in df.to_dict("records"):
            if self._kept(row) and isinstance(truth := self._truth(row, where), dict):
                targets.add(self._render(truth))
        return sorted(targets, key=lambda t: (-len(t), t))[:BUDGET_TARGETS]

    def _train_labels(self, df: pd.DataFrame, where: str) -> dict[str, list[str]]:
        """Each label field's values in the train split, most frequent first (then by name): the
        closed label set a `choices` prompt lists and free answers are mapped onto."""
        counts: dict[str, dict[str, int]] = {f.name: {} for f in self.fields if get_kind(f.kind).categorical}
        for row in df.to_dict("records"):
            if not self._kept(row) or split_of(self._group(row), self.split_seed) != "train":
                continue
            if isinstance(truth := self._truth(row, where), dict):
                for name, seen in counts.items():
                    seen[str(truth[name])] = seen.get(str(truth[name]), 0) + 1
        return {name: sorted(seen, key=lambda label: (-seen[label], label)) for name, seen in counts.items()}

    def _samples(self, df, split, limit, base, images_dir, where) -> tuple[list[Sample], list[Excluded], int]:
        d = self.config.data
        candidates, seen, n_filtered = [], set(), 0
        for index, row in enumerate(df.to_dict("records")):
            if not self._kept(row):
                n_filtered += 1
                continue
            sid = _row_id(row, index, d.id_column)
            sid = sid if sid not in seen else f"{sid}-{index}"
            seen.add(sid)
            group = self._group(row)
            if split_of(group, self.split_seed) == split:
                candidates.append((sid, index, row, group))
        candidates.sort(key=lambda c: c[0])
        samples: list[Sample] = []
        excluded: list[Excluded] = []
        pos = 0
        # With a limit, resolve images chunk by chunk so `--limit 10` downloads ~10 images, not the split.
        while pos < len(candidates) and (limit is None or len(samples) < limit):
            chunk = candidates[pos : len(candidates) if limit is None else pos + limit - len(samples)]
            pos += len(chunk)
            pending = []
            for sid, index, row, group in chunk:
                truth = self._truth(row, f"{where} row {index} (id {sid})")
                image = _text(row, d.image_column) if d.image_column else ""
                url = _text(row, d.url_column) if d.url_column else ""
                if isinstance(truth, str):
                    excluded.append(Excluded(id=sid, reason=truth))
                elif not image and not url:
                    excluded.append(Excluded(id=sid, reason=f"{where} row {index}: no image or image URL"))
                else:
                    pending.append((sid, index, truth, group, image, url))
            fetched = sources.fetch_images([p[5] for p in pending if not p[4]], images_dir)
            for sid, index, truth, group, image, url in pending:
                if image:
                    path = Path(image) if Path(image).is_absolute() or base is None else base / image
                    # A full decode: a truncated file passes verify() and would crash training mid-epoch.
                    reason = sources.check_image(path)
                else:
                    path = fetched[url]
                    reason = path if isinstance(path, str) else None
                if reason:
                    excluded.append(Excluded(id=sid, reason=f"{where} row {index}: {reason}"))
                else:
                    samples.append(Sample(id=sid, image=str(path), truth=truth, group=group))
        return samples, excluded, n_filtered


def _missing(value) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _row_id(row: dict, index: int, column: str | None) -> str:
    code = row.get(column) if column else None
    if _missing(code) or str(code).strip() == "":
        return f"row{index}"
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    return str(code).strip()


def _text(row: dict, column: str) -> str:
    value = row.get(column)
    return "" if _missing(value) else str(value).strip()


def fingerprint(samples: list[Sample], split_seed: int = 0) -> str:
    """sha256 over the split seed and sorted (id, truth, image bytes digest): same data -> same fingerprint."""
    items = [[s.id, s.truth, sources.file_digest(Path(s.image))] for s in sorted(samples, key=lambda s: s.id)]
    return hashlib.sha256(json.dumps([split_seed, items], sort_keys=True).encode()).hexdigest()


def _signature(paths: list[Path]) -> list[list]:
    """(path, size, mtime) of each file: what make and git use to tell that nothing changed."""
    out = []
    for path in paths:
        st = path.stat()
        out.append([str(path), st.st_size, st.st_mtime_ns])
    return out


def _reuse(manifest: Path, table: Path) -> TaskData | None:
    """The split as resolved last time, if its table and every image file are unchanged.

    Saves re-reading the table and re-checking and re-hashing every image: a finished `harness run`
    re-run then costs milliseconds.
    """
    try:
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        if saved["excluded"]:  # a missing image may have been fixed since: look again
            return None
        samples = [Sample(**s) for s in saved["samples"]]
        if saved.get("signature") != _signature([table, *(Path(s.image) for s in samples)]):
            return None
        info = DataInfo(**{k: saved[k] for k in DataInfo.model_fields})
        return TaskData(samples=samples, info=info, excluded=[])
    except (OSError, ValueError, KeyError, TypeError):  # absent, old or damaged manifest: load afresh
        return None
