"""harness.core.allocator: large CPU buffers stay mapped between steps, only where it was asked for.

Every check runs in a fresh interpreter (malloc settings are process-wide and the suite's own
process is tuned by conftest.py), with the user's own malloc settings removed from its environment,
and measures what the kernel saw: minor page faults (ru_minflt) while a 64 MiB buffer is allocated,
written and freed again and again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.core import allocator

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(allocator._mallopt() is None, reason="glibc's mallopt only (Linux/glibc)")

# Prints "<tune_malloc's answer> <minor faults of the loop>". The loop comes after a warm-up, so a
# tuned process reuses warm buffers and faults (almost) nothing. Ten warm-up steps, not one: torch
# asks for 64-byte aligned memory, and glibc < 2.38 serves posix_memalign from a freed chunk of the
# same size only once neighbouring frees have merged it into a larger one (8 steps here).
PROBE = textwrap.dedent(
    """
    import resource, sys
    from harness.core.allocator import tune_malloc
    applied = tune_malloc() if sys.argv[1] == "tune" else None
    if sys.argv[2] == "torch":
        import torch
        torch.set_num_threads(1)
        def step():
            x = torch.ones(16 << 20)  # 64 MiB of float32, written
            del x
    else:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        def step():
            p = libc.malloc(64 << 20)
            ctypes.memset(p, 1, 64 << 20)
            libc.free(p)
    for _ in range(10):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(int(sys.argv[3])):
        step()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)

PAGES_64_MIB = (64 << 20) // os.sysconf("SC_PAGE_SIZE")


def probe(tune: bool, *, kind: str = "libc", steps: int = 20, **env: str) -> tuple[str, int]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD", allocator.ENV))
    }
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), clean.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "tune" if tune else "no", kind, str(steps)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.slow
def test_a_torch_training_step_buffer_is_reused_not_faulted_in_again():
    """50 x (allocate + free a 64 MiB tensor): untuned glibc mmaps and munmaps it every time, so
    every page faults again; tuned, the warm buffer is reused."""
    _, untuned = probe(False, kind="torch", steps=50)
    applied, tuned = probe(True, kind="torch", steps=50)
    assert applied == "True"
    assert untuned > 50 * PAGES_64_MIB // 2, untuned  # the cost this module exists to remove...
    assert tuned < untuned // 20, (tuned, untuned)  # ...gone


def test_plain_malloc_the_same():
    _, untuned = probe(False)
    applied, tuned = probe(True)
    assert applied == "True" and untuned > 20 * PAGES_64_MIB // 2 and tuned < untuned // 20


@pytest.mark.parametrize(
    "env",
    [
        {"HARNESS_MALLOC": "0"},
        {"HARNESS_MALLOC": "off"},
        {"MALLOC_ARENA_MAX": "2"},  # the user's own glibc settings win
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
    ids=lambda env: next(iter(env)),
)
def test_the_environment_turns_it_off(env):
    applied, faults = probe(True, **env)
    assert applied == "False"
    assert faults > 20 * PAGES_64_MIB // 2  # glibc's defaults: mapped and faulted in every time


def test_another_allocator_preloaded_is_left_alone():
    assert allocator.user_tuned({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}) == "LD_PRELOAD"
    assert allocator.user_tuned({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}) == "LD_PRELOAD"
    assert allocator.user_tuned({"LD_PRELOAD": "/usr/lib/libfoo.so", "PATH": "/bin"}) is None


def test_the_cli_tunes_its_process_and_importing_the_library_does_not():
    code = textwrap.dedent(
        """
        import harness, harness.api
        from harness.core import allocator
        print(allocator._applied)
        from typer.testing import CliRunner
        from harness.cli import app
        assert CliRunner().invoke(app, ["models"]).exit_code == 0
        print(allocator._applied)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop(allocator.ENV, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "True"]
