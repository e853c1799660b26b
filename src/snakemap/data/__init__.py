"""Scenes from their source to training chips: acquire (download, verify), bands and spectral
indices, sensors and label schemes, label remapping, clean (analysis-ready rasters and a status),
per-band statistics, chips, cross-validation folds, and the demo's synthetic scenes. Each step
reads and writes files; none needs a GPU.
"""
