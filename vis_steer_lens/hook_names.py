"""Hook names of a vision tower in three conventions, and the maps between them.

The library names every activation by its :class:`~vis_steer_lens.HookedViT` hook name
(TransformerLens / ViT-Prisma style, e.g. ``blocks.3.hook_resid_post``). Two other
conventions are accepted wherever a hook name is taken:

* TransformerLens ``TransformerBridge`` names for Gemma 3 multimodal models, e.g.
  ``vision_encoder.encoder_layers.3.hook_out``;
* Hugging Face module paths, e.g. ``model.vision_tower.encoder.layers.3`` (the module's
  output is the activation).

Only hooks with an exact counterpart are mapped; the others exist in HookedViT alone.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

#: Hook names inside each block, in the order they fire.
BLOCK_HOOKS: tuple[str, ...] = (
    "hook_resid_pre",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)

#: Hook names outside the blocks: before them and after them.
PRE_HOOKS: tuple[str, ...] = ("hook_embed", "hook_pos_embed")
POST_HOOKS: tuple[str, ...] = ("ln_final.hook_scale", "ln_final.hook_normalized")

# HookedViT block hook -> TransformerBridge name inside `vision_encoder.encoder_layers.{i}.`.
_BRIDGE_BLOCK = {
    "hook_resid_pre": "hook_in",
    "ln1.hook_scale": "ln1.hook_scale",
    "ln1.hook_normalized": "ln1.hook_normalized",
    "attn.hook_q": "attn.q.hook_out",
    "attn.hook_k": "attn.k.hook_out",
    "attn.hook_v": "attn.v.hook_out",
    "attn.hook_attn_scores": "attn.hook_attn_scores",
    "attn.hook_pattern": "attn.hook_pattern",
    "attn.hook_z": "attn.o.hook_in",
    "hook_attn_out": "attn.hook_out",
    "hook_resid_mid": "ln2.hook_in",
    "ln2.hook_scale": "ln2.hook_scale",
    "ln2.hook_normalized": "ln2.hook_normalized",
    "mlp.hook_pre": "mlp.in.hook_out",
    "mlp.hook_post": "mlp.out.hook_in",
    "hook_mlp_out": "mlp.hook_out",
    "hook_resid_post": "hook_out",
}
_BRIDGE_OTHER = {
    "hook_embed": "vision_encoder.hook_patch_embed",
    "hook_pos_embed": "vision_encoder.hook_pos_embed",
    "ln_final.hook_scale": "vision_encoder.post_layernorm.hook_scale",
    "ln_final.hook_normalized": "vision_encoder.post_layernorm.hook_normalized",
}

# HookedViT block hook -> HF module path inside `encoder.layers.{i}.` whose output it is.
_HF_BLOCK = {
    "attn.hook_q": "self_attn.q_proj",
    "attn.hook_k": "self_attn.k_proj",
    "attn.hook_v": "self_attn.v_proj",
    "hook_attn_out": "self_attn",
    "mlp.hook_pre": "mlp.fc1",
    "hook_mlp_out": "mlp",
    "hook_resid_post": "",
}
_HF_OTHER = {"hook_pos_embed": "embeddings.position_embedding"}

#: Hugging Face prefix of the vision tower inside ``Gemma3ForConditionalGeneration``.
GEMMA3_HF_PREFIX = "model.vision_tower."

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_BRIDGE_BLOCK_RE = re.compile(r"^vision_encoder\.encoder_layers\.(\d+)\.(.+)$")
_HF_BLOCK_RE = re.compile(r"^encoder\.layers\.(\d+)(?:\.(.+))?$")


class UnknownHookNameError(KeyError):
    """A hook name that is valid in none of the three conventions."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly instead.
        return str(self.args[0])


def hooked_vit_names(n_layers: int) -> list[str]:
    """All HookedViT hook names of an ``n_layers`` tower, in the order they fire."""
    names = list(PRE_HOOKS)
    for layer in range(n_layers):
        names += [f"blocks.{layer}.{hook}" for hook in BLOCK_HOOKS]
    return names + list(POST_HOOKS)


@dataclass(frozen=True)
class HookNameTriple:
    """One activation named in each convention (``None`` where a convention has no name)."""

    hooked_vit: str
    transformer_bridge: str | None
    hf_module: str | None


def _bridge_name(name: str) -> str | None:
    match = _BLOCK_RE.match(name)
    if match:
        inner = _BRIDGE_BLOCK.get(match.group(2))
        return None if inner is None else f"vision_encoder.encoder_layers.{match.group(1)}.{inner}"
    return _BRIDGE_OTHER.get(name)


def _hf_name(name: str, prefix: str) -> str | None:
    match = _BLOCK_RE.match(name)
    if match:
        inner = _HF_BLOCK.get(match.group(2))
        if inner is None:
            return None
        path = f"encoder.layers.{match.group(1)}" + (f".{inner}" if inner else "")
        return prefix + path
    inner = _HF_OTHER.get(name)
    return None if inner is None else prefix + inner


