"""The toy world as a plug-in: it registers its prompt, image-source kind, generator, ground truth and segmenter.

Declared in ``pyproject.toml`` as the entry point ``toy`` of the group ``vis_steer_lens.plugins``,
the same way a user's own world would plug in; the core loads it when a lookup needs it.
"""

from __future__ import annotations

from vis_steer_lens.explain.prompts import PromptSet, register_prompt
from vis_steer_lens.plugins import (
    GENERATORS,
    GROUND_TRUTH_BUILDERS,
    GROUND_TRUTHS,
    IMAGE_SOURCES,
    LAYER_SAES,
    SEGMENTERS,
)
from vis_steer_lens.toy import tasks
from vis_steer_lens.toy.generator import ToyGenerator
from vis_steer_lens.toy.ground_truth import build_toy_ground_truth, toy_ground_truth
from vis_steer_lens.toy.images import open_toy_images
from vis_steer_lens.toy.segmenter import ToySegmenter

#: The instructions the toy VLM was trained on.
TOY_PROMPT = PromptSet(
    prompt_id="toy",
    steering=tasks.HIGHLIGHT_PROMPT,
    topk_mask=tasks.TOPK_PROMPT,
    topk_heatmap=tasks.TOPK_PROMPT,
    answer_prefix=tasks.HIGHLIGHT_ANSWER_PREFIX,
    topk_answer_prefix=tasks.TOPK_ANSWER_PREFIX,
    source="vis_steer_lens.toy.tasks",
)


def register() -> None:
    """Register the toy world's prompt ``"toy"``, image-source kind ``"toy"``, generator
    ``"toy-renderer"``, ground truth ``"toy"`` (its loader and its builder), segmenter ``"toy"`` and
    layer SAEs ``"toy"`` (idempotent)."""
    register_prompt(TOY_PROMPT)
    IMAGE_SOURCES.register("toy", open_toy_images)
    GENERATORS.register(ToyGenerator.name, ToyGenerator)
    GROUND_TRUTHS.register("toy", toy_ground_truth)
    GROUND_TRUTH_BUILDERS.register("toy", build_toy_ground_truth)
    SEGMENTERS.register(ToySegmenter.name, ToySegmenter)
    LAYER_SAES.register("toy", _toy_layer_saes)


def _toy_layer_saes(*args, **kwargs):
    # Imported when a layer sweep asks: training pulls in the SAE trainer.
    from vis_steer_lens.toy.sae import toy_layer_saes

    return toy_layer_saes(*args, **kwargs)


__all__ = ["TOY_PROMPT", "register"]
