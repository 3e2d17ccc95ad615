"""Hook names: the parsed :class:`HookName`, and translation from other naming conventions.

The library names every activation by its :class:`~vis_steer_lens.HookedViT` hook name
(TransformerLens / ViT-Prisma style, e.g. ``blocks.3.hook_resid_post``). The model's tree of
:class:`~transformer_lens.hook_points.HookPoint` objects (its ``hook_dict``) is the one list
of valid names; this module holds no list of its own. Two other conventions are accepted
wherever a hook name is taken, through the :class:`HookNameMap` that each model family's
adapter provides:

* TransformerLens ``TransformerBridge`` names (families the Bridge does not support have none);
* Hugging Face module paths (the module's output is the activation).

The family's own names are in its adapter (e.g. ``vis_steer_lens.adapters.GEMMA3_HOOK_NAMES``).

Only hooks with an exact counterpart are mapped; the others exist in HookedViT alone.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


class UnknownHookNameError(KeyError):
    """A hook name that is valid in none of the naming conventions of a model."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly instead.
        return str(self.args[0])


def split_hook_name(name: str) -> tuple[int | None, str]:
    """``(layer, site)`` of a HookedViT name: ``blocks.3.attn.hook_z`` → ``(3, "attn.hook_z")``.

    Names outside the blocks (``hook_embed``, ``ln_final.hook_normalized``) have layer ``None``.
    This is the only place that takes a hook name apart.
    """
    match = _BLOCK_RE.match(name)
    if match:
        return int(match.group(1)), match.group(2)
    return None, name


