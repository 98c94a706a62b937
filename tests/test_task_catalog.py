"""The synthetic catalog: deterministic metadata, real images, grouped variants, labelled synthetic."""

from __future__ import annotations

import hashlib
from collections import Counter

from PIL import Image

from conftest import assert_disjoint, make_task
from tasks.data import SPLITS
from tasks.synthetic import CATEGORIES, build_catalog, generate_rows


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_metadata_is_byte_identical_per_seed(tmp_path):
    a = build_catalog(seed=3, n=40, cache_dir=tmp_path / "a")
    b = build_catalog(seed=3, n=40, cache_dir=tmp_path / "b")
    c = build_catalog(seed=4, n=40, cache_dir=tmp_path / "a")
    assert _digest(a) == _digest(b) and _digest(a) != _digest(c)
    assert a.parent.name == "seed3-n40"
    first = a.stat().st_mtime_ns
    assert (
        build_catalog(seed=3, n=40, cache_dir=tmp_path / "a") == a and a.stat().st_mtime_ns == first
    )  # built once


def test_rows_look_like_the_real_catalog():
    rows = generate_rows(seed=0, n=600)
    assert len(rows) == 600 and len({r["product_code"] for r in rows}) == 600
    assert {r["category1_code"] for r in rows} == {"WOMAN", "MAN", "KIDS"}
    assert 10 <= len({r["category3_code"] for r in rows}) <= 14
    prices = [r["full_price"] for r in rows]
    assert 100 <= min(prices) and max(prices) <= 6000 and all(p % 10 == 0 for p in prices)
    groups = Counter(r["title"] for r in rows)
    assert max(groups.values()) > 1  # colour variants share a title
    for title in groups:  # variants share category and price, differ in colour
        variants = [r for r in rows if r["title"] == title]
        assert len({(r["category3_code"], r["full_price"]) for r in variants}) == 1
        assert len({r["colour"] for r in variants}) == len(variants)
    cashmere = [r["full_price"] for r in rows if r["title"] == "Cashmere Scarf"]
    canvas = [r["full_price"] for r in rows if r["title"] == "Canvas Card Case"]
    if cashmere and canvas:
        assert cashmere[0] > canvas[0]


def test_images_show_the_category(tmp_path):
    meta = build_catalog(seed=0, n=120, cache_dir=tmp_path)
    rows = generate_rows(seed=0, n=120)
    by_cat: dict[str, list] = {}
    for r in rows:
        img = Image.open(meta.parent / r["image"])
        assert img.size == (128, 128)
        # the silhouette: which pixels differ from the background
        mask = tuple(1 if px != (242, 240, 236) else 0 for px in img.convert("RGB").getdata())
        by_cat.setdefault(r["category3_code"], []).append(sum(mask))
    assert len(by_cat) >= 10
    means = {cat: sum(v) / len(v) for cat, v in by_cat.items()}
    assert means["WALLETS & CARD CASES"] < means["TRENCH COATS"]  # a card case is smaller than a coat
    assert set(CATEGORIES) >= set(by_cat)


def test_synthetic_load_split_and_labels(tmp_path):
    task = make_task(synthetic_size=200)
    data = {split: task.load("synthetic", split, cache_dir=tmp_path) for split in SPLITS}
    assert_disjoint({k: v.samples for k, v in data.items()})
    assert sum(len(d.samples) for d in data.values()) == 200
    assert len(data["test"].samples) > 10 and len(data["train"].samples) > len(data["test"].samples)
    info = data["test"].info
    assert info.synthetic and info.source == "synthetic" and info.n_excluded == 0
    again = task.load("synthetic", "test", cache_dir=tmp_path)
    assert again.info.fingerprint == info.fingerprint and info.split_seed == task.split_seed == 0
    assert [s.id for s in again.samples] == sorted(s.id for s in again.samples)
    other = make_task(synthetic_size=200, split_seed=1)  # the task's own seed: another test set
    moved = other.load("synthetic", "test", cache_dir=tmp_path)
    assert moved.info.fingerprint != info.fingerprint and moved.info.split_seed == 1
    limited = task.load("synthetic", "test", limit=5, cache_dir=tmp_path)
    assert [s.id for s in limited.samples] == [s.id for s in again.samples[:5]]
