# Copy or download each scene (and label), verify its checksum, retry transient failures.


rule acquire:
    input:
        local_inputs,
    output:
        directory("resources/scenes/{scene}"),
    log:
        "logs/acquire/{scene}.log",
    conda:
        "../envs/snakemap.yaml"
    params:
        uri=lambda w: scene(w)["uri"],
        sha256=lambda w: scene(w)["sha256"],
        label_uri=lambda w: scene(w)["label_uri"],
        label_sha256=lambda w: scene(w)["label_sha256"],
        options=acquire_options,
        sensor=lambda w: scene(w)["sensor"] if is_item(scene(w)["uri"]) else "",
    message:
        "acquire {wildcards.scene}"
    shell:
        "snakemap acquire {wildcards.scene:q} --uri {params.uri:q} --sha256={params.sha256:q}"
        " --label-uri={params.label_uri:q} --label-sha256={params.label_sha256:q}"
        " --sensor={params.sensor:q} --out {output:q} --options {params.options:q} 2> {log:q}"
