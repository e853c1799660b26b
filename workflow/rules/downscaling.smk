# task: downscaling. Each calval site's field is degraded by every model's scale and predicted back
# by the models and by interpolation; errors per predictor, ratios to the baselines, figures.


# A model's checkpoint at one site (a site whose clean is not ok gets an empty file).
rule downscale_site:
    input:
        ckpt="results/models/{model}/{checkpoint}.ckpt",
        clean="results/clean/{site}",
    output:
        "results/calval/models/{model}/{checkpoint}/{site}.tif",
    log:
        "logs/calval/models/{model}/{checkpoint}/{site}.log",
    benchmark:
        "benchmarks/calval/models/{model}/{checkpoint}/{site}.tsv"
    wildcard_constraints:
        checkpoint="best|last",
    conda:
        "../envs/snakemap.yaml"
    resources:
        gpu=CV["gpus"],
        mem_mb=lambda w, attempt: 4000 * attempt,
    params:
        options=options("downscaling", "predict"),
    message:
        "downscale {wildcards.site} with models/{wildcards.model}/{wildcards.checkpoint}"
    shell:
        "snakemap downscale --checkpoint {input.ckpt:q} --clean {input.clean:q} --out {output:q}"
        " --options {params.options:q} --gpus {resources.gpu} 2> {log:q}"


rule downscale_baseline:
    input:
        clean="results/clean/{site}",
    output:
        "results/calval/baselines/{method}-x{scale}/{site}.tif",
    log:
        "logs/calval/baselines/{method}-x{scale}/{site}.log",
    wildcard_constraints:
        method="bicubic|bilinear|nearest",
        scale="[0-9]+",
    conda:
        "../envs/snakemap.yaml"
    message:
        "baselines/{wildcards.method}-x{wildcards.scale} at {wildcards.site}"
    shell:
        "snakemap downscale --method {wildcards.method} --scale {wildcards.scale}"
        " --clean {input.clean:q} --out {output:q} 2> {log:q}"


rule downscale_metrics:
    input:
        maps=lambda w: expand(f"results/calval/{w.predictor}/{{site}}.tif", site=CALVAL),
        clean=expand("results/clean/{site}", site=CALVAL),
    output:
        json="results/calval/{predictor}/metrics.json",
        csv="results/calval/{predictor}/sites.csv",
    log:
        "logs/calval/{predictor}/metrics.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        scale=lambda w: predictor_scale(w.predictor),
        method=lambda w: (
            f"--method {split_predictor(w.predictor)[1].rsplit('-x', 1)[0]}"
            if w.predictor.startswith("baselines/")
            else ""
        ),
        selection=selection,
    message:
        "score {wildcards.predictor}"
    shell:
        "snakemap downscale-metrics --predictor {wildcards.predictor:q} --clean {input.clean:q}"
        " --maps {input.maps:q} --scale {params.scale} {params.method}"
        " --selection {params.selection:q} --out-json {output.json:q} --out-csv {output.csv:q} 2> {log:q}"


rule downscale_summary:
    input:
        expand("results/calval/{predictor}/metrics.json", predictor=calval_predictors()),
    output:
        summary="results/calval/summary.csv",
        tables=report(
            expand("results/reports/scale_x{s}.csv", s=SCALES),
            caption="../report/downscaling_table.rst",
            category="Calval",
            labels=lambda w: {"table": "errors by scale"},
        ),
    log:
        "logs/calval/summary.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        scales=" ".join(map(str, SCALES)),
    message:
        "calval summary"
    shell:
        "snakemap downscale-summary {input:q} --out {output.summary:q} --tables results/reports"
        " --scales {params.scales} > {log:q} 2>&1"


# The site's true field, the best model's map per scale, the errors of it and of bicubic, a
# scatter: every candidate's map of the site is an input.
rule downscale_figure:
    input:
        clean="results/clean/{site}",
        summary="results/calval/summary.csv",
        maps=expand("results/calval/{predictor}/{{site}}.tif", predictor=calval_predictors()),
    output:
        report(
            "results/reports/downscaling/{site}.png",
            caption="../report/downscaling_figure.rst",
            category="Maps",
            labels={"site": "{site}"},
        ),
    log:
        "logs/report/downscaling/{site}.log",
    conda:
        "../envs/snakemap.yaml"
    message:
        "report: figure of {wildcards.site}"
    shell:
        "snakemap downscale-figure --clean {input.clean:q} --summary {input.summary:q}"
        " --out {output:q} 2> {log:q}"
