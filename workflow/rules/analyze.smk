# Per-band statistics over the training scenes, for normalisation.


rule analyze:
    input:
        expand("results/clean/{scene}", scene=TRAIN),
    output:
        "results/stats/bands.json",
    resources:
        mem_mb=lambda w, attempt: config["resources"]["analyze_mem_mb"] * attempt,
    conda:
        "../envs/snakemap.yaml"
    log:
        "logs/analyze/bands.log",
    benchmark:
        "benchmarks/analyze/bands.tsv"
    shell:
        "snakemap analyze {input:q} --out {output:q} 2> {log:q}"
