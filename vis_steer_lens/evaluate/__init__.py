"""Scoring explanations: AUROC from generation, CLIP similarity, and toy-world ground truth."""

from vis_steer_lens.evaluate.clip_similarity import ClipSimilarityScorer
from vis_steer_lens.evaluate.encoding import FeatureEncoder, SAEImageEncoder, pooled_activations
from vis_steer_lens.evaluate.generation_auroc import (
    GenerationAUROCScorer,
    ScoresFileMismatchError,
    explanation_hash,
    feature_seed,
    score_generation_auroc,
)
from vis_steer_lens.evaluate.generators import (
    PAPER_DIFFUSION_MODEL,
    DiffusersGenerator,
    ImageGenerator,
    ToyGenerator,
)
from vis_steer_lens.evaluate.ground_truth import (
    CONCEPTS,
    GROUND_TRUTH_METHOD,
    explanation_is_correct,
    feature_concepts,
    ground_truth_accuracy,
    ground_truth_explanations,
    summarize_feature_concepts,
)
from vis_steer_lens.evaluate.metrics import (
    auroc,
    auroc_matrix,
    bootstrap_mean_ci,
    global_auroc,
    method_label,
)

__all__ = [
    "CONCEPTS",
    "GROUND_TRUTH_METHOD",
    "PAPER_DIFFUSION_MODEL",
    "ClipSimilarityScorer",
    "DiffusersGenerator",
    "FeatureEncoder",
    "GenerationAUROCScorer",
    "ImageGenerator",
    "SAEImageEncoder",
    "ScoresFileMismatchError",
    "ToyGenerator",
    "auroc",
    "auroc_matrix",
    "bootstrap_mean_ci",
    "explanation_hash",
    "explanation_is_correct",
    "feature_concepts",
    "feature_seed",
    "global_auroc",
    "ground_truth_accuracy",
    "ground_truth_explanations",
    "method_label",
    "pooled_activations",
    "score_generation_auroc",
    "summarize_feature_concepts",
]
