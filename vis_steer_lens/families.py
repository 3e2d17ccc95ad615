"""The registry of model families, and hook-name translation that needs no model in memory.

Each family (Gemma 3, InternVL3, ...) is one :class:`~vis_steer_lens.adapters.VLMAdapter`
registered here by :mod:`vis_steer_lens.adapters`. The core asks this registry, never a
family module, so that the core and the adapters do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vis_steer_lens.hook_names import HookNameTriple, UnknownHookNameError, name_triple

if TYPE_CHECKING:
    from vis_steer_lens.adapters.base import VLMAdapter


class UnsupportedModelError(ValueError):
    """A model, tower or checkpoint whose architecture no adapter supports."""


class NoLanguageModelError(UnsupportedModelError):
    """Something that needs a vision-language model (a HookedVLM, steering, the hybrid) was given a
    vision-only tower (CLIP, SigLIP, DINOv2), which has no language model."""


_ADAPTERS: list[VLMAdapter] = []


#: The module that registers the shipped families, loaded on the first lookup as a plug-in is
#: (by name: this registry does not depend on the adapters, they depend on it).
BUILTIN_ADAPTERS_MODULE = "vis_steer_lens.adapters"


def _adapters() -> list[VLMAdapter]:
    """The registered adapters, the shipped families registered on first use (``import
    vis_steer_lens`` is lazy, so nothing else may have loaded them yet)."""
    import importlib

    importlib.import_module(BUILTIN_ADAPTERS_MODULE)
    return _ADAPTERS


#: The family assumed where none is named (the library's first, and the toy world's).
DEFAULT_FAMILY = "gemma3"


def register_adapter(adapter: VLMAdapter) -> None:
    """Make a model family loadable; a later registration of the same name replaces the earlier one.

    New adapters are tried before the ones registered earlier.
    """
    _ADAPTERS[:] = [a for a in _ADAPTERS if a.name != adapter.name]
    _ADAPTERS.insert(0, adapter)


def supported_families() -> list[str]:
    """Names of the model families an adapter exists for."""
    return [a.name for a in _adapters()]


def get_adapter(family: str) -> VLMAdapter:
    """The adapter registered under ``family`` (e.g. ``"gemma3"``, ``"internvl3"``).

    Raises:
        UnsupportedModelError: Naming the registered families.
    """
    for adapter in _adapters():
        if adapter.name == family:
            return adapter
    raise UnsupportedModelError(
        f"Unknown model family {family!r}. Registered families: {', '.join(supported_families())}."
    )


def _no_adapter(kind: str, model_type: Any, source: Any) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"No adapter for {kind} {type(source).__name__} with model type {model_type!r}. Supported families: "
        f"{', '.join(f'{a.name} ({a.describe()})' for a in _adapters())}. Add one by subclassing "
        "vis_steer_lens.adapters.VLMAdapter and calling vis_steer_lens.register_adapter."
    )


def adapter_for(source: Any, revision: str | None = None) -> VLMAdapter:
    """Pick the adapter for a hub id / folder, a Hugging Face config, or a full model.

    Raises:
        UnsupportedModelError: Naming the supported families, if none fits.
    """
    config = source
    if isinstance(source, str):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source, revision=revision)
    elif hasattr(source, "config") and not hasattr(source, "model_type"):
        config = source.config
    for adapter in _adapters():
        if adapter.supports(config):
            return adapter
    raise _no_adapter("model", getattr(config, "model_type", None), source)


def adapter_for_tower(tower: Any) -> VLMAdapter:
    """Pick the adapter whose vision tower ``tower`` (a bare Hugging Face tower module) is.

    Raises:
        UnsupportedModelError: Naming the supported towers, if none fits.
    """
    for adapter in _adapters():
        if adapter.supports_tower(tower):
            return adapter
    raise _no_adapter("vision tower", getattr(getattr(tower, "config", None), "model_type", None), tower)


_NO_DEFAULT: Any = object()


def family_of_model_name(model_name: str | None, default: str | None = _NO_DEFAULT) -> str | None:
    """The family a model name belongs to (``"OpenGVLab/InternVL3-14B"`` → ``"internvl3"``).

    A family claims a name by one of its markers starting a word of the name (see
    :meth:`VLMAdapter.claims_model_name`): ``"google/paligemma-3b-mix-224"`` is PaliGemma's, not
    Gemma 3's, though it contains ``"gemma-3"`` inside a word. Where several families claim a name,
    the longest marker wins.

    Args:
        model_name: A hub id, a folder or a free-form model name.
        default: What to return for a name no family claims. Without it such a name raises: a
            model's family is never guessed silently.

    Raises:
        UnsupportedModelError: If no family claims the name and no ``default`` is given.
    """
    best: tuple[int, str] | None = None
    for adapter in _adapters():
        if model_name:
            # An adapter that overrides claims_model_name (a plug-in) is asked first; markers rank.
            claims = adapter.claims_model_name(model_name)
            length = max(adapter.claimed_marker_length(model_name), 1) if claims else 0
            if length and (best is None or length > best[0]):
                best = (length, adapter.name)
    if best is not None:
        return best[1]
    if default is _NO_DEFAULT:
        raise UnsupportedModelError(
            f"No model family claims the name {model_name!r}; expected a name of one of the families "
            f"{', '.join(supported_families())}; pass family= explicitly."
        )
    return default


def _family_names(name: str, n_layers: int | None, family: str) -> tuple[list[str], Any]:
    adapter = get_adapter(family)
    if n_layers is None:  # any layer: a tower just deep enough for the layer the name mentions
        n_layers = max([1, *(int(part) + 1 for part in name.split(".") if part.isdigit())])
    return adapter.default_hook_names(n_layers), adapter.hook_name_map


def canonical_hook_name(name: str, n_layers: int | None = None, family: str = DEFAULT_FAMILY) -> str:
    """Map a hook name in any convention to its HookedViT name, without a model.

    With a model in memory, prefer ``model.resolve_hook_name``: it knows the model's exact hooks.

    Args:
        name: A HookedViT name (``blocks.3.hook_resid_post``), or the family's TransformerBridge
            name or Hugging Face module path of a hook (see the family's adapter).
        n_layers: Number of layers of the tower. When given, layers that do not exist are
            rejected too.
        family: The model family whose naming conventions apply (default ``"gemma3"``).

    Raises:
        UnknownHookNameError: If no convention knows the name; the message lists the closest
            valid names.
    """
    valid, name_map = _family_names(name, n_layers, family)
    return name_triple(name, valid, name_map).hooked_vit


def equivalent_names(name: str, n_layers: int | None = None, family: str = DEFAULT_FAMILY) -> HookNameTriple:
    """Name one activation in all three conventions, without a model.

    Args:
        name: A hook name in any convention (see :func:`canonical_hook_name`).
        n_layers: Number of layers of the tower, to reject layers that do not exist.
        family: The model family (``"gemma3"``, ``"internvl3"``, ...).

    Returns:
        The HookedViT name and, where they exist, the TransformerBridge name and the HF
        module path whose output is this activation.

    Example:
        >>> equivalent_names("blocks.16.hook_resid_post", family="internvl3").transformer_bridge is None
        True
    """
    valid, name_map = _family_names(name, n_layers, family)
    return name_triple(name, valid, name_map)


def end_of_answer_ids(tokenizer: Any, adapter: Any = None) -> list[int]:
    """Token ids that end a chat answer: the tokenizer's EOS and the family's end-of-turn tokens
    that the tokenizer has (Gemma's ``<end_of_turn>``, Qwen's ``<|im_end|>``: what the models'
    generation configs list as ``eos_token_id``).

    Args:
        tokenizer: The model's tokenizer.
        adapter: The model family's adapter; ``None`` tries every registered family's tokens.
    """
    adapters = [adapter] if adapter is not None else [get_adapter(name) for name in supported_families()]
    ids = {tokenizer.eos_token_id}
    for token in dict.fromkeys(t for a in adapters for t in a.end_of_turn_tokens):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


__all__ = [
    "DEFAULT_FAMILY",
    "NoLanguageModelError",
    "UnknownHookNameError",
    "UnsupportedModelError",
    "adapter_for",
    "adapter_for_tower",
    "canonical_hook_name",
    "end_of_answer_ids",
    "equivalent_names",
    "family_of_model_name",
    "get_adapter",
    "register_adapter",
    "supported_families",
]
