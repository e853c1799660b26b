# Training chips, three files per scene, and AOI-grouped cross-validation folds.


rule chips:
    input:
        "results/clean/{scene}",
    output:
        image="results/chips/{scene}.image.npy",
        label="results/chips/{scene}.label.npy",
        index="results/chips/{scene}.index.parquet",
    log:
        "logs/chips/{scene}.log",
    benchmark:
        "benchmarks/chips/{scene}.tsv"
    conda:
        "../envs/snakemap.yaml"
    resources:
        mem_mb=lambda w, attempt: config["resources"]["chips_mem_mb"] * attempt,
    params:
        options=options("chips", "labels", "task"),
    message:
        "chips of {wildcards.scene}"
    shell:
        "snakemap chips {wildcards.scene:q} --clean {input:q} --image {output.image:q}"
        " --label {output.label:q} --index {output.index:q}"
        " --options {params.options:q} 2> {log:q}"


rule folds:
    input:
        index=expand("results/chips/{scene}.index.parquet", scene=TRAIN),
        manifest=config["manifest"],
    output:
        "results/splits/folds.parquet",
    log:
        "logs/folds/folds.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("splits", "task"),
    message:
        "cross-validation folds"
    shell:
        "snakemap folds {input.index:q} --manifest {input.manifest:q} --out {output:q}"
        " --options {params.options:q} 2> {log:q}"
