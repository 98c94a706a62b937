"""The `burberry` task: name, category and full price of a product from its catalog image.

Data: DBQ/Burberry.Product.prices.United.States (hub), a local CSV/Parquet/JSONL with the same
columns, or a synthetic catalog (tasks/catalog.py). Split: grouped by normalised title, so colour
variants of one product never straddle train and test. Scores: tasks/metrics/ (evaluate modules).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from functools import cache
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.paths import cache_dir as default_cache_dir
from harness.schema import DataInfo, Excluded, MetricSpec, MetricValue, Parsed, Record, Sample, Truth
from harness.stats import mean_ci
from tasks import catalog, sources
from tasks.base import TaskData
from tasks.parsing import AnswerParser, ParseField

HUB_ID = "DBQ/Burberry.Product.prices.United.States"
# The latest commit of the dataset's main branch that could be found (2023-11-19, "Upload README.md").
# Pinned so that a re-upload never changes a benchmark silently; override with the task's `revision`
# argument or the environment variable below.
HUB_REVISION = "2d90840b90ebbbf6b4a1ba8b72252fd5bbe51230"
REVISION_ENV = "HARNESS_BURBERRY_REVISION"
SPLITS = ("train", "validation", "test")
# The split is a property of the task and its data, never of a training or sampling seed: every
# command (run, train, report) sees the same test groups.
SPLIT_SEED = 0
SYNTHETIC_SEED = 0  # `--data synthetic` is one fixed catalog
BUDGET_TARGETS = 5  # longest targets kept to size the generation budget (max_new_tokens "auto")
QUESTION = "What is shown in this image?"
TARGET_TEMPLATE = "Product: {name}, Category: {category}, Full Price: {price}"
# What Phi-3-Vision's chat template renders for `messages()` with the generation prompt.
PHI3_PROMPT = f"<|user|>\n<|image_1|>{QUESTION}<|end|>\n<|assistant|>\n"
METRICS_DIR = Path(__file__).parent / "metrics"
FIELDS = ("name", "category", "price")
# What each score means; metrics.json, reports and `--fail-if-worse` read these, never a hard-coded list.
METRIC_SPECS = [
    MetricSpec(name="name_similarity", label="name similarity (0-100)"),
    MetricSpec(name="name_exact", label="name exact match", binary=True, percent=True, per_group=True),
    MetricSpec(name="category_exact", label="category accuracy", binary=True, percent=True, per_group=True),
    MetricSpec(name="price_within_10", label="price within 10 %", binary=True, percent=True),
    MetricSpec(name="price_within_25", label="price within 25 %", binary=True, percent=True, per_group=True),
    MetricSpec(name="price_abs_error", label="price absolute error", higher_is_better=False, fill_missing=False, unit="USD"),
    MetricSpec(name="price_ape", label="price abs. % error", higher_is_better=False, fill_missing=False, percent=True, per_group=True),
    MetricSpec(name="price_log_error", label="price log error (abs)", higher_is_better=False, fill_missing=False),
    MetricSpec(name="parsed", label="parse rate (all fields read)", binary=True, percent=True, per_group=True),
    *(MetricSpec(name=f"{f}_read", label=f"{f} read", binary=True, percent=True) for f in FIELDS),
]  # fmt: skip
SCORE_KEYS = tuple(spec.name for spec in METRIC_SPECS)

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Lowercase, '&' as 'and', punctuation/whitespace runs -> one space: the grouping and matching key."""
    return _NON_WORD.sub(" ", text.lower().replace("&", " and ")).strip()


# ---------------------------------------------------------------- split


def split_of(group: str, split_seed: int = SPLIT_SEED) -> str:
    """test ~20 %, validation ~10 %, train the rest, by a stable hash (same on every machine)."""
    bucket = int.from_bytes(hashlib.sha256(f"{split_seed}:{group}".encode()).digest()[:8], "big") % 100
    return "test" if bucket < 20 else "validation" if bucket < 30 else "train"


def assert_no_leakage(splits: dict[str, list[Sample]]) -> None:
    """Raise if any group (normalised title) appears in more than one split."""
    owner: dict[str, str] = {}
    for name, samples in splits.items():
        for sample in samples:
            if owner.setdefault(sample.group, name) != name:
                raise AssertionError(f"group {sample.group!r} is in both {owner[sample.group]} and {name}")


# ---------------------------------------------------------------- parsing

# Label aliases a model may write before each field (the template's own label first).
PARSE_FIELDS = (
    ParseField("name", "text", ("Product", "Product name", "Name", "Title", "Item")),
    ParseField("category", "label", ("Category", "Product category", "Product type", "Type")),
    ParseField("price", "price", ("Full price", "Retail price", "Price", "Cost", "MSRP")),
)
_PARSER = AnswerParser(PARSE_FIELDS)


def parse_answer(text: str) -> dict:
    """Read {name, category, price} from what a model wrote; a field not found is None. Never raises."""
    return _PARSER(text)


# ---------------------------------------------------------------- scoring


