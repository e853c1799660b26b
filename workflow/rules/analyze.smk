# Per-band statistics over the training scenes, for normalisation.


rule analyze:
    input:
        expand("results/clean/{scene}", scene=TRAIN),
    output:
        "results/stats/bands.json",
    log:
        "logs/analyze/bands.log",
    benchmark:
        "benchmarks/analyze/bands.tsv"
    conda:
        "../envs/snakemap.yaml"
    resources:
        mem_mb=lambda w, attempt: config["resources"]["analyze_mem_mb"] * attempt,
    message:
        "band statistics of the training scenes"
    shell:
        "snakemap analyze {input:q} --out {output:q} 2> {log:q}"
