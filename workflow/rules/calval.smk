# Predict the calval sites with every model checkpoint and ensemble, draw the baselines, score all.


rule calval_model:
    input:
        ckpt="results/models/{model}/{ckpt}.ckpt",
        clean="results/clean/{site}",
    output:
        classes="results/calval/models/{model}/{ckpt}/{site}.tif",
        probs="results/calval/models/{model}/{ckpt}/probs/{site}.tif",
    params:
        options=options("predict"),
    resources:
        gpu=CV["gpus"],
        mem_mb=lambda w, attempt: 4000 * attempt,
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/calval/models/{model}/{ckpt}/{site}.log",
    benchmark:
        "benchmarks/calval/models/{model}/{ckpt}/{site}.tsv"
    shell:
        "snakemap predict --checkpoint {input.ckpt:q} --image {input.clean:q}/image.tif"
        " --classes-out {output.classes:q} --probs-out {output.probs:q}"
        " --options {params.options:q} --gpus {resources.gpu} 2> {log:q}"


rule tune_threshold:
    input:
        ckpts=ensemble_checkpoints,
        indexes=expand("results/chips/{scene}.index.parquet", scene=TRAIN),
        folds="results/splits/folds.parquet",
        stats="results/stats/bands.json",
    output:
        "results/ensembles/{ensemble}/threshold.json",
    params:
        checkpoints=lambda w, input: " ".join(f"--checkpoint {c}" for c in input.ckpts),
        args=ensemble_args,
        target=lambda w: single_target(),
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/ensembles/{ensemble}/threshold.log",
    benchmark:
        "benchmarks/ensembles/{ensemble}/threshold.tsv"
    shell:
        "snakemap tune-threshold {params.checkpoints} {params.args} --target {params.target:q}"
        " --indexes {input.indexes:q} --folds {input.folds:q} --stats {input.stats:q}"
        " --out {output:q} 2> {log:q}"


rule calval_ensemble:
    input:
        ckpts=ensemble_checkpoints,
        clean="results/clean/{site}",
        tuned=ensemble_threshold,
    output:
        classes="results/calval/ensembles/{ensemble}/{site}.tif",
        probs="results/calval/ensembles/{ensemble}/probs/{site}.tif",
    params:
        checkpoints=lambda w, input: " ".join(f"--checkpoint {c}" for c in input.ckpts),
        args=ensemble_args,
        tuned=threshold_args,
        options=options("predict"),
    resources:
        gpu=CV["gpus"],
        mem_mb=lambda w, attempt: 4000 * attempt,
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/calval/ensembles/{ensemble}/{site}.log",
    benchmark:
        "benchmarks/calval/ensembles/{ensemble}/{site}.tsv"
    shell:
        "snakemap predict {params.checkpoints} {params.args} {params.tuned} --image {input.clean:q}/image.tif"
        " --classes-out {output.classes:q} --probs-out {output.probs:q}"
        " --options {params.options:q} --gpus {resources.gpu} 2> {log:q}"


rule calval_baseline:
    input:
        clean="results/clean/{site}",
        product=baseline_maps,
    output:
        "results/calval/baselines/{baseline}/{site}.tif",
    params:
        spec=lambda w: json.dumps(BASELINES[w.baseline], sort_keys=True),
        labels=options("labels"),
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/calval/baselines/{baseline}/{site}.log",
    shell:
        "snakemap baseline {wildcards.site:q} --spec {params.spec:q} --image {input.clean:q}/image.tif"
        " --out {output:q} --options {params.labels:q} 2> {log:q}"


rule calval_metrics:
    input:
        unpack(metrics_inputs),
        tuned=predictor_threshold,
    output:
        json="results/calval/{predictor}/metrics.json",
        csv="results/calval/{predictor}/sites.csv",
    params:
        # input has no "clean" while the clean checkpoint is pending (a dry run)
        sites=lambda w, input: " ".join(os.path.basename(d) for d in input.get("clean", [])),
        labels=lambda w, input: " ".join(f"{d}/label.tif" for d in input.get("clean", [])),
        probs=lambda w, input: " ".join(["--probs", *input.get("probs", [])]) if "probs" in input.keys() else "",
        tuned=lambda w, input: f"--threshold-from {input.tuned[0]}" if input.tuned else "",
        selection=selection,
        labels_options=options("labels"),
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/calval/{predictor}/metrics.log",
    shell:
        "snakemap calval-metrics --predictor {wildcards.predictor:q} --sites {params.sites}"
        " --labels {params.labels} --maps {input.maps:q} {params.probs} {params.tuned}"
        " --selection {params.selection:q}"
        " --out-json {output.json:q} --out-csv {output.csv:q} --options {params.labels_options:q} 2> {log:q}"


rule calval_summary:
    input:
        expand("results/calval/{predictor}/metrics.json", predictor=calval_predictors()),
    output:
        "results/calval/summary.csv",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/calval/summary.log",
    shell:
        "snakemap calval-summary {input:q} --out {output:q} > {log:q} 2>&1"
