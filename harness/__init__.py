"""harness: evaluation-first benchmarks for vision-language models on product catalogs.

The library API (``harness.evaluate``, ``harness.train``, ``harness.compare``,
``harness.leaderboard``) lives in
:mod:`harness.api`; it is imported on first use so that ``harness --help`` stays fast.
"""

__version__ = "0.1.0"
__all__ = ["compare", "evaluate", "leaderboard", "train"]


def __getattr__(name: str):
    if name in __all__:
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
