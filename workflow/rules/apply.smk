# Apply predictors to the apply scenes: one job per shard of scenes, then a mosaic and progress.


rule apply_shard:
    input:
        unpack(predictor_inputs),
    output:
        "results/maps/{applied}/shards/{shard}.json",
    params:
        scenes=shard_fingerprint,
        predictor=predictor_args,
        manifest=config["manifest"],
        options=shard_options,
        # `snakemake --config retry_corrupt=true` reruns the shards; each retries its corrupt scenes
        retry=config["retry_corrupt"],
    resources:
        gpu=APPLY["gpus"],
        mem_mb=lambda w, attempt: APPLY["mem_mb"] * attempt,
        runtime=APPLY["runtime"],
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/maps/{applied}/{shard}.log",
    benchmark:
        "benchmarks/maps/{applied}/{shard}.tsv"
    shell:
        "snakemap apply-shard {wildcards.shard} --manifest {params.manifest:q} --root results/maps/{wildcards.applied}"
        " {params.predictor} --retry-corrupt={params.retry} --gpus {resources.gpu}"
        " --options {params.options:q} 2> {log:q}"


rule mosaic:
    input:
        expand("results/maps/{{applied}}/shards/{shard}.json", shard=SHARDS),
    output:
        vrt="results/maps/{applied}/mosaic.vrt",
        overview="results/maps/{applied}/overview.tif",
    params:
        options=options("apply"),
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/maps/{applied}/mosaic.log",
    shell:
        "snakemap mosaic {input:q} --vrt {output.vrt:q} --overview {output.overview:q}"
        " --options {params.options:q} 2> {log:q}"


rule progress:
    input:
        expand("results/maps/{{applied}}/shards/{shard}.json", shard=SHARDS),
    output:
        "results/maps/{applied}/progress.json",
    params:
        options=options("manifest", "apply"),
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/maps/{applied}/progress.log",
    shell:
        "snakemap progress --predictor {wildcards.applied:q} --out {output:q}"
        " --options {params.options:q} > {log:q} 2>&1"
