"""The toy world: procedural concept images with known ground truth, a renderer, a tokenizer and tasks."""

from vis_steer_lens.toy.evaluation import caption_accuracy, highlight_accuracy, topk_accuracy
from vis_steer_lens.toy.generator import ToyGenerator
from vis_steer_lens.toy.ground_truth import (
    CONCEPTS,
    explanation_is_correct,
    feature_concepts,
    summarize_feature_concepts,
    toy_ground_truth,
)
from vis_steer_lens.toy.images import ToyImages
from vis_steer_lens.toy.loading import ToyBundle, load, toy_model_path, toy_sae_path
from vis_steer_lens.toy.probes import probe_accuracy
from vis_steer_lens.toy.renderer import ToyRenderer, concepts_in_order, concepts_in_text
from vis_steer_lens.toy.tasks import (
    Example,
    describe_example,
    highlight_example,
    sample_example,
    topk_example,
)
from vis_steer_lens.toy.tokenizer import (
    build_image_processor,
    build_processor,
    build_tokenizer,
    special_token_ids,
)
from vis_steer_lens.toy.world import (
    CATEGORIES,
    CELL_POSITIONS,
    COLORS,
    ObjectSpec,
    Scene,
    ToyWorld,
    heatmap_overlay,
    mask_patches,
    render,
)

__all__ = [
    "CONCEPTS",
    "ToyBundle",
    "ToyGenerator",
    "ToyImages",
    "explanation_is_correct",
    "feature_concepts",
    "summarize_feature_concepts",
    "toy_ground_truth",
    "caption_accuracy",
    "highlight_accuracy",
    "load",
    "probe_accuracy",
    "toy_model_path",
    "toy_sae_path",
    "topk_accuracy",
    "CATEGORIES",
    "CELL_POSITIONS",
    "COLORS",
    "Example",
    "ObjectSpec",
    "Scene",
    "ToyRenderer",
    "ToyWorld",
    "build_image_processor",
    "build_processor",
    "build_tokenizer",
    "concepts_in_order",
    "concepts_in_text",
    "describe_example",
    "heatmap_overlay",
    "highlight_example",
    "mask_patches",
    "render",
    "sample_example",
    "special_token_ids",
    "topk_example",
]