@cache
def _metric(name: str):
    """An evaluate module loaded once per process from tasks/metrics/<name>.py (offline; no hub)."""
    import evaluate  # lazy: it imports torch/transformers, which loading data must not need

    return evaluate.load(str(METRICS_DIR / f"{name}.py"), keep_in_memory=True)


def score_many(truths: list[Truth], parsed: list[Parsed]) -> list[dict[str, float | None]]:
    """Per-sample scores for many pairs in one call per metric module.

    A missing name/category is passed as "" (arrow cannot type an all-None column); the modules score both as a miss.
    """
    if not truths:
        return []
    columns: dict[str, list] = {}
    for module, preds, refs in (
        ("name_match", [p.name or "" for p in parsed], [t.name for t in truths]),
        ("category_match", [p.category or "" for p in parsed], [t.category for t in truths]),
        ("price_error", [p.price for p in parsed], [t.price for t in truths]),
    ):
        columns.update(_metric(module).compute(predictions=preds, references=refs))
    # One parse rate (every field read) and a read rate per field: each named as what it counts.
    columns["parsed"] = [float(None not in (p.name, p.category, p.price)) for p in parsed]
    for f in FIELDS:
        columns[f"{f}_read"] = [float(getattr(p, f) is not None) for p in parsed]
    return [{key: columns[key][i] for key in SCORE_KEYS} for i in range(len(truths))]


def _identity(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_digest(paths: list[Path]) -> str:
    return _identity(*(hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths)))


# ---------------------------------------------------------------- data


def _row_id(row: dict, index: int) -> str:
    code = row.get("product_code")
    if code is None or (not isinstance(code, str) and pd.isna(code)) or str(code).strip() == "":
        return f"row{index}"
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    return str(code).strip()


def _text(row: dict, field: str) -> str:
    value = row.get(field)
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value).strip()


def _truth(row: dict, where: str) -> Truth | str:
    """The row's ground truth, or the reason (naming the field) why it has none."""
    for field in ("title", "category3_code"):
        if not _text(row, field):
            return f"{where}: field {field!r} is empty"
    raw = row.get("full_price")
    try:
        price = float(raw)
    except (TypeError, ValueError):
        return f"{where}: field 'full_price' is not a number: {raw!r}"
    if not math.isfinite(price) or price <= 0:
        return f"{where}: field 'full_price' must be a positive number, got {raw!r}"
    return Truth(
        name=_text(row, "title"),
        category=_text(row, "category3_code"),
        price=price,
        category1=_text(row, "category1_code"),
        category2=_text(row, "category2_code"),
    )


