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
    shell:
        "snakemap demo-scene {wildcards.name:q} --image {output.image:q} --label {output.label:q}"
        " {params.empty} --options {params.options:q} 2> {log:q}"
