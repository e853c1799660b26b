# task: segmentation (functions in task_segmentation.smk). Predict the calval sites with every model checkpoint and ensemble, draw the
# baselines, score all.


# A model's checkpoint or an ensemble, at one site (a site whose clean is not ok gets empty files).
rule calval_predict:
    input:
        unpack(predictor_inputs),
        clean="results/clean/{site}",
    output:
        classes="results/calval/{predictor}/{site}.tif",
        probs="results/calval/{predictor}/probs/{site}.tif",
    log:
        "logs/calval/{predictor}/{site}.log",
    benchmark:
        "benchmarks/calval/{predictor}/{site}.tsv"
    wildcard_constraints:
        predictor=APPLIED_PATTERN,
    conda:
        "../envs/snakemap.yaml"
    threads: PREDICT.threads
    resources:
        gpu=CV["gpus"],
        mem_mb=lambda w, attempt: 4000 * attempt,
    params:
        predictor=predictor_args,
        options=colored("predict"),
    message:
        "predict {wildcards.site} with {wildcards.predictor}"
    shell:
        "snakemap predict {params.predictor} --clean {input.clean:q}"
        " --classes-out {output.classes:q} --probs-out {output.probs:q}"
        " --options {params.options:q} --gpus {resources.gpu} --threads {threads} 2> {log:q}"


rule tune_threshold:
    input:
        ckpts=ensemble_checkpoints,
        indexes=expand("results/chips/{scene}.index.parquet", scene=TRAIN),
        folds="results/splits/folds.parquet",
        stats="results/stats/bands.json",
    output:
        "results/ensembles/{ensemble}/threshold.json",
    log:
        "logs/ensembles/{ensemble}/threshold.log",
    benchmark:
        "benchmarks/ensembles/{ensemble}/threshold.tsv"
    conda:
        "../envs/snakemap.yaml"
    params:
        checkpoints=lambda w, input: " ".join(f"--checkpoint {c}" for c in input.ckpts),
        args=ensemble_args,
        target=lambda w: single_target(),
        options=options(extra=tta_option()),
    message:
        "tune the threshold of ensembles/{wildcards.ensemble}"
    shell:
        "snakemap tune-threshold {params.checkpoints} {params.args} --target {params.target:q}"
        " --indexes {input.indexes:q} --folds {input.folds:q} --stats {input.stats:q}"
        " --options {params.options:q} --out {output:q} 2> {log:q}"


rule tune_weights:
    input:
        ckpts=ensemble_checkpoints,
        indexes=expand("results/chips/{scene}.index.parquet", scene=TRAIN),
        folds="results/splits/folds.parquet",
        stats="results/stats/bands.json",
    output:
        "results/ensembles/{ensemble}/weights.json",
    log:
        "logs/ensembles/{ensemble}/weights.log",
    benchmark:
        "benchmarks/ensembles/{ensemble}/weights.tsv"
    conda:
        "../envs/snakemap.yaml"
    params:
        checkpoints=lambda w, input: " ".join(f"--checkpoint {c}" for c in input.ckpts),
        members=ensemble_args,
        options=options("labels", "bands", extra=tta_option()),
    message:
        "tune the weights of ensembles/{wildcards.ensemble}"
    shell:
        "snakemap tune-weights {params.checkpoints} {params.members}"
        " --indexes {input.indexes:q} --folds {input.folds:q} --stats {input.stats:q}"
        " --options {params.options:q} --out {output:q} 2> {log:q}"


rule tune_winners:
    input:
        ckpts=ensemble_checkpoints,
        indexes=expand("results/chips/{scene}.index.parquet", scene=TRAIN),
        folds="results/splits/folds.parquet",
        stats="results/stats/bands.json",
    output:
        "results/ensembles/{ensemble}/winners.json",
    log:
        "logs/ensembles/{ensemble}/winners.log",
    benchmark:
        "benchmarks/ensembles/{ensemble}/winners.tsv"
    conda:
        "../envs/snakemap.yaml"
    params:
        checkpoints=lambda w, input: " ".join(f"--checkpoint {c}" for c in input.ckpts),
        rules=ensemble_args,
        precedence=ensemble_precedence,
        labels=options("labels", extra=tta_option()),
    message:
        "per-class winners of ensembles/{wildcards.ensemble}"
    shell:
        "snakemap tune-winners {params.checkpoints} {params.rules} {params.precedence}"
        " --indexes {input.indexes:q} --folds {input.folds:q} --stats {input.stats:q}"
        " --options {params.labels:q} --out {output:q} 2> {log:q}"


rule calval_baseline:
    input:
        clean="results/clean/{site}",
        product=baseline_maps,
    output:
        "results/calval/baselines/{baseline}/{site}.tif",
    log:
        "logs/calval/baselines/{baseline}/{site}.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        spec=lambda w: json.dumps(BASELINES[w.baseline], sort_keys=True),
        labels=options("labels"),
    message:
        "baselines/{wildcards.baseline} at {wildcards.site}"
    shell:
        "snakemap baseline {wildcards.site:q} --spec {params.spec:q} --clean {input.clean:q}"
        " --out {output:q} --options {params.labels:q} 2> {log:q}"


rule calval_metrics:
    input:
        unpack(metrics_inputs),
        tuned=predictor_threshold,
    output:
        json="results/calval/{predictor}/metrics.json",
        csv="results/calval/{predictor}/sites.csv",
    log:
        "logs/calval/{predictor}/metrics.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        probs=lambda w, input: " ".join(["--probs", *input.probs]) if "probs" in input.keys() else "",
        tuned=lambda w, input: f"--threshold-from {input.tuned[0]}" if input.tuned else "",
        selection=selection,
        labels_options=options("labels"),
    message:
        "score {wildcards.predictor}"
    shell:
        "snakemap calval-metrics --predictor {wildcards.predictor:q} --clean {input.clean:q}"
        " --maps {input.maps:q} {params.probs} {params.tuned}"
        " --selection {params.selection:q}"
        " --out-json {output.json:q} --out-csv {output.csv:q} --options {params.labels_options:q} 2> {log:q}"


rule calval_summary:
    input:
        expand("results/calval/{predictor}/metrics.json", predictor=calval_predictors()),
    output:
        "results/calval/summary.csv",
    log:
        "logs/calval/summary.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    message:
        "calval summary"
    shell:
        "snakemap calval-summary {input:q} --out {output:q} > {log:q} 2>&1"
