# task: segmentation: what the shared rules ask of a task (see common.smk), for its rule files
# calval.smk and report.smk.


def task_baselines():
    """The predictors segmentation scores beside the models' checkpoints: ensembles, baselines."""
    return [f"ensembles/{n}" for n in ENSEMBLES] + [f"baselines/{n}" for n in BASELINES]


# A preview per calval site whose cleaning ended ok (see preview_outputs)
PREVIEWS = "results/reports/previews/{site}.png"


def report_outputs(wildcards=None):
    """The calval summary and the report's tables and figures (nothing without calval sites)."""
    if not calval_predictors():
        return []
    return [
        "results/calval/summary.csv",
        "results/reports/summary.html",
        "results/reports/best_by_class.html",
        "results/reports/sites.html",
        "results/reports/iou_by_class.png",
        LANDING,
    ] + (["results/reports/per_class_winners.html"] if per_class_ensembles() else [])


def per_class_ensembles():
    """The ensembles that map each class by its out-of-fold winner (`combine: per_class`)."""
    return [n for n, e in ENSEMBLES.items() if e.get("combine") == "per_class"]
