# Areas with 95% confidence intervals from a stratified reference sample (the `areas` section;
# Olofsson et al. 2014): the sample is drawn from a predictor's mosaic for people to label, or
# labelled from a reference raster (examples and benchmarks); the areas come from the labelled one.


rule sample:
    input:
        mosaic="results/maps/{predictor}/mosaic",
        # a missing area of interest stops the run before any job, named
        aoi=lambda w: [AREAS["aoi"]] if AREAS.get("aoi") else [],
    output:
        "results/maps/{predictor}/sample.gpkg",
    log:
        "logs/maps/{predictor}/sample.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        # not areas.reference nor reference_raster: naming the labelled sample never draws anew
        options=lambda w: json.dumps({"areas": sample_section(), "labels": config["labels"]}, sort_keys=True),
    message:
        "reference sample of {wildcards.predictor}"
    shell:
        "snakemap sample {input.mosaic:q} --out {output:q} --options {params.options:q} 2> {log:q}"


rule label_sample:
    input:
        sample="results/maps/{predictor}/sample.gpkg",
        rasters=lambda w: build("areas", AREAS).reference_rasters(),
    output:
        "results/maps/{predictor}/reference.gpkg",
    log:
        "logs/maps/{predictor}/label_sample.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("labels"),
    message:
        "label the reference sample of {wildcards.predictor}"
    shell:
        "snakemap label-sample {input.sample:q} --raster {input.rasters:q} --out {output:q}"
        " --options {params.options:q} 2> {log:q}"


rule areas:
    input:
        mosaic="results/maps/{predictor}/mosaic",
        reference=lambda w: reference_of(w.predictor),
        aoi=lambda w: [AREAS["aoi"]] if AREAS.get("aoi") else [],
    output:
        "results/maps/{predictor}/areas.csv",
    log:
        "logs/maps/{predictor}/areas.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("areas", "labels"),
    message:
        "areas with 95% intervals of {wildcards.predictor}"
    shell:
        "snakemap areas {input.mosaic:q} --reference {input.reference:q} --out {output:q}"
        " --options {params.options:q} > {log:q} 2>&1"
