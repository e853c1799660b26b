"""Predict scenes of any size: readers that stream a scene in strips (cleaning raw scenes as they
are read), the window grid, the predictor that stitches windows seam-free, the writer of class maps
and probabilities, downscaled fields, and the shard runner that applies a predictor to many scenes
with one state per scene.
"""
