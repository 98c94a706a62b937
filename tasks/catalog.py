"""CatalogTask: one config-driven task for every product catalog (``burberry`` is a config file).

From a TaskConfig it builds the prompt (default, instructed or few-shot), the training target, the
answer parser (tasks/parsing.py), the scorers per field kind (evaluate modules loaded from local
files) and the data loading: a hub dataset at a pinned commit, a local table, or the synthetic
catalog; a grouped split with the task's own fixed seed; images fully decoded once and the bad
ones excluded, listed and counted.

Why one class: a new catalog is one TOML file and no code, and every catalog keeps every guarantee.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cache
from pathlib import Path

import pandas as pd

from harness.core.errors import HarnessError
from harness.core.paths import cache_dir as default_cache_dir
from harness.core.schema import (
    DataInfo,
    Excluded,
    FieldInfo,
    MetricSpec,
    MetricValue,
    Parsed,
    Record,
    Sample,
    Truth,
)
from harness.core.stats import mean_ci
from tasks import sources, synthetic
from tasks.base import TaskData
from tasks.config import PROMPTS, SCORERS, FieldConfig, TaskConfig, placeholders
from tasks.parsing import AnswerParser, ParseField
from tasks.text import normalise

SPLITS = ("train", "validation", "test")
SYNTHETIC_SEED = 0  # `--data synthetic` is one fixed catalog
BUDGET_TARGETS = 5  # longest targets kept to size the generation budget (max_new_tokens "auto")
METRICS_DIR = Path(__file__).parent / "metrics"
# The code that turns an answer into numbers: a change re-scores finished runs (scoring identity).
SCORING_SOURCES = [Path(__file__), *(Path(__file__).with_name(n) for n in ("parsing.py", "text.py"))]


def split_of(group: str, split_seed: int = 0) -> str:
    """test ~20 %, validation ~10 %, train the rest, by a stable hash (same on every machine)."""
    bucket = int.from_bytes(hashlib.sha256(f"{split_seed}:{group}".encode()).digest()[:8], "big") % 100
    return "test" if bucket < 20 else "validation" if bucket < 30 else "train"


def assert_no_leakage(splits: dict[str, list[Sample]]) -> None:
    """Raise if any group appears in more than one split."""
    owner: dict[str, str] = {}
    for name, samples in splits.items():
        for sample in samples:
            if owner.setdefault(sample.group, name) != name:
                raise AssertionError(f"group {sample.group!r} is in both {owner[sample.group]} and {name}")


def _identity(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@cache
def _metric(name: str):
    """An evaluate module loaded once per process from tasks/metrics/<name>.py (offline; no hub)."""
    import evaluate  # lazy: it imports torch/transformers, which loading data must not need

    return evaluate.load(str(METRICS_DIR / f"{name}.py"), keep_in_memory=True)


def _scorers(field: FieldConfig) -> list[str]:
    return field.scorers or list(SCORERS[field.kind])


def metric_specs(fields: list[FieldConfig]) -> list[MetricSpec]:
    """What each score means, from the fields: names are ``<field>_<scorer>``, plus the parse rates."""
    specs = []
    for f in fields:
        scorers, n = _scorers(f), f.name
        if f.kind == "text":
            if "similarity" in scorers:
                specs.append(MetricSpec(name=f"{n}_similarity", label=f"{n} similarity (0-100)", field=n))
            if "exact" in scorers:
                specs.append(MetricSpec(name=f"{n}_exact", label=f"{n} exact match", binary=True, percent=True, per_group=True, field=n))  # fmt: skip
        elif f.kind == "label":
            specs.append(MetricSpec(name=f"{n}_exact", label=f"{n} accuracy", binary=True, percent=True, per_group=True, field=n))  # fmt: skip
        else:
            unit = f.currency if f.kind == "price" else None
            if "within" in scorers:
                for t in f.tolerances:
                    specs.append(MetricSpec(
                        name=f"{n}_within_{t:g}", label=f"{n} within {t:g} %", binary=True, percent=True,
                        per_group=t == max(f.tolerances), field=n,
                    ))  # fmt: skip
            lower = {"higher_is_better": False, "fill_missing": False, "field": n}
            if "abs_error" in scorers:
                specs.append(
                    MetricSpec(name=f"{n}_abs_error", label=f"{n} absolute error", unit=unit, **lower)
                )
            if "ape" in scorers:
                specs.append(MetricSpec(name=f"{n}_ape", label=f"{n} abs. % error", percent=True, per_group=True, **lower))  # fmt: skip
            if "log_error" in scorers:
                specs.append(MetricSpec(name=f"{n}_log_error", label=f"{n} log error (abs)", **lower))
    specs.append(MetricSpec(name="parsed", label="parse rate (all fields read)", binary=True, percent=True, per_group=True))  # fmt: skip
    specs += [MetricSpec(name=f"{f.name}_read", label=f"{f.name} read", binary=True, percent=True, field=f.name) for f in fields]  # fmt: skip
    return specs


def score_values(records: list[Record], spec: MetricSpec) -> list[float | None]:
    """One value per record: a missing score is a failure (0) or undefined (None), as the spec says."""
    values = [r.scores.get(spec.name) for r in records]
    return [0.0 if v is None and spec.fill_missing else v for v in values]


class CatalogTask:
    """A product catalog task from a TaskConfig; ``prompt`` picks default, instructed or few-shot."""

    def __init__(
        self,
        config: TaskConfig,
        *,
        source: str = "built-in",
        base_dir: Path | None = None,
        prompt: str = "default",
        synthetic_size: int = 600,
    ) -> None:
        if prompt not in PROMPTS:
            raise HarnessError(f"unknown prompt {prompt!r}; valid prompts: {', '.join(PROMPTS)}")
        self.config = config
        self.name = config.name
        self.description = config.description
        self.source = source  # where the definition came from: shown by `harness tasks`, kept in runs
        self.base_dir = Path(base_dir) if base_dir else None
        self.prompt = prompt
        self.synthetic_size = synthetic_size
        self.fields = list(config.fields)
        self._parser = AnswerParser([ParseField(f.name, f.kind, tuple(f.labels)) for f in self.fields])
        self._specs = metric_specs(self.fields)
        self._shots: list[Sample] | None = None

    @property
    def split_seed(self) -> int:
        return self.config.data.split_seed

    # -- identity

    def prompt_identity(self) -> str:
        """What the model is asked and trained to answer (and, few-shot, which examples it is shown)."""
        shots = [[s.id, self.target(s)] for s in self._shots or []]
        return _identity(self.prompt, self.question(), self.config.answer, shots)

    def scoring_identity(self) -> str:
        """The parser, the scorers and the field settings: a finished run scored by others is re-scored."""
        code = [
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in [*SCORING_SOURCES, *sorted(METRICS_DIR.glob("*.py"))]
        ]
        fields = [f.model_dump(exclude={"column"}) for f in self.fields]
        return _identity(code, fields)

    def metric_specs(self) -> list[MetricSpec]:
        return list(self._specs)

    def field_infos(self) -> list[FieldInfo]:
        return [
            FieldInfo(
                name=f.name,
                kind=f.kind,
                numeric=f.kind in ("number", "price"),
                categorical=f.kind == "label",
                unit=f.currency,
            )
            for f in self.fields
        ]

    # -- prompt / target

    def question(self) -> str:
        custom = self.config.prompts.get(self.prompt)
        if custom and custom.question:
            return custom.question
        if self.prompt == "instructed":
            return f"{self.config.question} Answer in exactly this format: {self.answer_format()}"
        return self.config.question

    def answer_format(self) -> str:
        """The answer template with <field> in place of each value: what the instructed prompt spells out."""
        return self.config.answer.format(**{n: f"<{n}>" for n in placeholders(self.config.answer)})

    def messages(self, sample: Sample | None = None) -> list[dict]:
        """The conversation in the Hugging Face chat format; image parts carry their file as "path".

        Few-shot: each shot is a user turn (its image and the question) answered by its target.
        """
        question = self.question()
        turns = []
        for shot in self._shots or []:
            turns.append({"role": "user", "content": [{"type": "image", "path": shot.image}, {"type": "text", "text": question}]})  # fmt: skip
            turns.append({"role": "assistant", "content": [{"type": "text", "text": self.target(shot)}]})
        image = {"type": "image", "path": sample.image} if sample is not None else {"type": "image"}
        turns.append({"role": "user", "content": [image, {"type": "text", "text": question}]})
        return turns

    def target(self, sample: Sample) -> str:
        return self._render(sample.truth)

    def _render(self, truth: Truth) -> str:
        values = {
            f.name: float(truth[f.name]) if f.kind in ("number", "price") else truth[f.name]
            for f in self.fields
        }
        return self.config.answer.format(**values)

    # -- parse / score / aggregate

    def parse(self, text: str) -> Parsed:
        return self._parser(text)

    def score(self, truths: list[Truth], parsed: list[Parsed]) -> list[dict[str, float | None]]:
        """Per-sample scores of a whole batch: one call per evaluate module and field, not per sample."""
        if not truths:
            return []
        columns: dict[str, list] = {}
        for f in self.fields:
            preds = [p.get(f.name) for p in parsed]
            refs = [t[f.name] for t in truths]
            if f.kind == "text":
                out = _metric("text_match").compute(predictions=[p or "" for p in preds], references=refs)
            elif f.kind == "label":
                out = _metric("label_match").compute(predictions=[p or "" for p in preds], references=refs)
            else:  # arrow cannot type an all-None column of strings; floats with None are fine
                out = _metric("number_error").compute(
                    predictions=preds, references=refs, tolerances=f.tolerances
                )
            for key, values in out.items():
                columns[f"{f.name}_{key}"] = values
            columns[f"{f.name}_read"] = [float(p is not None) for p in preds]
        # One parse rate (every field read) and a read rate per field: each named as what it counts.
        columns["parsed"] = [float(all(p.get(f.name) is not None for f in self.fields)) for p in parsed]
        return [{spec.name: columns[spec.name][i] for spec in self._specs} for i in range(len(truths))]

    def aggregate(self, records: list[Record]) -> tuple[dict[str, MetricValue], dict[str, dict]]:
        """Means with 95 % bootstrap CIs (harness.core.stats, the reports' own), and per-label means for
        every label field."""
        columns = [score_values(records, spec) for spec in self._specs]
        metrics = {
            spec.name: MetricValue(value=mean, ci_low=low, ci_high=high, n=n)
            for spec, (mean, low, high, n) in zip(self._specs, mean_ci(columns), strict=True)
        }
        grouped = [spec for spec in self._specs if spec.per_group]
        per_group: dict[str, dict] = {}
        for f in self.fields:
            if f.kind != "label":
                continue
            table = per_group[f.name] = {}
            for label in sorted({str(r.truth[f.name]) for r in records}):
                rows = [r for r in records if str(r.truth[f.name]) == label]
                table[label] = {"n": len(rows)}
                for spec in grouped:
                    defined = [v for v in score_values(rows, spec) if v is not None]
                    table[label][spec.name] = sum(defined) / len(defined) if defined else None
        return metrics, per_group

    # -- data

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
        revision = None
        if source == "hub":
            if not data.hub:
                raise HarnessError(
                    f"task {self.name!r} has no hub dataset; use --data synthetic or a table's path"
                )
            revision = sources.hub_dataset_commit(data.hub, data.revision)
            table, base, where = None, None, f"{data.hub}@{revision[:12]}"
            data_dir = cache / "hub" / data.hub.replace("/", "--") / revision
        elif source == "synthetic":
            if not data.synthetic:
                raise HarnessError(
                    f"task {self.name!r} does not run on the synthetic catalog (data.synthetic = false)"
                )
            table = synthetic.build_catalog(SYNTHETIC_SEED, self.synthetic_size, cache)
            base, where, data_dir = table.parent, "synthetic", table.parent
        else:
            table = Path(source).expanduser()
            if not table.is_absolute() and self.base_dir is not None and source == data.file:
                table = self.base_dir / table  # a config's own file is relative to the config
            base, where = table.parent, str(table)
            digest = hashlib.sha256(str(table.resolve()).encode()).hexdigest()[:12]
            data_dir = cache / "local" / f"{table.stem}-{digest}"
        # The manifest belongs to this task's reading of the table (columns, filters, grouping, split).
        reading = _identity(data.model_dump(exclude={"hub", "revision", "file"}), [f.model_dump(include={"name", "column", "kind"}) for f in self.fields])  # fmt: skip
        manifest = data_dir / f"manifest-{reading}-{split}{f'-limit{limit}' if limit else ''}.json"
        reused = _reuse(manifest, table) if table is not None else None
        if reused is not None:
            return self._with_shots(reused, source, cache_dir)
        df = sources.load_hub_table(data.hub, revision) if table is None else sources.read_table(table)
        self._check_columns(df, where)
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
        return self._with_shots(TaskData(samples=samples, info=info, excluded=excluded), source, cache_dir)

    def preview(self, source: str | None = None, n: int = 3) -> list[tuple[int, Truth | str]]:
        """The first ``n`` rows the task keeps, as (row number, truth or the reason it has none):
        what `harness task check` shows. Reads the table only (no images)."""
        source = source or self.default_source()
        d = self.config.data
        if source == "hub":
            if not d.hub:
                raise HarnessError(f"task {self.name!r} has no hub dataset")
            revision = sources.hub_dataset_commit(d.hub, d.revision)
            df, where = sources.load_hub_table(d.hub, revision), f"{d.hub}@{revision[:12]}"
        else:
            if source == "synthetic":
                table = synthetic.build_catalog(SYNTHETIC_SEED, self.synthetic_size, default_cache_dir())
            else:
                table = Path(source)
                if not table.is_absolute() and self.base_dir is not None and source == d.file:
                    table = self.base_dir / table
            df, where = sources.read_table(table), str(table)
        self._check_columns(df, where)
        self._units(df, where)
        rows = [(i, row) for i, row in enumerate(df.to_dict("records")) if self._kept(row)][:n]
        return [(i, self._truth(row, f"{where} row {i}")) for i, row in rows]

    def _with_shots(self, data: TaskData, source: str, cache_dir: Path | None) -> TaskData:
        """Few-shot: pick the solved examples (train split of the same data) before the first prompt."""
        if self.prompt == "few-shot" and self._shots is None:
            shots = self.config.prompts.get("few-shot")
            k = shots.shots if shots else 2
            train = data if data.info.split == "train" else self.load(source, "train", cache_dir=cache_dir)
            self._shots = pick_shots(train.samples, self.fields, k)
        return data

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
            if f.kind in ("text", "label"):
                value = _text(row, f.column)
                if not value:
                    return f"{where}: field {f.name!r} (column {f.column!r}) is empty"
                truth[f.name] = value
                continue
            try:
                number = float(raw)
            except (TypeError, ValueError):
                return f"{where}: field {f.name!r} (column {f.column!r}) is not a number: {raw!r}"
            if not math.isfinite(number) or (f.kind == "price" and number <= 0):
                kind = "a positive number" if f.kind == "price" else "a finite number"
                return f"{where}: field {f.name!r} (column {f.column!r}) must be {kind}, got {raw!r}"
            truth[f.name] = number
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
                    reason = sources.check_image(path, full=True)
                else:
                    path = fetched[url]
                    reason = path if isinstance(path, str) else None
                if reason:
                    excluded.append(Excluded(id=sid, reason=f"{where} row {index}: {reason}"))
                else:
                    samples.append(Sample(id=sid, image=str(path), truth=truth, group=group))
        return samples, excluded, n_filtered


def pick_shots(train: list[Sample], fields: list[FieldConfig], k: int) -> list[Sample]:
    """k solved examples, deterministic: by id, preferring distinct values of the first label field."""
    label = next((f.name for f in fields if f.kind == "label"), None)
    chosen, seen = [], set()
    for sample in sorted(train, key=lambda s: hashlib.sha256(s.id.encode()).hexdigest()):
        key = sample.truth.get(label) if label else sample.id
        if key not in seen:
            chosen.append(sample)
            seen.add(key)
        if len(chosen) == k:
            return chosen
    rest = [s for s in sorted(train, key=lambda s: s.id) if s not in chosen]
    return (chosen + rest)[:k]


def _row_id(row: dict, index: int, column: str | None) -> str:
    code = row.get(column) if column else None
    if code is None or (not isinstance(code, str) and pd.isna(code)) or str(code).strip() == "":
        return f"row{index}"
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    return str(code).strip()


def _text(row: dict, column: str) -> str:
    value = row.get(column)
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value).strip()


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
