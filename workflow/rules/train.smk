# One training job per model (and fold): segmentation-models-pytorch with Lightning, resumable.


rule train:
    input:
        train=expand("results/chips/{scene}.index.parquet", scene=TRAIN),
        calval=calval_chips,
        folds="results/splits/folds.parquet",
        stats="results/stats/bands.json",
    output:
        best="results/models/{model}/best.ckpt",
        last="results/models/{model}/last.ckpt",
        metrics="results/models/{model}/metrics.csv",
        config="results/models/{model}/config.yaml",
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/train/{model}.tsv"
    # Training is the long pole: start every training job before predictions that could wait.
    priority: 10
    conda:
        "../envs/snakemap.yaml"
    threads: lambda w: job(w).params["cpus"]
    resources:
        gpu=lambda w: job(w).params["gpus"],
        cpus_per_gpu=lambda w: job(w).params["cpus"] if job(w).params["gpus"] else 0,
        mem_mb=lambda w, attempt: job(w).params["mem_mb"] * attempt,
        runtime=lambda w: job(w).params["runtime"],
    params:
        # what the job learns; its resources below are not in it, so raising them reruns nothing
        job=job_json,
        labels=options("labels", "task"),
    message:
        "train {wildcards.model}"
    shell:
        "snakemap train --job {params.job:q} --options {params.labels:q}"
        " --train-indexes {input.train:q} --calval-indexes {input.calval:q}"
        " --folds {input.folds:q} --stats {input.stats:q}"
        " --out results/models/{wildcards.model} --gpus {resources.gpu} --cpus {threads} 2> {log:q}"


rule train_all:
    default_target: False
    input:
        model_outputs(),
    localrule: True
    message:
        "every model is trained"


rule models_table:
    output:
        "results/models/models.tsv",
    log:
        "logs/models/models_table.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        models=options("models", "splits"),
    message:
        "table of the model grid"
    shell:
        "snakemap models-table --options {params.models:q} --out {output:q} 2> {log:q}"
