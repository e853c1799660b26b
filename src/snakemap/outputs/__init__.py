"""What leaves the workflow: mosaics and overviews of the applied maps, a run's progress, STAC
items and collections, model bundles and their ONNX export.
"""
