"""Named models, role aliases, harness.toml and training outputs: what --model resolves to."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.core.paths import cache_dir
from harness.core.schema import TRAIN_MANIFEST_FILE, DataInfo, TrainManifest
from harness.models import list_models, resolve


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch) -> Path:
    """Each test in its own working directory: harness.toml and outputs/train are read from there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_train_output(root: Path, name: str, base: str, created: str, revision: str | None = None) -> Path:
    out = root / name
    out.mkdir(parents=True)
    manifest = TrainManifest(
        base_model=base,
        base_path=f"org/{base}",
        revision=revision,
        task="burberry",
        data=DataInfo(source="synthetic", split="train", fingerprint="f", n_samples=3),
        created=created,
    )
    (out / TRAIN_MANIFEST_FILE).write_text(manifest.model_dump_json())
    return out


def test_builtins_are_pinned_with_their_crops():
    info = resolve("phi-3-vision")
    assert (info.path, info.family, info.num_crops) == ("microsoft/Phi-3-vision-128k-instruct", "phi3v", 16)
    assert re.fullmatch(r"[0-9a-f]{40}", info.revision)  # a commit: the named model cannot drift
    info = resolve("phi-3.5-vision", revision="abc1234")
    assert (info.path, info.num_crops, info.revision) == ("microsoft/Phi-3.5-vision-instruct", 4, "abc1234")


def test_base_defaults_to_phi3_vision_and_harness_toml_overrides(workdir):
    assert resolve("base").path == "microsoft/Phi-3-vision-128k-instruct"
    (workdir / "harness.toml").write_text(
        '[aliases]\nbase = "tiny"\n[revisions]\n"phi-3.5-vision" = "deadbeef"\n'
    )
    info = resolve("base")
    assert info.name == "base" and info.family == "llava"
    assert info.path == str(cache_dir() / "models" / "tiny") and (Path(info.path) / "config.json").is_file()
    assert resolve("phi-3.5-vision").revision == "deadbeef"
    assert resolve("phi-3.5-vision", revision="cafe123").revision == "cafe123"  # --revision wins


def test_tuned_resolves_to_the_newest_training_output_of_its_base(workdir):
    train = workdir / "outputs" / "train"
    write_train_output(train, "b-newer", "phi-3-vision", "2026-02-01T00:00:00", revision="r2")
    write_train_output(train, "a-older", "phi-3-vision", "2026-01-01T00:00:00")
    write_train_output(train, "c-other", "phi-3.5-vision", "2026-03-01T00:00:00")
    for name in ("tuned", "base-tuned", "phi-3-vision-tuned"):
        info = resolve(name)
        assert info.name == name
        assert info.adapter == str((train / "b-newer").resolve())
        assert (info.path, info.family, info.revision) == (
            "microsoft/Phi-3-vision-128k-instruct",
            "phi3v",
            "r2",
        )
    assert resolve("phi-3.5-vision-tuned").adapter == str((train / "c-other").resolve())
    assert resolve(str(train / "a-older")).adapter == str((train / "a-older").resolve())  # a path works too
    names = dict(list_models())
    assert "b-newer" in names["phi-3-vision-tuned"] and "phi-3.5-vision-tuned" in names


def test_tuned_follows_the_configured_base_and_train_dir(workdir):
    (workdir / "harness.toml").write_text('[aliases]\nbase = "my/model"\n[paths]\ntrain_dir = "elsewhere"\n')
    write_train_output(workdir / "elsewhere", "run1", "my/model", "2026-01-01T00:00:00")
    info = resolve("tuned")
    assert (info.path, info.adapter) == ("org/my/model", str((workdir / "elsewhere" / "run1").resolve()))


def test_tuned_without_training_output_is_a_clear_error():
    with pytest.raises(HarnessError, match=r"no training output for base 'phi-3-vision' under outputs/train"):
        resolve("tuned")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(
        HarnessError, match=r"unknown model 'gpt-5'; valid: phi-3-vision, phi-3.5-vision, tiny"
    ):
        resolve("gpt-5")


def test_hub_ids_and_local_paths(workdir):
    assert resolve("org/some-model", revision="v1").model_dump(include={"path", "revision", "family"}) == {
        "path": "org/some-model",
        "revision": "v1",
        "family": "hf",
    }
    (workdir / "local").mkdir()
    assert resolve("local").path == str((workdir / "local").resolve())


def test_bad_harness_toml_names_the_file(workdir):
    (workdir / "harness.toml").write_text("[aliases\n")
    with pytest.raises(HarnessError, match="harness.toml: not valid TOML"):
        resolve("base")
    (workdir / "harness.toml").write_text("[aliases]\nbase = 3\n")
    with pytest.raises(HarnessError, match=r"harness.toml: \[aliases\] base must be a string"):
        resolve("base")
    (workdir / "harness.toml").write_text('[aliases]\nbase = "a"\na = "base"\n')
    with pytest.raises(HarnessError, match="alias cycle base -> a -> base"):
        resolve("base")


def test_trust_remote_code_is_refused_without_a_pinned_revision():
    with pytest.raises(HarnessError, match="pinned --revision"):
        resolve("org/model", trust_remote_code=True)
    assert resolve("org/model", revision="0123abc", trust_remote_code=True).trust_remote_code


def test_listing_models_does_not_import_torch():
    code = "import sys; from harness.models import list_models; list_models(); print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"


def test_resolving_a_built_tiny_model_does_not_import_torch():
    """A finished re-run resolves its model before anything else: no torch import for that."""
    resolve("tiny-phi3v")  # built in this session's cache
    code = (
        "import sys; from harness.models import resolve; resolve('tiny-phi3v'); print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"
