# Mask nodata, scale to reflectance (the scene's sensor), select bands, add indices, remap labels
# (the scene's label scheme), reproject: status.json for every scene.


# A checkpoint: calval uses only the sites whose status is ok.
checkpoint clean:
    input:
        "resources/scenes/{scene}",
    output:
        directory("results/clean/{scene}"),
    log:
        "logs/clean/{scene}.log",
    benchmark:
        "benchmarks/clean/{scene}.tsv"
    conda:
        "../envs/snakemap.yaml"
    resources:
        mem_mb=lambda w, attempt: config["resources"]["clean_mem_mb"] * attempt,
    params:
        options=clean_options,
        scene=clean_args,
    message:
        "clean {wildcards.scene}"
    shell:
        "snakemap clean {wildcards.scene:q} --acquired {input:q} --out {output:q}"
        " {params.scene} --options {params.options:q} 2> {log:q}"
