"""The names a user chooses among (methods, directions, displays, empty images), in one light module.

Kept free of torch and transformers so that the command line can offer them as choices without
loading either (``vis-steer-lens --help`` answers at once).
"""

#: Explanation methods, by the names the CLI, run folders and tables use.
METHODS = ("steering", "topk", "hybrid")
#: Steering directions: the SAE's own, and the two controls.
DIRECTIONS = ("sae", "random_norm_matched", "permuted")
#: Ways to show the top images.
DISPLAYS = ("mask", "heatmap")
#: Empty images that steering can start from.
EMPTY_IMAGES = ("white", "black", "gray", "mean", "zeros", "noise")
#: Seed of the ``"noise"`` empty image (uniform pixel noise): the same image in every run.
NOISE_SEED = 0

#: What chooses the auto steering coefficient's multiple: the distinct-answers rule, or a scorer.
SELECT_BY = ("distinct", "segmentation_iou", "segmentation_iou_union", "likelihood", "detection")

__all__ = ["DIRECTIONS", "DISPLAYS", "EMPTY_IMAGES", "METHODS", "NOISE_SEED", "SELECT_BY"]