@dataclass(frozen=True)
class HookName:
    """One hook of a model, parsed: where it is and what shape its activation has.

    Built by :meth:`vis_steer_lens.HookedViT.parse_hook_name` from the model's own hook points,
    never by hand.

    Attributes:
        name: The HookedViT name, e.g. ``"blocks.3.attn.hook_z"``.
        layer: The block index, or ``None`` for hooks outside the blocks.
        site: The name inside its block (``"attn.hook_z"``), or the whole name outside.
        dims: Symbolic shape of the activation, e.g. ``("batch", "pos", "head", "d_head")``.
        width: Size of one token's activation as an SAE reads it (per-head hooks count all
            heads together, as SAELens does for ``hook_z`` SAEs).
    """

    name: str
    layer: int | None
    site: str
    dims: tuple[str, ...]
    width: int

    @property
    def per_head(self) -> bool:
        """Whether the activation is ``[batch, pos, heads, d_head]``."""
        return self.dims[-2:] == ("head", "d_head")

    @property
    def is_residual(self) -> bool:
        """Whether this is the residual stream itself (``hook_resid_pre|mid|post``)."""
        return self.site in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")

    @property
    def stop_at_layer(self) -> int | None:
        """The ``stop_at_layer`` that runs the tower just far enough to fire this hook."""
        return None if self.layer is None else self.layer + 1

    def flatten(self, activation: torch.Tensor) -> torch.Tensor:
        """``[..., heads, d_head]`` → ``[..., heads * d_head]`` for per-head hooks; others unchanged.

        The one place where per-head activations are laid out for an SAE.
        """
        return activation.flatten(-2) if self.per_head else activation

    def unflatten(self, flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`flatten`: split ``flat``'s last dimension into ``like``'s heads.

        Leading dimensions are kept as they are, so ``[batch, 1, heads * d_head]`` becomes
        ``[batch, 1, heads, d_head]`` (broadcastable over the tokens).
        """
        return flat.reshape(*flat.shape[:-1], *like.shape[-2:]) if self.per_head else flat


@dataclass(frozen=True)
class HookNameMap:
    """How one model family's Hugging Face modules and TransformerBridge hooks map to HookedViT names.

    Provided by each adapter (:attr:`vis_steer_lens.adapters.VLMAdapter.hook_name_map`).

    Attributes:
        hf_prefix: Path of the vision tower inside the full Hugging Face model, with a trailing dot.
        hf_block: Path of block ``{layer}`` inside the tower.
        hf_block_sites: HookedViT site → path inside the block of the module whose output it
            is (``""``: the block itself).
        hf_other: Hooks outside the blocks → path inside the tower.
        hf_extra_prefixes: Other tower prefixes accepted on input (bare-tower paths always are).
        bridge_block: Bridge name of block ``{layer}``, or ``None`` where the family has no
            ``TransformerBridge``.
        bridge_block_sites: HookedViT site → Bridge name inside the block.
        bridge_other: Hooks outside the blocks → Bridge name.
        bridge_aliases: Further Bridge names accepted on input → HookedViT names (with
            ``{layer}`` placeholders).
        bridge_note: Said in metadata and errors when the family has no Bridge names.
    """

    hf_prefix: str
    hf_block: str
    hf_block_sites: Mapping[str, str]
    hf_other: Mapping[str, str] = field(default_factory=dict)
    hf_extra_prefixes: tuple[str, ...] = ()
    bridge_block: str | None = None
    bridge_block_sites: Mapping[str, str] = field(default_factory=dict)
    bridge_other: Mapping[str, str] = field(default_factory=dict)
    bridge_aliases: Mapping[str, str] = field(default_factory=dict)
    bridge_note: str = ""

    # ---- HookedViT -> other conventions
    def bridge_name(self, name: str) -> str | None:
        """The TransformerBridge name of a HookedViT name, or ``None``."""
        layer, site = split_hook_name(name)
        if layer is None:
            return self.bridge_other.get(name)
        inner = self.bridge_block_sites.get(site)
        if inner is None or self.bridge_block is None:
            return None
        return f"{self.bridge_block.format(layer=layer)}.{inner}"

    def hf_name(self, name: str) -> str | None:
        """The Hugging Face module path (in the full model) of a HookedViT name, or ``None``."""
        layer, site = split_hook_name(name)
        if layer is None:
            inner = self.hf_other.get(name)
            return None if inner is None else self.hf_prefix + inner
        inner = self.hf_block_sites.get(site)
        if inner is None:
            return None
        path = self.hf_block.format(layer=layer) + (f".{inner}" if inner else "")
        return self.hf_prefix + path

    # ---- other conventions -> HookedViT
    def from_bridge(self, name: str) -> str | None:
        """The HookedViT name of a TransformerBridge name, or ``None``."""
        for ours, theirs in self.bridge_other.items():
            if theirs == name:
                return ours
        if self.bridge_block is not None:
            block_re = re.escape(self.bridge_block).replace(re.escape("{layer}"), r"(\d+)")
            match = re.match(rf"^{block_re}\.(.+)$", name)
            if match:
                layer, inner = match.group(1), match.group(2)
                for site, theirs in self.bridge_block_sites.items():
                    if theirs == inner:
                        return f"blocks.{layer}.{site}"
        for alias, ours in self.bridge_aliases.items():
            alias_re = re.escape(alias).replace(re.escape("{layer}"), r"(?P<layer>\d+)")
            match = re.match(rf"^{alias_re}$", name)
            if match:
                return ours.format(**match.groupdict())
        return None

    def from_hf(self, name: str) -> str | None:
        """The HookedViT name of a Hugging Face module path (full-model or bare-tower), or ``None``."""
        block_re = re.escape(self.hf_block).replace(re.escape("{layer}"), r"(\d+)")
        for prefix in dict.fromkeys((self.hf_prefix, *self.hf_extra_prefixes, "")):
            if prefix and not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            match = re.match(rf"^{block_re}(?:\.(.+))?$", rest)
            if match:
                inner = match.group(2) or ""
                for site, theirs in self.hf_block_sites.items():
                    if theirs == inner:
                        return f"blocks.{match.group(1)}.{site}"
                continue
            for ours, theirs in self.hf_other.items():
                if theirs == rest:
                    return ours
        return None


@dataclass(frozen=True)
class HookNameTriple:
    """One activation named in each convention (``None`` where a convention has no name)."""

    hooked_vit: str
    transformer_bridge: str | None
    hf_module: str | None


def resolve_hook_name(name: str, valid_names: Sequence[str], name_map: HookNameMap) -> str:
    """Map a hook name in any convention to a HookedViT name in ``valid_names``.

    Args:
        name: A HookedViT name (``blocks.3.hook_resid_post``), a TransformerBridge name or a
            Hugging Face module path.
        valid_names: The model's HookedViT hook names (its ``hook_dict`` keys).
        name_map: The family's translation tables.

    Raises:
        UnknownHookNameError: If no convention knows the name; the message lists the closest
            valid names.
    """
    if name in valid_names:
        return name
    layer, _ = split_hook_name(name)
    if layer is None and not name.startswith(("hook_", "ln_final.")):
        candidate = name_map.from_bridge(name) or name_map.from_hf(name)
        if candidate is not None and candidate in valid_names:
            return candidate
    raise UnknownHookNameError(_unknown_message(name, valid_names, name_map))


def name_triple(name: str, valid_names: Sequence[str], name_map: HookNameMap) -> HookNameTriple:
    """Name one activation in all three conventions (see :func:`resolve_hook_name`)."""
    ours = resolve_hook_name(name, valid_names, name_map)
    return HookNameTriple(ours, name_map.bridge_name(ours), name_map.hf_name(ours))


def _unknown_message(name: str, valid_names: Sequence[str], name_map: HookNameMap) -> str:
    pool = list(valid_names)
    pool += [b for b in map(name_map.bridge_name, valid_names) if b]
    pool += [h for h in map(name_map.hf_name, valid_names) if h]
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.5)
    layers = {split_hook_name(n)[0] for n in valid_names} - {None}
    where = f" of a {len(layers)}-layer tower" if layers else ""
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    examples = ["a HookedViT name such as 'blocks.0.hook_resid_post'"]
    bridge = name_map.bridge_name("blocks.0.hook_resid_post")
    if bridge:
        examples.append(f"a TransformerBridge name such as {bridge!r}")
    hf = name_map.hf_name("blocks.0.hook_resid_post")
    if hf:
        examples.append(f"a Hugging Face module path such as {hf!r}")
    return f"Unknown vision hook name {name!r}{where}. Expected {', '.join(examples[:-1])} or {examples[-1]}.{hint}"


__all__ = [
    "HookName",
    "HookNameMap",
    "HookNameTriple",
    "UnknownHookNameError",
    "name_triple",
    "resolve_hook_name",
    "split_hook_name",
]
