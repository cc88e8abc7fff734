"""The demo models ``python -m demo_models MODEL`` knows: name -> ``module:builder``.

A builder has the signature ``build(model, data, seed, monitors, n_samples=None) ->
demo_models.common.Experiment`` and is imported only when its model runs, so one model's import cost or failure
never touches another. ``n_samples`` draws that many rows of the synthetic data instead of the demo's default
(the tests train small versions); the real data sets are always used whole.
"""

MODELS: dict[str, str] = {
    "dcnv2": "demo_models.dcnv2:build",
    "dcnv2_per_feature": "demo_models.dcnv2_per_feature:build",
    "din": "demo_models.sequence_demo:build",
    "tin": "demo_models.sequence_demo:build",
    "shared_bottom": "demo_models.multitask:build",
    "mmoe": "demo_models.multitask:build",
    "ple": "demo_models.multitask:build",
    "stem": "demo_models.multitask:build",
}

#: The data sets each model accepts; the first is its default.
DATASETS: dict[str, tuple[str, ...]] = {
    "dcnv2": ("synthetic", "criteo-sample"),
    "dcnv2_per_feature": ("synthetic", "criteo-sample"),
    "din": ("synthetic", "alimama-sample", "movielens"),
    "tin": ("synthetic", "alimama-sample", "movielens"),
    "shared_bottom": ("synthetic", "synthetic-pairs", "census-income"),
    "mmoe": ("synthetic", "synthetic-pairs", "census-income"),
    "ple": ("synthetic", "synthetic-pairs", "census-income"),
    "stem": ("synthetic", "synthetic-pairs", "census-income"),
}
