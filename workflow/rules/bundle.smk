# Models that leave the workflow: a one-file bundle per model (weights or a booster's text model,
# config, band statistics, cleaning options, classes) and a network's ONNX export, for
# `snakemap predict --bundle/--onnx` anywhere.


rule bundle:
    input:
        ckpt="results/models/{model}/best.ckpt",
        resolved="results/models/{model}/config.yaml",
        # with predict.backend: onnxruntime, what calval and apply ran rides along as model.onnx
        onnx=lambda w: [o for o in [onnx_export(f"results/models/{w.model}/best.ckpt")] if o],
    output:
        zip="results/bundles/{model}.zip",
    log:
        "logs/bundles/{model}.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("bands", "clean", "sensors", "labels", "predict", "downscaling", "task"),
        onnx=lambda w, input: f"--onnx {shlex.quote(input.onnx[0])}" if input.onnx else "",
    message:
        "bundle {wildcards.model}"
    shell:
        "snakemap bundle --checkpoint {input.ckpt:q} --resolved {input.resolved:q} --out {output.zip:q}"
        " {params.onnx} --options {params.options:q} 2> {log:q}"


rule onnx:
    input:
        "results/bundles/{model}.zip",
    output:
        "results/bundles/{model}.onnx",
    log:
        "logs/bundles/{model}.onnx.log",
    conda:
        "../envs/snakemap.yaml"
    message:
        "ONNX export of {wildcards.model}"
    shell:
        "snakemap export-onnx --bundle {input:q} --out {output:q} 2> {log:q}"


# With predict.backend: onnxruntime, calval and apply run each network checkpoint's ONNX export
# (and, with predict.quantize: int8, its int8 quantization, calibrated once on the model's own
# training chips), never one per shard.
rule onnx_checkpoint:
    input:
        "results/models/{model}/{checkpoint}.ckpt",
    output:
        "results/models/{model}/{checkpoint}.onnx",
    log:
        "logs/models/{model}/{checkpoint}.onnx.log",
    wildcard_constraints:
        checkpoint="best|last",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("task"),
    message:
        "ONNX export of {wildcards.model}/{wildcards.checkpoint}"
    shell:
        "snakemap export-onnx --checkpoint {input:q} --out {output:q} --options {params.options:q} 2> {log:q}"


rule quantize:
    input:
        onnx="results/models/{model}/{checkpoint}.onnx",
        ckpt="results/models/{model}/{checkpoint}.ckpt",
        indexes=expand("results/chips/{scene}.index.parquet", scene=TRAIN),
        folds="results/splits/folds.parquet",
        stats="results/stats/bands.json",
    output:
        "results/models/{model}/{checkpoint}.int8.onnx",
    log:
        "logs/models/{model}/{checkpoint}.int8.log",
    wildcard_constraints:
        checkpoint="best|last",
    conda:
        "../envs/snakemap.yaml"
    message:
        "int8 quantization of {wildcards.model}/{wildcards.checkpoint}"
    shell:
        "snakemap quantize-onnx --onnx {input.onnx:q} --checkpoint {input.ckpt:q} --indexes {input.indexes:q}"
        " --folds {input.folds:q} --stats {input.stats:q} --out {output:q} 2> {log:q}"
