"""Data sources: hub (load_dataset stubbed, images from a real local HTTP server), local tables, split."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pandas as pd
import pytest
from PIL import Image

from conftest import assert_disjoint, make_task
from harness.core.errors import HarnessError
from tasks import sources
from tasks.data import SPLITS, split_of
from tasks.text import normalise


def _png(colour=(200, 30, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def _titles_in(split: str, n: int) -> list[str]:
    """Titles whose group falls in `split` for seed 0 (found, not hard-coded)."""
    return [t for t in (f"Check Scarf {k}" for k in range(500)) if split_of(normalise(t), 0) == split][:n]


@pytest.fixture
def server():
    hits: Counter = Counter()
    flaky: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits[self.path] += 1
            if self.path.startswith("/good"):
                body, code = _png(), 200
            elif self.path == "/corrupt":
                body, code = b"\x89PNG\r\n\x1a\n this is not an image", 200
            elif self.path == "/slow":
                time.sleep(1.0)
                body, code = _png(), 200
            elif self.path == "/flaky":
                flaky["n"] += 1
                body, code = (_png(), 200) if flaky["n"] > 1 else (b"busy", 503)
            else:
                body, code = b"nope", 404
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except BrokenPipeError:  # the client gave up (the timeout case)
                pass

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fast_downloads(monkeypatch):
    monkeypatch.setattr(sources, "TIMEOUT", (0.3, 0.3))
    monkeypatch.setattr(sources, "RETRIES", 1)
    monkeypatch.setattr(sources, "BACKOFF", 0.0)


def test_hub_downloads_exclusions_and_cache(server, fast_downloads, monkeypatch, tmp_path):
    base, hits = server
    paths = ["/good1", "/good2", "/flaky", "/missing", "/corrupt", "/slow"]
    titles = _titles_in("test", 7)
    rows = [
        {"product_code": 100 + i, "title": t, "category3_code": "SCARVES", "category1_code": "WOMAN",
         "category2_code": "ACCESSORIES", "full_price": 450.0 + i, "imageurl": url}
        for i, (t, url) in enumerate(zip(titles, [base + p for p in paths] + ["N.A."], strict=True))
    ]  # fmt: skip
    calls = []

    def fake_load_dataset(repo, revision=None, split=None):
        calls.append((repo, revision, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = make_task(revision="abc123" * 6 + "abcd")  # a pinned commit: used as is, nothing resolved
    data = task.load("hub", "test", cache_dir=tmp_path)
    assert calls == [("DBQ/Burberry.Product.prices.United.States", "abc123" * 6 + "abcd", "train")]
    assert sorted(s.id for s in data.samples) == ["100", "101", "102"]
    reasons = {e.id: e.reason for e in data.excluded}
    assert set(reasons) == {"103", "104", "105", "106"}
    assert "HTTP 404" in reasons["103"] and "not a readable image" in reasons["104"]
    assert "ReadTimeout" in reasons["105"] and "not an http(s) URL" in reasons["106"]
    assert (
        data.info.n_excluded == 4 and data.info.revision == "abc123" * 6 + "abcd" and not data.info.synthetic
    )
    manifest = json.loads(open(data.info.manifest).read())
    assert {e["id"] for e in manifest["excluded"]} == set(reasons) and manifest["n_samples"] == 3
    assert all(Image.open(s.image).size == (8, 8) for s in data.samples)
    assert hits["/flaky"] == 2  # retried after a 503
    before = sum(hits[p] for p in ("/good1", "/good2", "/flaky"))
    again = task.load("hub", "test", cache_dir=tmp_path)
    assert sum(hits[p] for p in ("/good1", "/good2", "/flaky")) == before  # cached: nothing re-downloaded
    assert again.info.fingerprint == data.info.fingerprint
    limited = task.load("hub", "test", cache_dir=tmp_path, limit=2)
    assert [s.id for s in limited.samples] == [
        "100",
        "101",
    ] and limited.info.fingerprint != data.info.fingerprint


def test_hub_offline_without_cache_suggests_synthetic(tmp_path):
    # A revision that cannot exist: offline (conftest) and never cached, so the real loader must fail.
    with pytest.raises(HarnessError, match="--data synthetic"):
        make_task(revision="0" * 40).load("hub", "test", cache_dir=tmp_path)


def _truncated_jpeg() -> bytes:
    """Half a JPEG: Image.verify() passes it, decoding it fails (it would crash training mid-epoch)."""
    import numpy as np

    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG")
    data = buf.getvalue()[: len(buf.getvalue()) // 2]
    with Image.open(io.BytesIO(data)) as im:
        im.verify()  # the point: a check by verify() alone lets it through
    return data


def _write_catalog(folder, n=40):
    (folder / "img").mkdir()
    rows = []
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 5, 0, 0)).save(folder / "img" / f"{i}.png")
        rows.append({"product_code": 500 + i, "title": f"Wool Cape {i // 2}", "category3_code": "PONCHOS & CAPES",
                     "full_price": 1000.0 + i, "image": f"img/{i}.png"})  # fmt: skip
    rows[3]["full_price"] = "abc"
    (folder / "img" / "5.png").write_bytes(b"garbage")
    rows[1]["image"] = "img/1.jpg"
    (folder / "img" / "1.jpg").write_bytes(_truncated_jpeg())
    rows[7]["image"] = str(folder / "img" / "7.png")  # absolute paths work too
    rows[9]["image"] = "img/does-not-exist.png"
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_local_tables(fmt, tmp_path):
    df = _write_catalog(tmp_path)
    path = tmp_path / f"catalog.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        df.astype({"full_price": str}).to_parquet(path)
    else:
        df.to_json(path, orient="records", lines=True)
    task = make_task()
    splits = {split: task.load(str(path), split, cache_dir=tmp_path / "cache") for split in SPLITS}
    assert_disjoint({k: v.samples for k, v in splits.items()})
    kept = {s.id for d in splits.values() for s in d.samples}
    excluded = {e.id: e.reason for d in splits.values() for e in d.excluded}
    assert set(excluded) == {"501", "503", "505", "509"}
    assert kept == {str(500 + i) for i in range(40)} - set(excluded)
    assert "row 3" in excluded["503"] and "full_price" in excluded["503"]
    assert "not a readable image" in excluded["505"] and "not found" in excluded["509"]
    assert (
        "not a readable image" in excluded["501"] and "1.jpg" in excluded["501"]
    )  # truncated: fully decoded
    assert sum(d.info.n_excluded for d in splits.values()) == 4
    sample = next(s for d in splits.values() for s in d.samples if s.id == "507")
    assert sample.truth["price"] == 1007.0 and sample.group == "wool cape 3"


def test_missing_columns_named(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame([{"title": "x", "price": 1}]).to_csv(path, index=False)
    with pytest.raises(
        HarnessError,
        match=r"bad\.csv: task 'burberry' needs column\(s\) category3_code, full_price, image or imageurl",
    ):
        make_task().load(str(path), "test", cache_dir=tmp_path)
    with pytest.raises(HarnessError, match="unknown split"):
        make_task().load(str(path), "dev", cache_dir=tmp_path)


def test_split_is_stable_grouped_and_proportioned():
    groups = [f"product {i}" for i in range(4000)]
    counts = Counter(split_of(g, 0) for g in groups)
    assert 0.17 < counts["test"] / 4000 < 0.23 and 0.08 < counts["validation"] / 4000 < 0.12
    assert [split_of(g, 0) for g in groups] == [split_of(g, 0) for g in groups]
    assert [split_of(g, 0) for g in groups] != [split_of(g, 1) for g in groups]  # the seed matters
    assert normalise("Check  Cashmere-Scarf ") == normalise("check cashmere scarf")


def test_unchanged_local_table_is_reused_and_a_changed_image_reloads(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    df = _write_catalog(folder).iloc[10:]  # only good rows: nothing excluded
    path = folder / "catalog.csv"
    df.to_csv(path, index=False)
    task = make_task()
    first = task.load(str(path), "train", cache_dir=tmp_path / "cache")

    def no_reading(*args, **kwargs):
        raise AssertionError("the table was read again")

    with monkeypatch.context() as patch:
        patch.setattr(sources, "read_table", no_reading)
        again = task.load(str(path), "train", cache_dir=tmp_path / "cache")
    assert again.samples == first.samples and again.info == first.info

    changed = first.samples[0].image
    Image.new("RGB", (8, 8), (0, 0, 255)).save(changed)  # new bytes: the fingerprint must follow
    reloaded = task.load(str(path), "train", cache_dir=tmp_path / "cache")
    assert reloaded.info.fingerprint != first.info.fingerprint
