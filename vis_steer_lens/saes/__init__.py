"""Vision SAEs as ``sae_lens.SAE`` objects: metadata, loading, conversion, a release registry, training."""

from vis_steer_lens.saes.cache import ActivationCache, ActivationCacheError, cache_activations
from vis_steer_lens.saes.dictionary_learning import (
    DictionaryLearningFormatError,
    hook_name_from_submodule,
    is_dictionary_learning_folder,
    load_dictionary_learning_sae,
)
from vis_steer_lens.saes.grid import GridSettingsError, loss_recovered, train_sae_grid
from vis_steer_lens.saes.loading import (
    SAESourceError,
    load_sae,
    load_sae_unchecked,
    register_converter,
    registered_converters,
    unregister_converter,
)
from vis_steer_lens.saes.metadata import sae_identity, set_vision_metadata, vision_sae_metadata
from vis_steer_lens.saes.registry import (
    UnknownVisionReleaseError,
    VisionSAERelease,
    get_release,
    list_vision_releases,
)
from vis_steer_lens.saes.sae_for_vlm import SAEForVLMFormatError, load_sae_for_vlm
from vis_steer_lens.saes.saev import SaevFormatError, is_saev_folder, load_saev_sae
from vis_steer_lens.saes.splicing import SAESplicingMixin, SplicedSAE
from vis_steer_lens.saes.trainer import (
    ActivationStreamError,
    rebatch_activations,
    sae_quality,
    to_inference_sae,
    train_sae_on_activations,
)
from vis_steer_lens.saes.training import train_sae
from vis_steer_lens.saes.validation import (
    FeatureIndexError,
    NonFiniteSAEError,
    SAEModelMismatchError,
    UnreachableHookError,
    check_feature_ids,
    check_sae_finite,
    check_sae_fits,
    check_sae_steers,
    nonfinite_weights,
    sae_hook_name,
)

__all__ = [
    "SaevFormatError",
    "is_saev_folder",
    "load_saev_sae",
    "ActivationCache",
    "ActivationCacheError",
    "GridSettingsError",
    "cache_activations",
    "loss_recovered",
    "train_sae_grid",
    "SAEForVLMFormatError",
    "load_sae_for_vlm",
    "FeatureIndexError",
    "NonFiniteSAEError",
    "SAEModelMismatchError",
    "UnreachableHookError",
    "SAESplicingMixin",
    "SplicedSAE",
    "check_feature_ids",
    "check_sae_finite",
    "check_sae_fits",
    "check_sae_steers",
    "nonfinite_weights",
    "load_sae_unchecked",
    "sae_hook_name",
    "sae_identity",
    "train_sae",
    "ActivationStreamError",
    "DictionaryLearningFormatError",
    "SAESourceError",
    "UnknownVisionReleaseError",
    "VisionSAERelease",
    "get_release",
    "hook_name_from_submodule",
    "is_dictionary_learning_folder",
    "list_vision_releases",
    "load_dictionary_learning_sae",
    "load_sae",
    "rebatch_activations",
    "register_converter",
    "registered_converters",
    "sae_quality",
    "set_vision_metadata",
    "to_inference_sae",
    "train_sae_on_activations",
    "unregister_converter",
    "vision_sae_metadata",
]
