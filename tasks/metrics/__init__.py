"""The scorers of tasks/scorers.py as `evaluate` modules, loadable offline from these files:
``evaluate.load("tasks/metrics/text_match.py")``. The harness calls the scorers directly."""


def string_features(datasets):
    return datasets.Features(
        {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
    )
