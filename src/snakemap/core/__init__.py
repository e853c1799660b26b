"""The base every stage stands on: the config's options and errors, atomic file writes and JSON
sentinels (:mod:`.io`), per-scene states (:mod:`.status`), scores from a confusion matrix
(:mod:`.metrics`) and how object storage is reached (:mod:`.storage`). Nothing here imports torch:
the workflow's planning and ``snakemap progress`` import it often and must stay light.
"""
