"""vis_steer_lens: explain vision SAE features of vision-language models by steering.

The public API lives here; everything else is private unless a submodule documents it. Names are
imported on first use (PEP 562), so ``import vis_steer_lens`` and ``vis-steer-lens --help`` load
neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "UnsupportedModelError": "vis_steer_lens.adapters",
    "NoLanguageModelError": "vis_steer_lens.families",
    "VLMAdapter": "vis_steer_lens.adapters",
    "register_adapter": "vis_steer_lens.adapters",
    "feature_attribution": "vis_steer_lens.attribution",
    "export_dashboard": "vis_steer_lens.dashboard",
    "export_neuronpedia": "vis_steer_lens.dashboard",
    "ClipSimilarityScorer": "vis_steer_lens.evaluate",
    "DetectionScorer": "vis_steer_lens.evaluate",
    "GenerationAUROCScorer": "vis_steer_lens.evaluate",
    "GroundTruth": "vis_steer_lens.evaluate",
    "GroundingDinoSamSegmenter": "vis_steer_lens.evaluate",
    "LikelihoodScorer": "vis_steer_lens.evaluate",
    "SegmentationIoUScorer": "vis_steer_lens.evaluate",
    "compare": "vis_steer_lens.evaluate.compare",
    "compare_run": "vis_steer_lens.evaluate.compare",
    "paired_margins": "vis_steer_lens.evaluate.compare",
    "scorer_agreement": "vis_steer_lens.evaluate.compare",
    "SteeringExplainer": "vis_steer_lens.explain",
    "SteeringInformedTopKExplainer": "vis_steer_lens.explain",
    "TopKExplainer": "vis_steer_lens.explain",
    "make_explainer": "vis_steer_lens.explain",
    "register_prompt": "vis_steer_lens.explain",
    "CoefficientChoice": "vis_steer_lens.explain.calibration",
    "calibrate_run": "vis_steer_lens.explain.calibration",
    "canonical_hook_name": "vis_steer_lens.families",
    "equivalent_names": "vis_steer_lens.families",
    "supported_families": "vis_steer_lens.families",
    "ImageGeometry": "vis_steer_lens.geometry",
    "HookName": "vis_steer_lens.hook_names",
    "UnknownHookNameError": "vis_steer_lens.hook_names",
    "HookedViT": "vis_steer_lens.hooked_vit",
    "HookedViTConfig": "vis_steer_lens.hooked_vit",
    "HookedVLM": "vis_steer_lens.hooked_vlm",
    "MinedActivations": "vis_steer_lens.mining",
    "mine_top_activations": "vis_steer_lens.mining",
    "RunFolder": "vis_steer_lens.runs",
    "RunFolderError": "vis_steer_lens.runs",
    "FeatureIndexError": "vis_steer_lens.saes",
    "SAEModelMismatchError": "vis_steer_lens.saes",
    "UnreachableHookError": "vis_steer_lens.saes",
    "check_sae_fits": "vis_steer_lens.saes",
    "check_sae_steers": "vis_steer_lens.saes",
    "load_sae_for_vlm": "vis_steer_lens.saes",
    "list_vision_releases": "vis_steer_lens.saes",
    "load_sae": "vis_steer_lens.saes",
    "train_sae": "vis_steer_lens.saes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vis_steer_lens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
