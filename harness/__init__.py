"""harness: evaluation-first benchmarks for vision-language models on product catalogs."""

__version__ = "0.1.0"
