# Models that leave the workflow: a one-file bundle per model (weights or a booster's text model,
# config, band statistics, cleaning options, classes) and a network's ONNX export, for
# `snakemap predict --bundle/--onnx` anywhere.


rule bundle:
    input:
        ckpt="results/models/{model}/best.ckpt",
        resolved="results/models/{model}/config.yaml",
    output:
        zip="results/bundles/{model}.zip",
    log:
        "logs/bundles/{model}.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("bands", "clean", "sensors", "labels", "predict", "downscaling", "task"),
    message:
        "bundle {wildcards.model}"
    shell:
        "snakemap bundle --checkpoint {input.ckpt:q} --resolved {input.resolved:q} --out {output.zip:q}"
        " --options {params.options:q} 2> {log:q}"


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