def fingerprint(samples: list[Sample], split_seed: int = SPLIT_SEED) -> str:
    """sha256 over the split seed and sorted (id, truth, image bytes digest): same data -> same fingerprint."""
    items = [
        [s.id, s.truth.model_dump(), sources.file_digest(Path(s.image))]
        for s in sorted(samples, key=lambda s: s.id)
    ]
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

    Saves re-reading the table, re-checking and re-hashing every image: a finished `harness run`
    re-run then costs milliseconds.
    """
    try:
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        if saved["excluded"]:  # a missing image may have been fixed since: look again
            return None
        samples = [Sample(**s) for s in saved["samples"]]
        paths = [table, *(Path(s.image) for s in samples)]
        if saved.get("signature") != _signature(paths):
            return None
        info = DataInfo(**{k: saved[k] for k in DataInfo.model_fields})
        return TaskData(samples=samples, info=info, excluded=[Excluded(**e) for e in saved["excluded"]])
    except (OSError, ValueError, KeyError, TypeError):  # absent, old or damaged manifest: load afresh
        return None


def _target_text(truth: Truth) -> str:
    return TARGET_TEMPLATE.format(name=truth.name, category=truth.category, price=float(truth.price))


def score_values(records: list[Record], spec: MetricSpec) -> list[float | None]:
    """One value per record: a missing score is a failure (0) or undefined (None), as the spec says."""
    values = [r.scores.get(spec.name) for r in records]
    return [0.0 if v is None and spec.fill_missing else v for v in values]


class BurberryTask:
    name = "burberry"
    description = "Product name, category and full price from a Burberry catalog image (DBQ/Burberry US)."
    split_seed = SPLIT_SEED

    def __init__(self, revision: str | None = None, synthetic_size: int = 600) -> None:
        self.revision = (
            revision  # dataset revision for source "hub"; None -> $HARNESS_BURBERRY_REVISION or pinned
        )
        self.synthetic_size = synthetic_size

    # -- prompt / target / parse / score

    def messages(self, sample: Sample | None = None) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]

    def target(self, sample: Sample) -> str:
        return _target_text(sample.truth)

    def prompt_identity(self) -> str:
        """What the model is asked and trained to answer: part of a run's identity."""
        return _identity(self.messages(), TARGET_TEMPLATE)

    def scoring_identity(self) -> str:
        """The parser and scorers: a finished run scored by other code is re-scored, not re-printed."""
        return _source_digest(
            [Path(__file__), Path(__file__).with_name("parsing.py"), *METRICS_DIR.glob("*.py")]
        )

    def metric_specs(self) -> list[MetricSpec]:
        return list(METRIC_SPECS)

    def parse(self, text: str) -> Parsed:
        return Parsed(**parse_answer(text))

    def score(self, truths: list[Truth], parsed: list[Parsed]) -> list[dict[str, float | None]]:
        """Per-sample scores of a whole batch: one call per evaluate module, not per sample."""
        return score_many(truths, parsed)

    def aggregate(self, records: list[Record]) -> tuple[dict[str, MetricValue], dict[str, dict]]:
        """Means with 95 % bootstrap CIs (harness.stats, the reports' own), and per-category means."""
        columns = [score_values(records, spec) for spec in METRIC_SPECS]
        metrics = {
            spec.name: MetricValue(value=mean, ci_low=low, ci_high=high, n=n)
            for spec, (mean, low, high, n) in zip(METRIC_SPECS, mean_ci(columns), strict=True)
        }
        per_category: dict[str, dict] = {}
        grouped = [spec for spec in METRIC_SPECS if spec.per_group]
        for category in sorted({r.truth.category for r in records}):
            rows = [r for r in records if r.truth.category == category]
            per_category[category] = {"n": len(rows)}
            for spec in grouped:
                defined = [v for v in score_values(rows, spec) if v is not None]
                per_category[category][spec.name] = sum(defined) / len(defined) if defined else None
        return metrics, per_category

    # -- data

    def load(
        self,
        source: str = "hub",
        split: str = "test",
        *,
        limit: int | None = None,
        cache_dir: Path | None = None,
    ) -> TaskData:
        if split not in SPLITS:
            raise HarnessError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        revision = None
        if source == "hub":
            revision = self.revision or os.environ.get(REVISION_ENV) or HUB_REVISION
            table, base, where = None, None, f"{HUB_ID}@{revision[:12]}"
            data_dir = cache / "hub" / revision
        elif source == "synthetic":
            table = catalog.build_catalog(SYNTHETIC_SEED, self.synthetic_size, cache)
            base, where, data_dir = table.parent, "synthetic", table.parent
        else:
            table = Path(source).expanduser()
            base, where = table.parent, str(table)
            digest = hashlib.sha256(str(table.resolve()).encode()).hexdigest()[:12]
            data_dir = cache / "local" / f"{table.stem}-{digest}"
        manifest = (
            data_dir / f"manifest-{split}-split{self.split_seed}{f'-limit{limit}' if limit else ''}.json"
        )
        reused = _reuse(manifest, table) if table is not None else None
        if reused is not None:
            return reused
        df = sources.load_hub_table(HUB_ID, revision) if table is None else sources.read_table(table)
        samples, excluded = self._samples(df, split, limit, base, cache / "images", where)
        info = DataInfo(
            source=source if source in ("hub", "synthetic") else str(Path(source).expanduser()),
            split=split,
            fingerprint=fingerprint(samples, self.split_seed),
            n_samples=len(samples),
            n_excluded=len(excluded),
            synthetic=source == "synthetic",
            revision=revision,
            split_seed=self.split_seed,
            group_by="normalised title",
            manifest=str(manifest),
            budget_targets=_longest_targets(df, where),
        )
        sources.write_manifest(
            manifest,
            {
                **info.model_dump(),
                "excluded": [e.model_dump() for e in excluded],
                "ids": [s.id for s in samples],
                "samples": [s.model_dump() for s in samples],
                "signature": _signature([table, *(Path(s.image) for s in samples)]) if table else None,
            },
        )
        if excluded and not samples:
            hint = "; offline? use `--data synthetic`" if source == "hub" else ""
            raise HarnessError(
                f"{where}: all {len(excluded)} rows of the {split} split were excluded "
                f"(first: {excluded[0].reason}); see {manifest}{hint}"
            )
        return TaskData(samples=samples, info=info, excluded=excluded)

    def _samples(self, df, split, limit, base, images_dir, where) -> tuple[list[Sample], list[Excluded]]:
        candidates, seen = [], set()
        for index, row in enumerate(df.to_dict("records")):
            sid = _row_id(row, index)
            sid = sid if sid not in seen else f"{sid}-{index}"
            seen.add(sid)
            group = normalise(_text(row, "title"))
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
                truth = _truth(row, f"{where} row {index} (id {sid})")
                image, url = _text(row, "image"), _text(row, "imageurl")
                if isinstance(truth, str):
                    excluded.append(Excluded(id=sid, reason=truth))
                elif not image and not url:
                    excluded.append(Excluded(id=sid, reason=f"{where} row {index}: no image or imageurl"))
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
        return samples, excluded


def _longest_targets(df: pd.DataFrame, where: str) -> list[str]:
    """The catalog's longest targets (every split): what the generation budget is sized from."""
    targets = {
        _target_text(truth)
        for index, row in enumerate(df.to_dict("records"))
        if isinstance(truth := _truth(row, where), Truth)
    }
    return sorted(targets, key=lambda t: (-len(t), t))[:BUDGET_TARGETS]
