# The embedded demo's data: synthetic scenes written by a rule, then acquired like any other.


rule demo_scene:
    output:
        image="resources/demo/images/{name}.tif",
        label="resources/demo/labels/{name}.tif",
    log:
        "logs/demo/{name}.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("demo"),
        empty=lambda w: "--empty" if w.name in config.get("demo", {}).get("empty", []) else "",
    message:
        "demo scene {wildcards.name}"
    shell:
        "snakemap demo-scene {wildcards.name:q} --image {output.image:q} --label {output.label:q}"
        " {params.empty} --options {params.options:q} 2> {log:q}"


# An example's STAC catalogue (the `catalog` section): per-band COG assets, a mask asset, an item
# and polygon labels per scene, written from labelled GeoTIFFs, then acquired like any other.
rule catalog_scene:
    input:
        lambda w: [CATALOG["scenes"][w.name]["image"], CATALOG["scenes"][w.name]["label"]],
    output:
        item="resources/catalog/{name}/item.json",
        labels="resources/catalog/{name}/labels.gpkg",
    log:
        "logs/catalog/{name}.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        options=options("catalog"),
    message:
        "catalogue scene {wildcards.name}"
    shell:
        "snakemap catalog-scene {wildcards.name:q} --out resources/catalog/{wildcards.name}"
        " --options {params.options:q} 2> {log:q}"
