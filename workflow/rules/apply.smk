# Apply predictors to the apply scenes: one job per shard of scenes, then mosaics and progress.


# With apply.buffer, each scene is predicted with context read from its neighbours through this VRT.
rule apply_inputs_vrt:
    input:
        manifest=config["manifest"],
        demo=apply_demo_scenes,
    output:
        "results/maps/inputs.vrt",
    log:
        "logs/maps/inputs_vrt.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("acquire", "task"),
    message:
        "VRT of the apply scenes"
    shell:
        "snakemap inputs-vrt --manifest {input.manifest:q} --out {output:q} --options {params.options:q}"
        " 2> {log:q}"


rule apply_shard:
    input:
        unpack(predictor_inputs),
        demo=demo_scenes,
        vrt=apply_vrt,
    output:
        manifest="results/maps/{predictor}/shards/{shard}.json",
        polygons=polygon_part(),
    log:
        "logs/maps/{predictor}/{shard}.log",
    benchmark:
        "benchmarks/maps/{predictor}/{shard}.tsv"
    wildcard_constraints:
        predictor=APPLIED_PATTERN,
    conda:
        "../envs/snakemap.yaml"
    threads: PREDICT.threads
    resources:
        gpu=APPLY["gpus"],
        mem_mb=lambda w, attempt: APPLY["mem_mb"] * attempt,
        runtime=APPLY["runtime"],
        # a one-off flag, not a parameter: the next plain run reruns nothing (see common.smk)
        retry_corrupt=RETRY_CORRUPT,
    params:
        scenes=shard_fingerprint,
        predictor=predictor_args,
        vrt=vrt_args,
        manifest=config["manifest"],
        options=shard_options,
    message:
        "apply {wildcards.predictor} to {wildcards.shard}"
    shell:
        "snakemap apply-shard {wildcards.shard} --manifest {params.manifest:q} --root results/maps/{wildcards.predictor}"
        " {params.predictor} {params.vrt} --retry-corrupt={resources.retry_corrupt} --gpus {resources.gpu}"
        " --threads {threads}"
        " --options {params.options:q} 2> {log:q}"


# One VRT per CRS of the ok maps (the CRSs are known only after apply: a folder, with its index.json),
# and the overview of them all in apply.overview_crs.
rule mosaic:
    input:
        expand("results/maps/{{predictor}}/shards/{shard}.json", shard=SHARDS),
    output:
        mosaic=directory("results/maps/{predictor}/mosaic"),
        overview="results/maps/{predictor}/overview.tif",
        south="results/maps/{predictor}/overview_south.tif",
        north="results/maps/{predictor}/overview_north.tif",
    log:
        "logs/maps/{predictor}/mosaic.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("apply", "task"),
    message:
        "mosaic and overviews of {wildcards.predictor}"
    shell:
        "snakemap mosaic {input:q} --out {output.mosaic:q} --overview {output.overview:q}"
        " --polar {output.south:q} {output.north:q} --options {params.options:q} 2> {log:q}"


# The shards' polygons (`vectorize:`) in one GeoParquet file and its GeoPackage twin.
rule polygons:
    input:
        expand("results/maps/{{predictor}}/polygons/parts/{shard}.parquet", shard=SHARDS),
    output:
        parquet="results/maps/{predictor}/polygons.parquet",
        gpkg="results/maps/{predictor}/polygons.gpkg",
    log:
        "logs/maps/{predictor}/polygons.log",
    conda:
        "../envs/snakemap.yaml"
    message:
        "polygons of {wildcards.predictor}"
    shell:
        "snakemap polygons {input:q} --parquet {output.parquet:q} --gpkg {output.gpkg:q} 2> {log:q}"


# The counts, and the scenes per CRS from the mosaic's index.
rule progress:
    input:
        shards=expand("results/maps/{{predictor}}/shards/{shard}.json", shard=SHARDS),
        mosaic="results/maps/{predictor}/mosaic",
    output:
        "results/maps/{predictor}/progress.json",
    log:
        "logs/maps/{predictor}/progress.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("manifest", "apply", "task", "shift"),
    message:
        "progress of {wildcards.predictor}"
    shell:
        "snakemap progress --predictor {wildcards.predictor:q} --out {output:q}"
        " --options {params.options:q} > {log:q} 2>&1"


# STAC: an item beside each ok scene's sentinel, and the predictor's collection with the mosaic of
# each CRS, its index and the overview as assets.
rule stac:
    input:
        unpack(predictor_inputs),
        shards=expand("results/maps/{{predictor}}/shards/{shard}.json", shard=SHARDS),
        mosaic="results/maps/{predictor}/mosaic",
        overview="results/maps/{predictor}/overview.tif",
        bundle=predictor_bundle,
        polygons=lambda w: polygon_outputs(w.predictor),
    output:
        "results/maps/{predictor}/collection.json",
    log:
        "logs/maps/{predictor}/stac.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        checkpoints=lambda w, input: " ".join(f"--checkpoint {c}" for c in input.ckpts),
        bundle=lambda w, input: f"--bundle {input.bundle}" if input.bundle else "",
        manifest=config["manifest"],
        # what ran the networks, for the items' framework (nothing added with the default torch)
        options=options("labels", "task", *(["predict"] if PREDICT.backend != "torch" else [])),
    message:
        "STAC collection of {wildcards.predictor}"
    shell:
        "snakemap stac {input.shards:q} --predictor {wildcards.predictor:q}"
        " --root results/maps/{wildcards.predictor} --manifest {params.manifest:q}"
        " {params.checkpoints} {params.bundle} --options {params.options:q} > {log:q} 2>&1"