def _from_bridge(name: str) -> str | None:
    match = _BRIDGE_BLOCK_RE.match(name)
    if match:
        for ours, theirs in _BRIDGE_BLOCK.items():
            if theirs == match.group(2):
                return f"blocks.{match.group(1)}.{ours}"
        # `ln1.hook_in` is the block input, an alias the bridge also offers.
        if match.group(2) == "ln1.hook_in":
            return f"blocks.{match.group(1)}.hook_resid_pre"
        return None
    for ours, theirs in _BRIDGE_OTHER.items():
        if theirs == name:
            return ours
    if name == "vision_encoder.embeddings.hook_out":  # patch + position embeddings: the first block's input
        return "blocks.0.hook_resid_pre"
    return None


def _from_hf(name: str, prefix: str) -> str | None:
    for candidate_prefix in dict.fromkeys((prefix, GEMMA3_HF_PREFIX, "vision_tower.", "")):
        if candidate_prefix and not name.startswith(candidate_prefix):
            continue
        rest = name[len(candidate_prefix) :]
        match = _HF_BLOCK_RE.match(rest)
        if match:
            inner = match.group(2) or ""
            for ours, theirs in _HF_BLOCK.items():
                if theirs == inner:
                    return f"blocks.{match.group(1)}.{ours}"
            return None
        for ours, theirs in _HF_OTHER.items():
            if theirs == rest:
                return ours
    return None


def canonical_hook_name(name: str, n_layers: int | None = None, hf_prefix: str = GEMMA3_HF_PREFIX) -> str:
    """Map a hook name in any of the three conventions to its HookedViT name.

    Args:
        name: A HookedViT name (``blocks.3.hook_resid_post``), a TransformerBridge name
            (``vision_encoder.encoder_layers.3.hook_out``) or a Hugging Face module path
            (``model.vision_tower.encoder.layers.3``).
        n_layers: Number of layers of the tower. When given, names of layers that do not
            exist are rejected too.
        hf_prefix: Prefix of the vision tower in Hugging Face module paths. Defaults to
            Gemma 3's ``"model.vision_tower."``; bare-tower paths (no prefix) are accepted too.

    Returns:
        The HookedViT hook name.

    Raises:
        UnknownHookNameError: If no convention knows the name; the message lists the closest
            valid names.
    """
    valid = hooked_vit_names(n_layers) if n_layers is not None else None
    candidate: str | None
    if _BLOCK_RE.match(name) or name in PRE_HOOKS or name in POST_HOOKS:
        candidate = name if _is_hooked_vit_name(name) else None
    else:
        candidate = _from_bridge(name) or _from_hf(name, hf_prefix)
    if candidate is not None and (valid is None or candidate in valid):
        return candidate
    raise UnknownHookNameError(_unknown_message(name, n_layers, hf_prefix))


def _is_hooked_vit_name(name: str) -> bool:
    match = _BLOCK_RE.match(name)
    if match:
        return match.group(2) in BLOCK_HOOKS
    return name in PRE_HOOKS or name in POST_HOOKS


def equivalent_names(
    name: str, n_layers: int | None = None, hf_prefix: str = GEMMA3_HF_PREFIX
) -> HookNameTriple:
    """Name one activation in all three conventions.

    Args:
        name: A hook name in any convention (see :func:`canonical_hook_name`).
        n_layers: Number of layers of the tower, to reject layers that do not exist.
        hf_prefix: Prefix of the vision tower in Hugging Face module paths.

    Returns:
        The HookedViT name and, where they exist, the TransformerBridge name and the HF
        module path whose output is this activation.

    Example:
        >>> equivalent_names("vision_encoder.encoder_layers.16.hook_out").hooked_vit
        'blocks.16.hook_resid_post'
    """
    ours = canonical_hook_name(name, n_layers=n_layers, hf_prefix=hf_prefix)
    return HookNameTriple(ours, _bridge_name(ours), _hf_name(ours, hf_prefix))


def _unknown_message(name: str, n_layers: int | None, hf_prefix: str) -> str:
    layers = n_layers if n_layers is not None else 1
    pool = hooked_vit_names(layers)
    pool += [b for b in map(_bridge_name, pool) if b]
    pool += [h for h in (_hf_name(n, hf_prefix) for n in hooked_vit_names(layers)) if h]
    # Compare with the layer index normalised so that "blocks.7.hook_resid_pots" finds its twin.
    layer_match = re.search(r"\.(\d+)\.", name)
    if layer_match and n_layers is None:
        pool = [p.replace(".0.", f".{layer_match.group(1)}.") for p in pool]
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.5)
    where = f" of a {n_layers}-layer tower" if n_layers is not None else ""
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    return (
        f"Unknown vision hook name {name!r}{where}. Expected a HookedViT name such as "
        f"'blocks.0.hook_resid_post', a TransformerBridge name such as "
        f"'vision_encoder.encoder_layers.0.hook_out', or a Hugging Face module path such as "
        f"'{hf_prefix}encoder.layers.0'.{hint}"
    )
