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
from harness.schema import DataInfo, Excluded, MetricValue, Parsed, Record, Sample, Truth
from tasks import catalog, sources
from tasks.base import TaskData
from tasks.stats import bootstrap_ci

HUB_ID = "DBQ/Burberry.Product.prices.United.States"
# The latest commit of the dataset's main branch that could be found (2023-11-19, "Upload README.md").
# Pinned so that a re-upload never changes a benchmark silently; override with the task's `revision`
# argument or the environment variable below.
HUB_REVISION = "2d90840b90ebbbf6b4a1ba8b72252fd5bbe51230"
REVISION_ENV = "HARNESS_BURBERRY_REVISION"
SPLITS = ("train", "validation", "test")
QUESTION = "What is shown in this image?"
# What Phi-3-Vision's chat template renders for `messages()` with the generation prompt.
PHI3_PROMPT = f"<|user|>\n<|image_1|>{QUESTION}<|end|>\n<|assistant|>\n"
SCORE_KEYS = (
    "name_similarity", "name_exact", "category_exact", "price_abs_error", "price_ape",
    "price_within_10", "price_within_25", "price_log_error", "parsed",
)  # fmt: skip
METRICS_DIR = Path(__file__).parent / "metrics"

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Lowercase, '&' as 'and', punctuation/whitespace runs -> one space: the grouping and matching key."""
    return _NON_WORD.sub(" ", text.lower().replace("&", " and ")).strip()


# ---------------------------------------------------------------- split


def split_of(group: str, seed: int = 0) -> str:
    """test ~20 %, validation ~10 %, train the rest, by a stable hash (same on every machine)."""
    bucket = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big") % 100
    return "test" if bucket < 20 else "validation" if bucket < 30 else "train"


def assert_no_leakage(splits: dict[str, list[Sample]]) -> None:
    """Raise if any group (normalised title) appears in more than one split."""
    owner: dict[str, str] = {}
    for name, samples in splits.items():
        for sample in samples:
            if owner.setdefault(sample.group, name) != name:
                raise AssertionError(f"group {sample.group!r} is in both {owner[sample.group]} and {name}")


# ---------------------------------------------------------------- parsing

_LABELS = {
    "name": r"product\s+name|product|name|title|item",
    "category": r"product\s+category|product\s+type|category|type",
    "price": r"full\s+price|retail\s+price|price|cost|msrp",
}
_LABEL_RE = re.compile(
    r"(?<![A-Za-z])(?:\*\*|__)?(?:"
    + "|".join(f"(?P<{key}>{pattern})" for key, pattern in _LABELS.items())
    + r")(?:\s*\([^)\n]{0,20}\))?\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(r"\d{1,3}(?:[,.\u00a0\u202f']\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?")
_CURRENCY_PRICE_RE = re.compile(
    r"(?:\$|US\$|USD)\s?(" + _NUMBER_RE.pattern + r")|(" + _NUMBER_RE.pattern + r")\s?(?:USD|dollars)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)])\.(?:\s|$)", re.IGNORECASE)


def parse_price(text: str) -> float | None:
    """The first number in ``text``: '$1,290.00', 'USD 1290', '1290 USD', '1.290,00' -> 1290.0."""
    match = _NUMBER_RE.search(text)
    if not match:
        return None
    token = re.sub(r"[\u00a0\u202f']", ",", match.group(0))
    if "," in token and "." in token:  # the later separator is the decimal one
        decimal = "," if token.rfind(",") > token.rfind(".") else "."
        token = token.replace("." if decimal == "," else ",", "").replace(",", ".")
    elif re.fullmatch(r"\d{1,3}(?:[,.]\d{3})+", token):  # 1,290 / 1.290 / 12,345,678: thousands
        token = token.replace(",", "").replace(".", "")
    else:
        token = token.replace(",", ".")
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _clean(value: str) -> str | None:
    value = value.split("\n", 1)[0]
    if end := _SENTENCE_END.search(value):
        value = value[: end.start()]
    value = value.strip().strip("*_`\"'").strip().rstrip(",;|").strip().strip("*_`\"'").strip()
    return value or None


def _parse(text: str) -> dict:
    found: dict[str, str] = {}
    matches = list(_LABEL_RE.finditer(text))
    for match, following in zip(matches, [*matches[1:], None], strict=False):
        key = match.lastgroup
        if key and key not in found:
            found[key] = text[match.end() : following.start() if following else len(text)]
    name = _clean(found["name"]) if "name" in found else None
    category = _clean(found["category"]) if "category" in found else None
    price = parse_price(found["price"].split("\n", 1)[0]) if "price" in found else None
    if not matches:  # bare "Title, CATEGORY, 1290.0"
        parts = [p.strip() for p in text.strip().split("\n", 1)[0].split(",")]
        if len(parts) >= 3 and (bare := parse_price(parts[-1])) is not None:
            return {"name": _clean(",".join(parts[:-2])), "category": _clean(parts[-2]), "price": bare}
    if price is None and "price" not in found and (loose := _CURRENCY_PRICE_RE.search(text)):
        price = parse_price(loose.group(1) or loose.group(2))
    return {"name": name, "category": category, "price": price}


def parse_answer(text: str) -> dict:
    """Read {name, category, price} from what a model wrote; a field not found is None. Never raises."""
    try:
        return _parse(text if isinstance(text, str) else "")
    except Exception:  # noqa: BLE001 - a parser bug must cost one sample's fields, never the run
        return {"name": None, "category": None, "price": None}


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
    columns["parsed"] = [float(None not in (p.name, p.category, p.price)) for p in parsed]
    return [{key: columns[key][i] for key in SCORE_KEYS} for i in range(len(truths))]


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


def fingerprint(samples: list[Sample]) -> str:
    """sha256 over sorted (id, truth, image bytes digest): same data -> same fingerprint."""
    items = [
        [s.id, s.truth.model_dump(), sources.file_digest(Path(s.image))]
        for s in sorted(samples, key=lambda s: s.id)
    ]
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


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


class BurberryTask:
    name = "burberry"
    description = "Product name, category and full price from a Burberry catalog image (DBQ/Burberry US)."

    def __init__(self, revision: str | None = None, synthetic_size: int = 600) -> None:
        self.revision = (
            revision  # dataset revision for source "hub"; None -> $HARNESS_BURBERRY_REVISION or pinned
        )
        self.synthetic_size = synthetic_size

    # -- prompt / target / parse / score

    def messages(self, sample: Sample) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]

    def target(self, sample: Sample) -> str:
        t = sample.truth
        return f"Product: {t.name}, Category: {t.category}, Full Price: {float(t.price)}"

    def parse(self, text: str) -> Parsed:
        return Parsed(**parse_answer(text))

    def score(self, truth: Truth, parsed: Parsed) -> dict[str, float | None]:
        return score_many([truth], [parsed])[0]

    def aggregate(self, records: list[Record]) -> tuple[dict[str, MetricValue], dict[str, dict]]:
        """Means with 95 % bootstrap CIs; an errored record scores as an empty answer (a failure)."""
        scores = score_many([r.truth for r in records], [Parsed() if r.error else r.parsed for r in records])
        metrics = {key: bootstrap_ci([s[key] for s in scores if s[key] is not None]) for key in SCORE_KEYS}
        metrics["parse_rate"] = metrics["parsed"]
        per_category: dict[str, dict] = {}
        for category in sorted({r.truth.category for r in records}):
            rows = [s for r, s in zip(records, scores, strict=True) if r.truth.category == category]
            apes = [s["price_ape"] for s in rows if s["price_ape"] is not None]
            per_category[category] = {
                "n": len(rows),
                **{
                    k: sum(s[k] for s in rows) / len(rows)
                    for k in ("name_exact", "category_exact", "price_within_10")
                },
                "parse_rate": sum(s["parsed"] for s in rows) / len(rows),
                "price_ape": sum(apes) / len(apes) if apes else None,
            }
        return metrics, per_category

    # -- data

    def load(
        self,
        source: str = "hub",
        split: str = "test",
        *,
        seed: int = 0,
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
            table = catalog.build_catalog(seed, self.synthetic_size, cache)
            base, where, data_dir = table.parent, "synthetic", table.parent
        else:
            table = Path(source).expanduser()
            base, where = table.parent, str(table)
            digest = hashlib.sha256(str(table.resolve()).encode()).hexdigest()[:12]
            data_dir = cache / "local" / f"{table.stem}-{digest}"
        manifest = data_dir / f"manifest-{split}-seed{seed}{f'-limit{limit}' if limit else ''}.json"
        reused = _reuse(manifest, table) if table is not None else None
        if reused is not None:
            return reused
        df = sources.load_hub_table(HUB_ID, revision) if table is None else sources.read_table(table)
        samples, excluded = self._samples(df, split, seed, limit, base, cache / "images", where)
        info = DataInfo(
            source=source if source in ("hub", "synthetic") else str(Path(source).expanduser()),
            split=split,
            fingerprint=fingerprint(samples),
            n_samples=len(samples),
            n_excluded=len(excluded),
            synthetic=source == "synthetic",
            revision=revision,
            seed=seed,
            manifest=str(manifest),
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

    def _samples(
        self, df, split, seed, limit, base, images_dir, where
    ) -> tuple[list[Sample], list[Excluded]]:
        candidates, seen = [], set()
        for index, row in enumerate(df.to_dict("records")):
            sid = _row_id(row, index)
            sid = sid if sid not in seen else f"{sid}-{index}"
            seen.add(sid)
            group = normalise(_text(row, "title"))
            if split_of(group, seed) == split:
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
                    reason = sources.check_image(path)
                else:
                    path = fetched[url]
                    reason = path if isinstance(path, str) else None
                if reason:
                    excluded.append(Excluded(id=sid, reason=f"{where} row {index}: {reason}"))
                else:
                    samples.append(Sample(id=sid, image=str(path), truth=truth, group=group))
        return samples, excluded
