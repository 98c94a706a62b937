"""Named models and role aliases: what ``--model`` means.

``--model`` takes a built-in name (``phi-3-vision``, ``tiny``...), a role alias (``base``, ``tuned``,
``<name>-tuned``), a hub id (``org/name``) or a local directory. An optional ``harness.toml`` in the
working directory overrides aliases, revisions and the training output directory::

    [aliases]
    base = "tiny-phi3v"
    [revisions]
    "phi-3-vision" = "<commit sha>"
    [paths]
    train_dir = "outputs/train"

:func:`resolve` says what a name means; :func:`pin` turns that into an identity that cannot drift:
a hub id's revision resolved to its commit sha, a local model or adapter directory identified by
the hash of its contents. A run's identity (harness.core.store.run_key) is made of pinned ModelInfo.

Nothing here imports torch at module level: ``harness --help`` and ``harness models`` stay fast.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backends.families import family_for_model_type, model_type_of_dir, named_models
from backends.families.served import SERVED as SERVED_FAMILY
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir
from harness.core.schema import TRAIN_MANIFEST_FILE, ModelInfo, TrainManifest
from harness.core.store import read_manifest

SETTINGS_FILE = "harness.toml"
DEFAULT_TRAIN_DIR = Path("outputs/train")
DEFAULT_ALIASES = {"base": "phi-3-vision"}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A training output is named <base stem>-YYYYmmdd-HHMMSS: matched exactly, so "tiny" never
# claims "tiny-phi3v-20260101-000000".
TRAIN_STAMP = r"-\d{8}-\d{6}"


def train_output_re(stem: str) -> re.Pattern[str]:
    return re.compile(re.escape(stem) + TRAIN_STAMP + "$")


def _tiny_corpus() -> Iterator[str]:
    """Text the tiny tokenizer is trained on: the default task's answers and prompts on the synthetic
    catalog, so that the tiny model can spell them after a short fine-tune."""
    from tasks import DEFAULT_TASK, get_task

    yield from ["0123456789", ".,:;$-/()'\"!?%&"]
    task = get_task(DEFAULT_TASK)
    yield " ".join(f.name for f in task.fields)
    yield " ".join(f"{f.labels[0]}:" for f in task.fields) + " $"
    for split in ("train", "test"):
        for sample in task.load("synthetic", split).samples:
            for value in sample.truth.values():
                yield from (f"${value:,.2f}", f"{value}") if isinstance(value, float) else (value,)
            yield task.target(sample)
            yield from (p.get("text", "") for m in task.messages(sample) for p in m["content"])


@dataclass
class Settings:
    aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    revisions: dict[str, str] = field(default_factory=dict)
    train_dir: Path = DEFAULT_TRAIN_DIR


def load_settings(path: Path | None = None) -> Settings:
    """``harness.toml`` of the working directory (or ``path``); defaults when there is none."""
    path = Path(path) if path else Path.cwd() / SETTINGS_FILE
    settings = Settings()
    if not path.is_file():
        return settings
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise HarnessError(f"{path}: not valid TOML: {err}") from err
    for table in ("aliases", "revisions", "paths"):
        if not isinstance(data.get(table, {}), dict):
            raise HarnessError(f"{path}: [{table}] must be a table")
        for key, value in data.get(table, {}).items():
            if not isinstance(value, str):
                raise HarnessError(f"{path}: [{table}] {key} must be a string, got {value!r}")
    settings.aliases.update(data.get("aliases", {}))
    settings.revisions.update(data.get("revisions", {}))
    if "train_dir" in data.get("paths", {}):
        settings.train_dir = Path(data["paths"]["train_dir"])
    return settings


def canonical(name: str, settings: Settings | None = None) -> str:
    """Follow aliases to the name they stand for: ``base`` -> ``phi-3-vision``."""
    settings = settings or load_settings()
    seen = [name]
    while name in settings.aliases:
        name = settings.aliases[name]
        if name in seen:
            raise HarnessError(f"{SETTINGS_FILE}: alias cycle {' -> '.join([*seen, name])}")
        seen.append(name)
    if name == "tuned":
        return f"{canonical('base', settings)}-tuned"
    return name


def train_outputs(settings: Settings | None = None) -> list[tuple[Path, TrainManifest]]:
    """Every training output under the train directory, oldest first."""
    settings = settings or load_settings()
    found = []
    for manifest_path in sorted(settings.train_dir.glob(f"*/{TRAIN_MANIFEST_FILE}")):
        found.append((manifest_path.parent, read_manifest(manifest_path)))
    return sorted(found, key=lambda item: (item[1].created, item[0].name))


def _tuned(name: str, base: str, settings: Settings, build: bool = True) -> ModelInfo:
    # The manifest names its base exactly: "tiny" never claims an output of "tiny-phi3v".
    outputs = [(d, m) for d, m in train_outputs(settings) if m.base_model == base]
    if not outputs:
        raise HarnessError(
            f"model {name!r}: no training output for base {base!r} under {settings.train_dir} "
            f"(no */{TRAIN_MANIFEST_FILE} with base_model={base!r}); train one first"
        )
    adapter_dir, manifest = outputs[-1]
    return _on_base(adapter_dir, manifest, settings, build)


def train_stem(base: str) -> str:
    """The directory-name stem of training outputs of ``base``: a local path's name, a hub id's org--name."""
    return Path(base).name if Path(base).exists() else base.replace("/", "--")


def _on_base(adapter_dir: Path, manifest: TrainManifest, settings: Settings, build: bool = True) -> ModelInfo:
    if manifest.base_model in named_models():
        info = _builtin(manifest.base_model, settings, build)
    else:
        info = ModelInfo(name=manifest.base_model, path=manifest.base_path, family=manifest.family)
    update = {"adapter": str(adapter_dir.resolve())}
    if manifest.revision:
        update["revision"] = manifest.revision
    return info.model_copy(update=update)


def _builtin(name: str, settings: Settings, build: bool = True) -> ModelInfo:
    family, spec = named_models()[name]
    if spec.build is None:
        path = str(spec.path)
    else:  # built offline into the cache; a lookup (build=False) only needs where
        local = cache_dir() / "models" / name
        path = str(spec.build(local, _tiny_corpus()) if build else local)
    revision = settings.revisions.get(name, spec.revision)
    return ModelInfo(name=name, path=path, family=family.name, revision=revision, num_crops=spec.num_crops)


SERVED = "openai:"


def _served(target: str) -> ModelInfo:
    """``openai:<model>@<base_url>``: a model an OpenAI-compatible server (vLLM, SGLang, TGI,
    `transformers serve`) serves; the API key comes from the environment, never from the name."""
    model, _, url = target.removeprefix(SERVED).partition("@")
    if not model or not url.startswith(("http://", "https://")):
        raise HarnessError(
            f"model {target!r}: write {SERVED}<served model name>@<http(s)://host:port/v1>, "
            f"e.g. {SERVED}microsoft/Phi-3-vision-128k-instruct@http://127.0.0.1:8000/v1"
        )
    return ModelInfo(name=target, path=model, family=SERVED_FAMILY, endpoint=url.rstrip("/"))


def _local(path: Path, settings: Settings, build: bool = True) -> ModelInfo:
    if (path / TRAIN_MANIFEST_FILE).is_file():  # a training output: its adapter on its base
        return _on_base(path, read_manifest(path / TRAIN_MANIFEST_FILE), settings, build)
    family = family_for_model_type(model_type_of_dir(path))
    return ModelInfo(name=str(path), path=str(path.resolve()), family=family.name)


def resolve(
    name: str, revision: str | None = None, trust_remote_code: bool = False, *, build: bool = True
) -> ModelInfo:
    """What ``--model name`` loads. Unknown names raise a HarnessError listing the valid ones.

    ``build=False`` (finding a model's runs) never builds a tiny model, only says where it lives.
    """
    settings = load_settings()
    target = canonical(name, settings)
    if target.startswith(SERVED):
        info = _served(target)
    elif target in named_models():
        info = _builtin(target, settings, build)
    elif target.endswith("-tuned"):
        info = _tuned(name, canonical(target.removesuffix("-tuned"), settings), settings, build)
    elif Path(target).exists():
        info = _local(Path(target), settings, build)
    elif _HUB_ID.match(target):
        info = ModelInfo(name=target, path=target)
    else:
        valid = ", ".join(
            [
                *named_models(),
                *settings.aliases,
                "tuned",
                "<name>-tuned",
                "<org/name>",
                "<path>",
                f"{SERVED}<model>@<url>",
            ]
        )
        raise HarnessError(f"unknown model {name!r}; valid: {valid}")
    update: dict = {"name": name, "trust_remote_code": trust_remote_code}
    if revision:
        update["revision"] = revision
    info = info.model_copy(update=update)
    check_remote_code(info)
    return info


_SHA = re.compile(r"^[0-9a-f]{7,40}$")


def check_remote_code(info: ModelInfo) -> None:
    """Running a repository's own code is only allowed at a pinned revision (a commit, not a branch)."""
    if info.trust_remote_code and (not info.revision or not _SHA.match(info.revision)):
        raise HarnessError(
            f"model {info.name!r}: --trust-remote-code runs code from {info.path!r} and needs a pinned "
            "--revision (a commit sha), so that the code cannot change under you"
        )


def list_models() -> list[tuple[str, str]]:
    """(name, one-line description) of every named model (with its family; README "Model families" says
    what the tests show for each), alias and training output: ``harness models``."""
    settings = load_settings()
    rows = [
        (name, f"[{family.name}] {spec.description}" + (f" ({spec.path}@{spec.revision[:7]})" if spec.path and spec.revision else ""))
        for name, (family, spec) in named_models().items()
    ]  # fmt: skip
    rows += [(alias, f"alias of {target}") for alias, target in sorted(settings.aliases.items())]
    rows.append(("tuned", f"alias of {canonical('base', settings)}-tuned"))
    try:
        outputs = train_outputs(settings)
    except HarnessError:
        outputs = []
    for name in sorted({m.base_model for _, m in outputs}):
        newest = [d for d, m in outputs if m.base_model == name][-1]
        rows.append((f"{name}-tuned", f"newest training output on {name}: {newest}"))
    return rows
