"""Any product catalog is a task: a user's catalog from a 15-line TOML file, config errors, prompt
variants, the DBQ family, and a spine that never names a catalog's fields."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import datasets
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from harness.cli import app
from harness.core.errors import HarnessError
from harness.core.run import load_run
from tasks import get_task, list_tasks

REPO = Path(__file__).resolve().parents[1]

# A user's catalog: other column names, four fields (a text, two labels, a price in EUR), images on disk.
SHOP_TOML = """\
name = "shop"
description = "A user's own catalog: title, type, colour and price in EUR."
question = "What is shown in this image?"
answer = "Title: {title}, Type: {type}, Colour: {colour}, Price: {price}"
fields = [
  {name = "title", column = "title", kind = "text", labels = ["Title", "Product"]},
  {name = "type", column = "type", kind = "label", labels = ["Type", "Category"]},
  {name = "colour", column = "colour", kind = "label", labels = ["Colour", "Color"]},
  {name = "price", column = "price_eur", kind = "price", currency = "EUR", labels = ["Price"]},
]
[data]
file = "catalog.csv"
id_column = "sku"
image_column = "image_url"
group_by = "title"
"""
COLOURS = {"Red": (200, 30, 30), "Green": (30, 160, 60), "Blue": (30, 60, 200)}
TYPES = ["Bag", "Shoe", "Hat", "Scarf"]


def write_shop(root: Path, toml: str = SHOP_TOML) -> Path:
    """catalog.csv (sku, title, type, colour, price_eur, image_url) with PNGs on disk, and shop.toml."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(60):
        kind, colour = TYPES[i % 4], list(COLOURS)[i % 3]
        Image.new("RGB", (32, 32), COLOURS[colour]).save(root / "img" / f"{i}.png")
        rows.append({"sku": f"SKU-{i:03d}", "title": f"{colour} {kind} {i // 2}", "type": kind,
                     "colour": colour, "price_eur": 50.0 + 10 * (i % 7), "image_url": f"img/{i}.png"})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "catalog.csv", index=False)
    (root / "shop.toml").write_text(toml)
    return root / "shop.toml"


def test_the_shop_toml_is_short():
    """The point of a config-driven task: a new catalog is a short file, no code."""
    assert len(SHOP_TOML.strip().splitlines()) <= 15


def test_a_user_catalog_runs_trains_and_reports_end_to_end(tmp_path, monkeypatch):
    from harness.api import evaluate, train
    from reports.compare import make_report

    monkeypatch.chdir(tmp_path)
    toml = write_shop(tmp_path / "shop")
    task = get_task(str(toml))
    assert [f.name for f in task.fields] == ["title", "type", "colour", "price"]
    kw = dict(task=str(toml), split="test", max_new_tokens=12, output_dir=tmp_path / "runs")
    base = evaluate(model="tiny", **kw).path
    config, records, metrics = load_run(base)
    assert config.task == "shop" and config.task_source == str(toml) and metrics.n == len(records) > 5
    assert set(records[0].truth) == {"title", "type", "colour", "price"}
    assert {
        "title_similarity",
        "type_exact",
        "colour_exact",
        "price_ape",
        "price_within_25",
        "parsed",
    } <= set(metrics.metrics)
    assert set(metrics.per_group) == {"type", "colour"} and config.data.units == {"price": "EUR"}
    tuned = train(model="tiny", task=str(toml), max_steps=2, n_eval=2, output_dir=tmp_path / "out").output_dir
    tuned_run = evaluate(model=str(tuned), **kw).path
    result = make_report(base, tuned_run, out=tmp_path / "report.md", n_boot=300)
    md = result.markdown.read_text()
    assert "## Per type" in md and "## Per colour" in md and "type accuracy" in md and "colour accuracy" in md
    # Cross-catalog: the adapter trained on the shop is evaluated on another task's test split.
    other = evaluate(model=str(tuned), task="burberry", data="synthetic", limit=2, max_new_tokens=6,
                     output_dir=tmp_path / "runs").path  # fmt: skip
    assert load_run(other)[0].task == "burberry" and load_run(other)[0].model.adapter == str(tuned.resolve())
    assert [p.name for p in result.plots] == [
        "price_scatter.png", "price_ape_cdf.png", "type_accuracy.png", "colour_accuracy.png"
    ]  # fmt: skip


