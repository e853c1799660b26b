"""What a task is made of: the networks, the Lightning modules that train them (losses, metrics,
augmentation) and the array operations they rest on. ``segmentation`` maps classes with
segmentation-models-pytorch networks; ``downscaling`` maps a gridded field at a finer resolution
with the super-resolution networks of :mod:`.srnets`. Each task is registered, with the hooks that
the other stages call, in :mod:`snakemap.core.registry`.
"""
