# Models that leave the workflow: a one-file bundle per model (weights, config, band statistics,
# cleaning options, classes) and its ONNX export, for `snakemap predict --bundle/--onnx` anywhere.


rule bundle:
    input:
        ckpt="results/models/{model}/best.ckpt",
        resolved="results/models/{model}/config.yaml",
    output:
        zip="results/bundles/{model}.zip",
        onnx="results/bundles/{model}.onnx",
    log:
        "logs/bundles/{model}.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("bands", "clean", "sensors", "labels", "predict", "downscaling", "task"),
    shell:
        "snakemap bundle --checkpoint {input.ckpt:q} --resolved {input.resolved:q} --out {output.zip:q}"
        " --onnx-out {output.onnx:q} --options {params.options:q} 2> {log:q}"
