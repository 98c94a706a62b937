"""Per-sample scorers as `evaluate` Metric modules, loaded from these local files (works offline)."""
