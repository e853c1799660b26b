# The applied maps in `snakemake --report`: a quicklook per predictor (its overview in class
# colours beside the scenes' image) and one page of progress, mapped areas and area estimates.


rule report_quicklook:
    input:
        overview="results/maps/{predictor}/overview.tif",
        mosaic="results/maps/{predictor}/mosaic",
        progress="results/maps/{predictor}/progress.json",
        manifest=config["manifest"],
    output:
        report(
            "results/reports/maps/{predictor}.png",
            caption="../report/quicklook.rst",
            category="Applied maps",
            # one label: two would be shown as a toggle, which breaks with one page per predictor
            labels={"figure": "quicklook of {predictor}"},
        ),
    log:
        "logs/report/quicklook/{predictor}.log",
    wildcard_constraints:
        predictor=APPLIED_PATTERN,
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("labels", "bands", "sensors", "acquire", "task"),
    message:
        "report: quicklook of {wildcards.predictor}"
    shell:
        "snakemap quicklook {input.overview:q} --mosaic {input.mosaic:q} --progress {input.progress:q}"
        " --manifest {input.manifest:q} --predictor {wildcards.predictor:q} --out {output:q}"
        " --options {params.options:q} > {log:q} 2>&1"


rule report_maps:
    input:
        progress=expand("results/maps/{predictor}/progress.json", predictor=APPLY["predictors"]),
        areas=list(area_files().values()),
    output:
        report(
            "results/reports/maps.html",
            caption="../report/maps.rst",
            category="Applied maps",
            labels={"figure": "progress, areas, corrupt and unlike scenes"},
        ),
    log:
        "logs/report/maps.log",
    localrule: True
    conda:
        "../envs/snakemap.yaml"
    params:
        predictors=APPLY["predictors"],
        areas=lambda w: (
            " ".join(["--area-predictors", *map(shlex.quote, area_files())]) if area_files() else ""
        ),
        options=options("labels", "task"),
    message:
        "report: applied maps' progress and areas"
    shell:
        "snakemap report-maps --predictors {params.predictors:q} --progress {input.progress:q}"
        " {params.areas} --areas {input.areas:q} --out {output:q} --options {params.options:q} > {log:q} 2>&1"
