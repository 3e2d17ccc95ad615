"""Scoring explanations: AUROC from generation, CLIP similarity, segmentation IoU, detection and
likelihood by a VLM, and ground truth from a plug-in."""

from vis_steer_lens.evaluate.clip_similarity import ClipSimilarityScorer
from vis_steer_lens.evaluate.encoding import FeatureEncoder, SAEImageEncoder, pooled_activations
from vis_steer_lens.evaluate.generation_auroc import (
    GenerationAUROCScorer,
    ScoresFileMismatchError,
    explanation_hash,
    feature_seed,
    score_generation_auroc,
)
from vis_steer_lens.evaluate.generators import PAPER_DIFFUSION_MODEL, DiffusersGenerator, ImageGenerator
from vis_steer_lens.evaluate.ground_truth import (
    GROUND_TRUTH_METHOD,
    GroundTruth,
    ground_truth_accuracy,
    load_ground_truth,
)
from vis_steer_lens.evaluate.metrics import (
    auroc,
    auroc_matrix,
    bootstrap_mean_ci,
    global_auroc,
    method_label,
)
from vis_steer_lens.evaluate.segmentation_iou import GroundingDinoSamSegmenter, SegmentationIoUScorer
from vis_steer_lens.evaluate.vlm_scorers import DetectionScorer, LikelihoodScorer

__all__ = [
    "GROUND_TRUTH_METHOD",
    "PAPER_DIFFUSION_MODEL",
    "ClipSimilarityScorer",
    "DetectionScorer",
    "DiffusersGenerator",
    "FeatureEncoder",
    "GenerationAUROCScorer",
    "GroundingDinoSamSegmenter",
    "SegmentationIoUScorer",
    "GroundTruth",
    "ImageGenerator",
    "LikelihoodScorer",
    "SAEImageEncoder",
    "ScoresFileMismatchError",
    "auroc",
    "auroc_matrix",
    "bootstrap_mean_ci",
    "explanation_hash",
    "feature_seed",
    "global_auroc",
    "load_ground_truth",
    "ground_truth_accuracy",
    "method_label",
    "pooled_activations",
    "score_generation_auroc",
]
