"""Fit one model of the grid with Lightning: the chip datasets and their balanced sampling
(:mod:`.datasets`), a job's resumable state (:mod:`.resume`) and the training job itself with its
best and last checkpoints and metrics table (:mod:`.train`).
"""
