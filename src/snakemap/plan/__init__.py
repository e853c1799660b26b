"""What the workflow needs to plan a run before any job: the scene manifest, checked and cached
(:mod:`.manifest`), the grid of models expanded into ids (:mod:`.grid`) and the apply scenes cut
into shards (:mod:`.shards`). ``workflow/rules/common.smk`` imports these on every ``snakemake``
start, so nothing here imports torch.
"""
