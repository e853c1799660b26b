"""snakemap: satellite and gridded scenes to maps with deep learning.

The package holds every step of the workflow as plain functions with a command-line interface
(``snakemap <step> ...``); ``workflow/`` only wires them together with Snakemake.
"""

__version__ = "0.1.0"
