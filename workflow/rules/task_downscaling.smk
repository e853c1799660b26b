# task: downscaling: what the shared rules ask of a task (see common.smk), and the scales and
# predictors of its rule file downscaling.smk.

from snakemap.plan.grid import check_downscaling

# Every model's scale factor (a config mistake stops the run here, naming the key).
SCALES = check_downscaling(config, JOBS.values())
# A figure per calval site whose cleaning ended ok (see preview_outputs)
PREVIEWS = "results/reports/downscaling/{site}.png"


def task_baselines():
    """The predictors downscaling scores beside the models' checkpoints: each interpolation of
    downscaling.baselines at each model's scale."""
    return [f"baselines/{m}-x{s}" for s in SCALES for m in config["downscaling"]["baselines"]]


def report_outputs(wildcards=None):
    """The calval summary and the tables per scale (nothing without calval sites)."""
    if not calval_predictors():
        return []
    return ["results/calval/summary.csv"] + expand("results/reports/scale_x{s}.csv", s=SCALES)


def predictor_scale(predictor):
    """The scale factor of a model (its job's) or of a baseline (its name's ``-x{s}``)."""
    kind, name = split_predictor(predictor)
    if kind == "baselines":
        return int(name.rsplit("-x", 1)[1])
    return JOBS[os.path.dirname(name)].params.get("scale", 4)