def test_a_catalog_without_a_price_works(tmp_path):
    from harness.api import evaluate

    toml = SHOP_TOML.replace("answer = \"Title: {title}, Type: {type}, Colour: {colour}, Price: {price}\"",
                             "answer = \"Title: {title}, Colour: {colour}\"")  # fmt: skip
    toml = re.sub(r"  \{name = \"(type|price)\".*\n", "", toml)
    path = write_shop(tmp_path / "shop", toml)
    run_dir = evaluate(
        task=str(path), model="tiny", max_new_tokens=8, output_dir=tmp_path / "runs", limit=4
    ).path
    _, records, metrics = load_run(run_dir)
    assert set(records[0].truth) == {"title", "colour"}
    assert not any("price" in name for name in metrics.metrics) and "colour_exact" in metrics.metrics
    assert get_task(str(path)).parse("Title: Red Bag 1, Colour: Red, 450 dollars") == {
        "title": "Red Bag 1",
        "colour": "Red, 450 dollars",  # no price field: nothing is read as one
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace('column = "type"', 'column = "typ"'), r"needs column\(s\) typ "),
        (lambda t: t.replace('kind = "label", labels = ["Type"', 'kind = "label", scorers = ["ape"], labels = ["Type"'),
         r"fields\[1\] \(type\): unknown scorer 'ape' for kind 'label'; valid: exact"),
        (lambda t: t.replace("Price: {price}", "Price: {price} {size}"),
         r"answer: the template names \{size\}, which is not a field"),
        (lambda t: t.replace('kind = "text"', 'kind = "txt"'), r"fields\[0\] \(title\): unknown kind 'txt'; valid kinds: text, label, number, price"),
        (lambda t: t.replace('labels = ["Colour", "Color"]', 'labels = ["Colour", "Type"]'),
         r"label 'Type' belongs to both 'type' and 'colour'"),
        (lambda t: t.replace("Colour: {colour}, ", ""), r"field 'colour' is not in the template"),
    ],
)  # fmt: skip
def test_task_check_names_each_problem_in_one_line(tmp_path, change, message):
    path = write_shop(tmp_path, change(SHOP_TOML))
    result = CliRunner().invoke(app, ["task", "check", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert lines and any(re.search(message, line) for line in lines), result.output
    assert all(str(path) in line or "catalog.csv" in line for line in lines)  # the file at fault


def test_task_check_reports_every_problem_at_once(tmp_path):
    broken = SHOP_TOML.replace("Price: {price}", "Price: {cost}").replace('kind = "text"', 'kind = "text", scorers = ["exakt"]')  # fmt: skip
    result = CliRunner().invoke(app, ["task", "check", str(write_shop(tmp_path, broken))])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) >= 3  # the scorer, {cost}, and price missing from it


def test_task_check_shows_the_first_rows_as_the_model_sees_them(tmp_path):
    result = CliRunner().invoke(app, ["task", "check", str(write_shop(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "Title: Red Bag 0, Type: Bag, Colour: Red, Price: 50.0" in result.output
    assert "(ok)" in result.output and "DIFFERS" not in result.output
    assert (
        "Answer in exactly this format: Title: <title>, Type: <type>, Colour: <colour>, Price: <price>"
        in (result.output.replace("\n", ""))
    )


def test_tasks_come_from_builtins_a_directory_and_files(tmp_path, monkeypatch):
    user = tmp_path / "mytasks"
    user.mkdir()
    write_shop(user)
    monkeypatch.setenv("HARNESS_TASKS", str(user))
    rows = {name: source for name, source, _ in list_tasks()}
    assert rows["burberry"] == "built-in" and rows["shop"] == str(user)
    assert get_task("shop").name == "shop"
    out = CliRunner().invoke(app, ["tasks"])
    assert "shop" in out.output and "built-in" in out.output and "dbq:<Brand>.<Country>" in out.output


@pytest.mark.slow
def test_prompt_variants_run_on_tiny_phi3v_and_reports_say_when_they_differ(tmp_path):
    from harness.api import evaluate
    from reports.compare import make_report

    kw = dict(task="burberry", model="tiny-phi3v", data="synthetic", limit=4, max_new_tokens=6)
    runs = {
        p: evaluate(prompt=p, output_dir=tmp_path / "runs", **kw).path
        for p in ("default", "instructed", "few-shot")
    }
    assert len(set(runs.values())) == 3  # the prompt is part of the run identity
    for prompt, run_dir in runs.items():
        config, records, _ = load_run(run_dir)
        assert config.prompt_name == prompt
    few = load_run(runs["few-shot"])[1][0].prompt
    assert "<|image_1|>" in few and "<|image_2|>" in few and "<|image_3|>" in few  # 2 shots + the sample
    assert few.count("<|assistant|>") == 3 and "Product: " in few  # the shots' answers are shown
    assert "Answer in exactly this format: Product: <name>, Category: <category>, Full Price: <price>" in (
        load_run(runs["instructed"])[1][0].prompt
    )
    report = make_report(runs["default"], runs["instructed"], out=tmp_path / "r.md", n_boot=200)
    assert "Different prompts" in report.markdown.read_text()


def test_few_shot_examples_come_from_the_train_split_only():
    task = get_task("burberry", prompt="few-shot")
    test = task.load("synthetic", "test")
    train_ids = {s.id for s in get_task("burberry").load("synthetic", "train").samples}
    shots = [
        p["path"] for m in task.messages(test.samples[0])[:-1] for p in m["content"] if p["type"] == "image"
    ]
    assert len(shots) == 2 and task._shots and {s.id for s in task._shots} <= train_ids


# ------------------------------------------------------------------ the DBQ family


@pytest.mark.parametrize(
    ("name", "hub", "currency"),
    [
        ("dbq:Bottega.Veneta.United.States", "DBQ/Bottega.Veneta.Product.prices.United.States", "USD"),
        ("dbq:Gucci.Canada", "DBQ/Gucci.Product.prices.Canada", "CAD"),
        ("dbq:Louis.Vuitton.United.Kingdom", "DBQ/Louis.Vuitton.Product.prices.United.Kingdom", "GBP"),
        ("dbq:Burberry.United.Arab.Emirates", "DBQ/Burberry.Product.prices.United.Arab.Emirates", "AED"),
    ],
)
def test_dbq_names_resolve_to_dataset_and_currency(name, hub, currency):
    task = get_task(name)
    price = next(f for f in task.fields if f.kind == "price")
    assert task.name == name and task.config.data.hub == hub and price.currency == currency
    assert task.config.answer == get_task("burberry").config.answer  # derived from the one config
    with pytest.raises(HarnessError, match="no known country"):
        get_task("dbq:Gucci.Atlantis")


def test_dbq_revision_is_pinned_where_known_else_resolved_and_recorded(tmp_path, monkeypatch):
    import huggingface_hub.constants

    calls: list[str] = []
    sha = "d" * 40

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            calls.append(self.path)
            if self.path.startswith("/api/datasets/DBQ/Gucci.Product.prices.Canada/revision/main"):
                body, code = json.dumps({"id": "DBQ/Gucci.Product.prices.Canada", "sha": sha}).encode(), 200
            elif self.path.startswith("/img/"):
                body, code = _png(), 200
            else:
                body, code = b"{}", 404
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", base)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    loaded = []

    def fake_load_dataset(repo, revision=None, split=None):
        loaded.append((repo, revision))
        rows = [{"product_code": i, "title": f"Bag {i}", "category3_code": "BAGS", "full_price": 1000.0 + i,
                 "currency_code": "CAD", "imageurl": f"{base}/img/{i}.png"} for i in range(40)]  # fmt: skip
        rows[3]["category3_code"] = "N.A."  # how sibling DBQ catalogs write a missing category
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    try:
        data = get_task("dbq:Gucci.Canada").load("hub", "test", cache_dir=tmp_path)
        assert loaded == [("DBQ/Gucci.Product.prices.Canada", sha)] and data.info.revision == sha
        assert data.info.units == {"price": "CAD"} and data.samples
        assert data.info.n_filtered == 1 and "3" not in {s.id for s in data.samples}  # no label: out, counted
        calls.clear()
        pinned = get_task("dbq:Burberry.United.States")
        assert pinned.config.data.revision == "2d90840b90ebbbf6b4a1ba8b72252fd5bbe51230"
        pinned.load("hub", "test", cache_dir=tmp_path)
        assert not any(c.startswith("/api/") for c in calls)  # a pinned revision asks the hub nothing
    finally:
        server.shutdown()


def _png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ the spine knows no catalog


def test_no_catalog_field_names_in_the_spine_or_the_reports():
    """harness/ and reports/ read fields, metrics and labels from the task: they never name them."""
    offenders = []
    for folder in ("harness", "reports"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if re.search(r"category|price|burberry", line, re.IGNORECASE):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
