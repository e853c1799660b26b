# task: segmentation. Figures and tables for `snakemake --report report.html`: calval scores, the
# best predictor per class, training curves, map previews.


rule report_plots:
    input:
        metrics=expand("results/calval/{predictor}/metrics.json", predictor=calval_predictors()),
        training=expand("results/models/{model}/metrics.csv", model=JOBS),
    output:
        bars=report(
            "results/reports/iou_by_class.png",
            caption="../report/iou_by_class.rst",
            category="Calval",
            labels={"figure": "IoU by class"},
        ),
        pr=report(
            "results/reports/pr_curves.png",
            caption="../report/pr_curves.rst",
            category="Calval",
            labels={"figure": "precision-recall"},
        ),
        confusion=report(
            "results/reports/confusion.png",
            caption="../report/confusion.rst",
            category="Calval",
            labels={"figure": "confusion matrices"},
        ),
        training=report(
            "results/reports/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            labels={"figure": "training curves"},
        ),
    log:
        "logs/report/plots.log",
    conda:
        "../envs/snakemap.yaml"
    message:
        "report: calval and training figures"
    shell:
        "snakemap report-plots --metrics {input.metrics:q} --training {input.training:q}"
        " --bars {output.bars:q} --pr {output.pr:q} --confusion {output.confusion:q}"
        " --training-out {output.training:q} 2> {log:q}"


# The site's map by the best model or ensemble of the summary: every candidate's map is an input.
rule report_preview:
    input:
        clean="results/clean/{site}",
        summary="results/calval/summary.csv",
        maps=expand("results/calval/{predictor}/{{site}}.tif", predictor=calval_predictors()),
    output:
        report(
            "results/reports/previews/{site}.png",
            caption="../report/preview.rst",
            category="Maps",
            labels={"site": "{site}"},
        ),
    log:
        "logs/report/preview/{site}.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        predictors=calval_predictors(),
        labels=options("labels"),
    message:
        "report: preview of {wildcards.site}"
    shell:
        "snakemap preview {wildcards.site:q} --clean {input.clean:q} --summary {input.summary:q}"
        " --predictors {params.predictors:q} --maps {input.maps:q}"
        " --out {output:q} --options {params.labels:q} 2> {log:q}"


rule report_summary:
    input:
        "results/calval/summary.csv",
    output:
        report(
            "results/reports/summary.html",
            caption="../report/summary.rst",
            category="Calval",
            labels={"figure": "summary table"},
        ),
    log:
        "logs/report/summary.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        labels=options("labels"),
    message:
        "report: calval summary table"
    shell:
        "snakemap report-table {input:q} --title 'Calval summary' --out {output:q}"
        " --options {params.labels:q} 2> {log:q}"


rule report_winners:
    input:
        "results/calval/summary.csv",
    output:
        csv="results/reports/best_by_class.csv",
        html=report(
            "results/reports/best_by_class.html",
            caption="../report/best_by_class.rst",
            category="Calval",
            labels={"figure": "best predictor per class"},
        ),
    log:
        "logs/report/best_by_class.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        labels=options("labels"),
    message:
        "report: best predictor per class"
    shell:
        "snakemap report-winners {input:q} --out {output.csv:q} --html {output.html:q}"
        " --options {params.labels:q} > {log:q} 2>&1"


# The text the report opens on: the workflow's description and the best predictor per class.
rule report_landing:
    input:
        description=workflow.source_path("../report/workflow.rst"),
        winners="results/reports/best_by_class.csv",
    output:
        LANDING,
    log:
        "logs/report/landing.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        labels=options("labels"),
    message:
        "report: the page it opens on"
    shell:
        "snakemap report-landing --description {input.description:q} --winners {input.winners:q}"
        " --out {output:q} --options {params.labels:q} 2> {log:q}"


rule report_sites:
    input:
        clean=expand("results/clean/{site}", site=CALVAL),
        stats="results/stats/bands.json",
        metrics=expand("results/calval/{predictor}/metrics.json", predictor=calval_predictors()),
    output:
        csv="results/reports/sites.csv",
        html=report(
            "results/reports/sites.html",
            caption="../report/sites.rst",
            category="Calval",
            labels={"figure": "sites: shift and scores"},
        ),
    log:
        "logs/report/sites.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("shift", "labels"),
    message:
        "report: calval sites' shift and scores"
    shell:
        "snakemap report-sites --clean {input.clean:q} --stats {input.stats:q} --metrics {input.metrics:q}"
        " --out {output.csv:q} --html {output.html:q} --options {params.options:q} > {log:q} 2>&1"


rule report_ensembles:
    input:
        expand("results/ensembles/{ensemble}/winners.json", ensemble=per_class_ensembles()),
    output:
        csv="results/reports/per_class_winners.csv",
        html=report(
            "results/reports/per_class_winners.html",
            caption="../report/per_class_winners.rst",
            category="Calval",
            labels={"figure": "per-class ensembles: out-of-fold winners"},
        ),
    log:
        "logs/report/per_class_winners.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        names=per_class_ensembles(),
        labels=options("labels"),
    message:
        "report: per-class ensembles' winners"
    shell:
        "snakemap report-ensembles {input:q} --names {params.names:q} --out {output.csv:q}"
        " --html {output.html:q} --options {params.labels:q} > {log:q} 2>&1"


rule calval_report:
    input:
        report_outputs,
        preview_outputs,
    localrule: True
    message:
        "calval and its report are up to date"
