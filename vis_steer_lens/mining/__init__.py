"""Streaming top-k activation mining: the top images of every SAE feature, in bounded memory.

One pass over an image collection keeps, per feature, the ``k`` best images (by the mean or max of the
feature's activation over patches) with their per-patch activation maps, plus running statistics
(firing frequencies, max/mean activation, an activation histogram). Memory is
``features × k × patches``, independent of the number of images. Long runs checkpoint atomically and
resume to a result identical to an uninterrupted run.

The package holds three concepts: :mod:`.state` (what a pass keeps and how a batch folds in),
:mod:`.persistence` (the files of a mined folder) and :mod:`.run` (the pass itself: batches,
checkpoints, resuming, ranks).
"""

from vis_steer_lens.mining.persistence import (
    FEATURES_FILE,
    FORMAT_VERSION,
    LISTING_FILE,
    META_FILE,
    TOP_FILE,
)
from vis_steer_lens.mining.run import (
    CODE_BLOCK_ELEMENTS,
    ENCODE_CHUNK_ELEMENTS,
    SHARDS_DIR,
    mine_top_activations,
)
from vis_steer_lens.mining.state import MAP_BLOCK_ELEMENTS, RANK_BY, MinedActivations

__all__ = [
    "CODE_BLOCK_ELEMENTS",
    "ENCODE_CHUNK_ELEMENTS",
    "FEATURES_FILE",
    "FORMAT_VERSION",
    "LISTING_FILE",
    "MAP_BLOCK_ELEMENTS",
    "META_FILE",
    "RANK_BY",
    "SHARDS_DIR",
    "TOP_FILE",
    "MinedActivations",
    "mine_top_activations",
]
