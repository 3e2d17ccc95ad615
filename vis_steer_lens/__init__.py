"""vis_steer_lens: explain vision SAE features of vision-language models by steering.

The public API lives here; everything else is private unless a submodule documents it.
"""

from vis_steer_lens.adapters import UnsupportedModelError, VLMAdapter, register_adapter
from vis_steer_lens.attribution import feature_attribution
from vis_steer_lens.dashboard import export_dashboard, export_neuronpedia
from vis_steer_lens.evaluate import ClipSimilarityScorer, GenerationAUROCScorer, GroundTruth
from vis_steer_lens.evaluate.compare import compare, compare_run
from vis_steer_lens.explain import (
    SteeringExplainer,
    SteeringInformedTopKExplainer,
    TopKExplainer,
    make_explainer,
    register_prompt,
)
from vis_steer_lens.families import canonical_hook_name, equivalent_names, supported_families
from vis_steer_lens.hook_names import HookName, UnknownHookNameError
from vis_steer_lens.hooked_vit import HookedViT, HookedViTConfig
from vis_steer_lens.hooked_vlm import HookedVLM
from vis_steer_lens.mining import MinedActivations, mine_top_activations
from vis_steer_lens.runs import RunFolder, RunFolderError
from vis_steer_lens.saes import (
    FeatureIndexError,
    SAEModelMismatchError,
    check_sae_fits,
    list_vision_releases,
    load_sae,
    train_sae,
)

__version__ = "0.1.0"

__all__ = [
    "ClipSimilarityScorer",
    "GenerationAUROCScorer",
    "GroundTruth",
    "SteeringExplainer",
    "SteeringInformedTopKExplainer",
    "TopKExplainer",
    "compare",
    "compare_run",
    "make_explainer",
    "register_prompt",
    "HookName",
    "HookedViT",
    "HookedViTConfig",
    "FeatureIndexError",
    "HookedVLM",
    "SAEModelMismatchError",
    "UnknownHookNameError",
    "UnsupportedModelError",
    "VLMAdapter",
    "canonical_hook_name",
    "check_sae_fits",
    "equivalent_names",
    "export_dashboard",
    "export_neuronpedia",
    "feature_attribution",
    "MinedActivations",
    "RunFolder",
    "RunFolderError",
    "mine_top_activations",
    "list_vision_releases",
    "load_sae",
    "register_adapter",
    "supported_families",
    "train_sae",
]
