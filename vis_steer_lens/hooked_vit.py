"""HookedViT: a vision tower with TransformerLens hook points, sharing the Hugging Face weights.

The tower's forward pass is written out here (rather than hooking Hugging Face modules)
so that every activation a user may want to read or edit is one tensor at one
:class:`~transformer_lens.hook_points.HookPoint`, with TransformerLens semantics, and an
edit at any hook reaches everything downstream.

Nothing here knows a model family. An adapter (:mod:`vis_steer_lens.adapters`) describes its
tower as a :class:`HookedViTConfig` (shapes, prefix tokens such as a class token, norm kind,
layer scale, final norm) and hands over the Hugging Face modules as :class:`TowerParts`; the
blocks are built from those, sharing every parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from vis_steer_lens.families import adapter_for, adapter_for_tower
from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.hook_names import (
    HookName,
    HookNameMap,
    HookNameTriple,
    name_triple,
    resolve_hook_name,
    split_hook_name,
)
from vis_steer_lens.saes.splicing import SAESplicingMixin

#: Norm kinds, as TransformerLens names them in ``cfg.normalization_type``.
NORM_TYPES = ("LN", "RMS")
#: How a tower encodes positions: added learned embeddings, or 2-D rotary embeddings in attention.
POSITIONAL_KINDS = ("absolute", "rotary_2d")


@dataclass
class HookedViTConfig:
    """Shape and layout of a vision tower, as HookedViT sees it.

    Round-trips through :meth:`to_dict` / :meth:`from_dict`. Besides the fields below it has
    the attributes TransformerLens' ``ActivationCache`` reads (``normalization_type``,
    ``attn_only``, ``device``, ``n_ctx``).

    Attributes:
        n_layers: Number of encoder blocks.
        d_model: Width of the residual stream.
        n_heads: Attention heads per block.
        d_head: Width of one head (``d_model // n_heads``).
        d_mlp: Hidden width of the MLP.
        image_size: Side of the (square) input image in pixels.
        patch_size: Side of one patch in pixels.
        n_channels: Colour channels of the input.
        layer_norm_eps: Epsilon of every norm.
        n_prefix_tokens: Tokens before the patches in the residual stream (1 for a class
            token, 0 for SigLIP). Patch statistics, maps and steering skip them.
        norm_type: ``"LN"`` (LayerNorm) or ``"RMS"`` (RMSNorm) in the blocks.
        final_norm_type: Norm after the last block (``"LN"``, ``"RMS"``) or ``None`` (none).
        layer_scale: Whether each block scales its attention and MLP outputs by learned
            per-channel factors before adding them to the residual stream.
        qk_norm: Whether queries and keys are normalised (over all heads together) before
            attention.
        act_fn: Name of the MLP activation (a key of ``transformers.activations.ACT2FN``).
        fused_qkv: Whether queries, keys and values come from one projection ``[3 * d_model, d_model]``
            (split into ``hook_q``/``hook_k``/``hook_v`` here).
        positional: ``"absolute"`` (learned position embeddings added after the patch embedding,
            ``hook_pos_embed``) or ``"rotary_2d"`` (2-D rotary embeddings of each patch's (row, col)
            applied to queries and keys, ``attn.hook_rot_q``/``attn.hook_rot_k``).
        rotary_theta: Base of the rotary frequencies.
        gated_mlp: Whether the MLP is gated (SwiGLU: ``W_out(act(W_gate x) * W_in x)``, with
            ``mlp.hook_pre`` the gate's pre-activation and ``mlp.hook_pre_linear`` the linear branch).
        packed: Whether images are packed into one sequence ``[1, tokens, d_model]`` (of any sizes;
            attention stays within each image) rather than one row per image.
        full_attention_blocks: Blocks that attend over the whole image; ``None`` for all. The other
            blocks attend within the geometry's windows (:attr:`ImageGeometry.window`).
        family: Model family of the adapter that built it (``"gemma3"``, ``"internvl3"``).
        model_name: Name or path the tower was loaded from (recorded in SAE metadata).
        hf_prefix: Prefix of the tower's modules inside the full Hugging Face model.
        attn_only: Always ``False`` (every block has an MLP); read by TransformerLens.
        device: Where the weights are; kept up to date by :class:`HookedViT`.
        extra: Free-form fields.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    image_size: int
    patch_size: int
    n_channels: int = 3
    layer_norm_eps: float = 1e-6
    n_prefix_tokens: int = 0
    norm_type: str = "LN"
    final_norm_type: str | None = "LN"
    layer_scale: bool = False
    qk_norm: bool = False
    act_fn: str = "gelu_pytorch_tanh"
    fused_qkv: bool = False
    positional: str = "absolute"
    rotary_theta: float = 10000.0
    gated_mlp: bool = False
    packed: bool = False
    full_attention_blocks: list[int] | None = None
    family: str = "gemma3"
    model_name: str = "unnamed"
    hf_prefix: str = ""
    attn_only: bool = False
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("norm_type", "final_norm_type"):
            value = getattr(self, name)
            if value not in NORM_TYPES and not (name == "final_norm_type" and value is None):
                raise ValueError(f"HookedViTConfig.{name} must be one of {NORM_TYPES}, got {value!r}.")
        if self.positional not in POSITIONAL_KINDS:
            raise ValueError(
                f"HookedViTConfig.positional must be one of {POSITIONAL_KINDS}, got {self.positional!r}."
            )
        if self.full_attention_blocks is not None:
            self.full_attention_blocks = [int(i) for i in self.full_attention_blocks]
        if self.n_prefix_tokens < 0:
            raise ValueError(f"n_prefix_tokens must be >= 0, got {self.n_prefix_tokens}.")

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        """Patch tokens per image (``grid_size ** 2``), not counting prefix tokens."""
        return self.grid_size**2

    @property
    def n_tokens(self) -> int:
        """Tokens in the residual stream: prefix tokens then patches."""
        return self.n_prefix_tokens + self.n_patches

    @property
    def n_ctx(self) -> int:
        """TransformerLens' name for :attr:`n_tokens`."""
        return self.n_tokens

    @property
    def normalization_type(self) -> str:
        """TransformerLens' name for :attr:`norm_type`."""
        return self.norm_type

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> HookedViTConfig:
        """Rebuild a config from :meth:`to_dict`'s output (unknown keys are rejected)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"Unknown HookedViTConfig fields {unknown}; known fields: {sorted(known)}.")
        return cls(**fields)


@dataclass
class BlockParts:
    """The Hugging Face modules of one encoder block, handed over by an adapter.

    Attributes:
        ln1, ln2: Norms before attention and before the MLP (``weight``, optional ``bias``,
            ``eps`` or ``variance_epsilon``).
        q, k, v, o: The attention's query, key, value and output projections (``nn.Linear``);
            ``q``, ``k``, ``v`` are ``None`` where ``qkv`` is given.
        mlp_in, mlp_out: The MLP's two linear layers (with a gated MLP, ``mlp_in`` is the linear
            branch, "up").
        act_fn: The MLP activation.
        q_norm, k_norm: Norms of queries and keys (over all heads), or ``None``.
        ls1, ls2: Layer-scale factors ``[d_model]`` of the attention and MLP outputs, or ``None``.
        attn_scale: Softmax scale (default ``d_head ** -0.5``).
        qkv: One fused projection ``[3 * heads * d_head, d_model]`` (queries, keys, values in that
            order), or ``None``.
        mlp_gate: The gate of a gated MLP (its pre-activation is ``mlp.hook_pre``), or ``None``.
    """

    ln1: nn.Module
    ln2: nn.Module
    q: nn.Linear | None
    k: nn.Linear | None
    v: nn.Linear | None
    o: nn.Linear
    mlp_in: nn.Linear
    mlp_out: nn.Linear
    act_fn: Callable[[torch.Tensor], torch.Tensor]
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None
    ls1: nn.Parameter | None = None
    ls2: nn.Parameter | None = None
    attn_scale: float | None = None
    qkv: nn.Linear | None = None
    mlp_gate: nn.Linear | None = None


@dataclass
class TowerParts:
    """The Hugging Face modules of a whole vision tower, handed over by an adapter.

    Attributes:
        patch_embed: ``Conv2d`` from pixels to patch embeddings.
        pos_embed: A module whose ``weight`` holds one position embedding per token
            (``n_tokens * d_model`` numbers in any shape, prefix tokens first).
        blocks: One :class:`BlockParts` per block.
        final_norm: Norm after the last block, or ``None``.
        prefix_tokens: Learned tokens put before the patches (``n_prefix_tokens * d_model``
            numbers, e.g. a class token), or ``None``.
        interpolate_pos_encoding: ``(embeddings [batch, tokens, d], height, width) ->
            [1, tokens, d]`` position embeddings for other image sizes, or ``None``.
        geometry: ``(pixel_values, **tower_inputs) -> ImageGeometry``: how a batch becomes
            tokens; ``None`` for a fixed square grid (:meth:`ImageGeometry.fixed_grid`). A packed
            tower's ``patch_embed`` maps the flattened patches ``[patches, patch_dim]`` to
            ``[patches, d_model]`` in the input's order; the geometry's ``order`` then arranges them.
        input_keys: The processor outputs the tower reads besides ``pixel_values`` (Qwen2-VL's
            grid sizes); empty for fixed grids.
        max_patches: ``image_processor -> int``: the most patches one image can have after that
            processor (the width of per-image maps); ``None``: the config's ``n_patches``.

    ``pos_embed`` is ``None`` for towers with rotary position embeddings.
    """

    patch_embed: nn.Module
    pos_embed: nn.Module | None
    blocks: list[BlockParts]
    final_norm: nn.Module | None = None
    prefix_tokens: nn.Parameter | None = None
    interpolate_pos_encoding: Callable[..., torch.Tensor] | None = None
    geometry: Callable[..., ImageGeometry] | None = None
    input_keys: tuple[str, ...] = ()
    max_patches: Callable[[Any], int] | None = None


class ShapedHookPoint(HookPoint):
    """A HookPoint that knows the symbolic shape of its activation.

    ``dims`` names each dimension (``("batch", "pos", "head", "d_head")``); the model's
    :class:`~vis_steer_lens.hook_names.HookName` of a hook is derived from it.
    """

    def __init__(self, *dims: str):
        super().__init__()
        self.dims = dims


class RMSNorm(nn.Module):
    """RMSNorm with a weight and no bias (for towers built from a config alone)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps


def _norm_module(kind: str, width: int, eps: float) -> nn.Module:
    return nn.LayerNorm(width, eps=eps) if kind == "LN" else RMSNorm(width, eps)


def _is_hooked(hook_point: nn.Module) -> bool:
    """Whether anything reads or edits this hook (a spliced SAE counts)."""
    if not isinstance(hook_point, HookPoint):
        return True
    return bool(hook_point.fwd_hooks or hook_point.bwd_hooks)


class HookedNorm(nn.Module):
    """LayerNorm or RMSNorm with TransformerLens' ``hook_scale`` and ``hook_normalized``.

    ``hook_normalized`` is ``(x - mean) / scale`` (LayerNorm) or ``x / scale`` (RMSNorm)
    before the weight and bias are applied, as in TransformerLens. With neither hook in use
    the fused computation runs instead.
    """

    def __init__(self, norm: nn.Module, kind: str):
        super().__init__()
        if kind not in NORM_TYPES:
            raise ValueError(f"Norm kind must be one of {NORM_TYPES}, got {kind!r}.")
        self.kind = kind
        self.w = norm.weight
        self.b = getattr(norm, "bias", None)
        eps = getattr(norm, "eps", None)
        self.eps = float(eps if eps is not None else norm.variance_epsilon)
        self.hook_scale = ShapedHookPoint("batch", "pos", "one")
        self.hook_normalized = ShapedHookPoint("batch", "pos", "d_model")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``[batch, tokens, d_model]``."""
        hooked = _is_hooked(self.hook_scale) or _is_hooked(self.hook_normalized)
        if self.kind == "LN":
            if not hooked:
                return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
            x = x - x.mean(-1, keepdim=True)
        elif not hooked:
            # As transformers' RMSNorms: statistics in float32, the weight in the input's dtype.
            normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
            return self.w * normed.to(x.dtype)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        out = self.hook_normalized(x / scale) * self.w
        return out if self.b is None else out + self.b


@dataclass
class TokenContext:
    """What the blocks of a packed or rotary tower need besides the residual stream.

    Attributes:
        full_mask: ``[positions, positions]`` bool, ``True`` where a query may attend to a key in
            full-attention blocks (its own image), or ``None`` (everything).
        window_mask: The same for windowed blocks (its own window), or ``None``.
        cos, sin: ``[positions, d_head]`` rotary factors (float32), or ``None``.
    """

    full_mask: torch.Tensor | None = None
    window_mask: torch.Tensor | None = None
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None

    @classmethod
    def from_geometry(
        cls, geometry: ImageGeometry, cfg: HookedViTConfig, device: torch.device
    ) -> TokenContext:
        """Masks from the geometry's images and windows, rotary factors from its (row, col)."""
        geometry = geometry.to(device)
        full_mask = window_mask = None
        if geometry.packed and geometry.n_images > 1:
            full_mask = geometry.image_index[:, None] == geometry.image_index[None, :]
        if cfg.full_attention_blocks is not None and geometry.window is not None:
            window_mask = geometry.window[:, None] == geometry.window[None, :]
        cos = sin = None
        if cfg.positional == "rotary_2d":
            quarter = cfg.d_head // 2
            inv_freq = 1.0 / (
                cfg.rotary_theta ** (torch.arange(0, quarter, 2, dtype=torch.float, device=device) / quarter)
            )
            rows = geometry.row.clamp(min=0).float()[:, None] * inv_freq
            cols = geometry.col.clamp(min=0).float()[:, None] * inv_freq
            angles = torch.cat([rows, cols], dim=-1)
            angles = torch.cat([angles, angles], dim=-1)
            cos, sin = angles.cos(), angles.sin()
        return cls(full_mask=full_mask, window_mask=window_mask, cos=cos, sin=sin)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[batch, pos, head, d_head]`` by ``cos``/``sin`` ``[pos, d_head]``, in float32."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)


class HookedAttention(nn.Module):
    """Multi-head self-attention over the tokens, over the Hugging Face projection layers.

    Runs PyTorch's fused scaled-dot-product attention unless a hook on the scores or the
    pattern is in use; only then are the ``[batch, heads, q, k]`` matrices materialised.
    The block's layer scale (if any) is part of this module's output, so that
    ``hook_attn_out`` is what the residual stream receives.

    A fused qkv projection is split into ``hook_q``/``hook_k``/``hook_v``; with rotary position
    embeddings, ``hook_rot_q``/``hook_rot_k`` hold the rotated queries and keys (TransformerLens'
    names). Attention is restricted by the block's mask (each image of a packed sequence, or each
    window) where the tower has one.

    TransformerLens weight views: ``W_Q, W_K, W_V`` ``[heads, d_model, d_head]``, ``b_Q, b_K,
    b_V`` ``[heads, d_head]``, ``W_O`` ``[heads, d_head, d_model]`` and ``b_O`` ``[d_model]``
    (``W_O`` and ``b_O`` with the layer scale folded in, so that per-head results plus ``b_O``
    sum to ``hook_attn_out``). With q/k norm, ``W_Q``/``W_K`` give the queries and keys before it.
    """

    def __init__(self, parts: BlockParts, n_heads: int, rotary: bool = False):
        super().__init__()
        self.qkv_proj = parts.qkv
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = parts.q, parts.k, parts.v, parts.o
        self.q_norm, self.k_norm = parts.q_norm, parts.k_norm
        self.layer_scale = parts.ls1
        self.n_heads = n_heads
        width = parts.qkv.out_features // 3 if parts.qkv is not None else parts.q.out_features
        self.d_head = width // n_heads
        self.scale = parts.attn_scale if parts.attn_scale is not None else self.d_head**-0.5
        self.hook_q = ShapedHookPoint("batch", "pos", "head", "d_head")
        self.hook_k = ShapedHookPoint("batch", "pos", "head", "d_head")
        self.hook_v = ShapedHookPoint("batch", "pos", "head", "d_head")
        if rotary:
            self.hook_rot_q = ShapedHookPoint("batch", "pos", "head", "d_head")
            self.hook_rot_k = ShapedHookPoint("batch", "pos", "head", "d_head")
        self.hook_attn_scores = ShapedHookPoint(
            "batch", "head", "query_pos", "key_pos"
        )  # scaled, pre-softmax
        self.hook_pattern = ShapedHookPoint("batch", "head", "query_pos", "key_pos")
        self.hook_z = ShapedHookPoint("batch", "pos", "head", "d_head")

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` of shape ``[batch, tokens, d_model]``; returns the same shape.

        Args:
            x: The normalised residual stream.
            mask: ``[tokens, tokens]`` bool, ``True`` where a query may attend to a key.
            rotary: ``(cos, sin)`` ``[tokens, d_head]`` where the tower uses rotary embeddings.
        """
        batch, tokens, _ = x.shape
        head_shape = (batch, tokens, self.n_heads, self.d_head)
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = self.hook_q(q.reshape(head_shape))
        k = self.hook_k(k.reshape(head_shape))
        v = self.hook_v(v.reshape(head_shape)).transpose(1, 2)
        if rotary is not None:
            q = self.hook_rot_q(_apply_rotary(q, *rotary))
            k = self.hook_rot_k(_apply_rotary(k, *rotary))
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if _is_hooked(self.hook_attn_scores) or _is_hooked(self.hook_pattern):
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            scores = self.hook_attn_scores(scores)
            # Softmax in float32 as the Hugging Face eager paths do (or equal to it in float32).
            pattern = self.hook_pattern(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
            z = torch.matmul(pattern, v)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        z = self.hook_z(z.transpose(1, 2))
        out = self.out_proj(z.reshape(batch, tokens, -1))
        return out if self.layer_scale is None else out * self.layer_scale

    def _projection(self, which: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight ``[heads * d_head, d_model]`` and bias of the queries (0), keys (1) or values (2)."""
        if self.qkv_proj is None:
            linear = (self.q_proj, self.k_proj, self.v_proj)[which]
            return linear.weight, linear.bias
        width = self.n_heads * self.d_head
        rows = slice(which * width, (which + 1) * width)
        bias = self.qkv_proj.bias
        return self.qkv_proj.weight[rows], None if bias is None else bias[rows]

    def _heads_in(self, which: int) -> torch.Tensor:
        weight, _ = self._projection(which)
        return weight.T.reshape(-1, self.n_heads, self.d_head).permute(1, 0, 2)

    def _bias_in(self, which: int) -> torch.Tensor:
        weight, bias = self._projection(which)
        bias = bias if bias is not None else weight.new_zeros(weight.shape[0])
        return bias.reshape(self.n_heads, self.d_head)

    @property
    def W_Q(self) -> torch.Tensor:  # noqa: N802 - TransformerLens' names
        return self._heads_in(0)

    @property
    def W_K(self) -> torch.Tensor:  # noqa: N802
        return self._heads_in(1)

    @property
    def W_V(self) -> torch.Tensor:  # noqa: N802
        return self._heads_in(2)

    @property
    def b_Q(self) -> torch.Tensor:  # noqa: N802
        return self._bias_in(0)

    @property
    def b_K(self) -> torch.Tensor:  # noqa: N802
        return self._bias_in(1)

    @property
    def b_V(self) -> torch.Tensor:  # noqa: N802
        return self._bias_in(2)

    @property
    def W_O(self) -> torch.Tensor:  # noqa: N802
        w = self.out_proj.weight.T.reshape(self.n_heads, self.d_head, -1)
        return w if self.layer_scale is None else w * self.layer_scale

    @property
    def b_O(self) -> torch.Tensor:  # noqa: N802
        bias = self.out_proj.bias
        if bias is None:
            bias = self.out_proj.weight.new_zeros(self.out_proj.out_features)
        return bias if self.layer_scale is None else bias * self.layer_scale


class HookedMLP(nn.Module):
    """Two-layer or gated MLP with hooks on the pre- and post-activation hidden units.

    A gated MLP (SwiGLU) computes ``W_out(act(W_gate x) * W_in x)`` as TransformerLens' gated
    MLPs: ``hook_pre`` is the gate's pre-activation, ``hook_pre_linear`` the linear branch and
    ``hook_post`` their product. The block's layer scale (if any) is part of the output.
    TransformerLens weight views: ``W_in`` ``[d_model, d_mlp]``, ``b_in``, ``W_gate``, ``b_gate``
    (gated only), ``W_out`` ``[d_mlp, d_model]`` and ``b_out`` (the last two with the layer scale
    folded in).
    """

    def __init__(self, parts: BlockParts):
        super().__init__()
        self.fc1, self.fc2 = parts.mlp_in, parts.mlp_out
        self.gate = parts.mlp_gate
        self.act_fn = parts.act_fn
        self.layer_scale = parts.ls2
        self.hook_pre = ShapedHookPoint("batch", "pos", "d_mlp")
        if self.gate is not None:
            self.hook_pre_linear = ShapedHookPoint("batch", "pos", "d_mlp")
        self.hook_post = ShapedHookPoint("batch", "pos", "d_mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, tokens, d_model]`` to the same shape."""
        if self.gate is None:
            post = self.act_fn(self.hook_pre(self.fc1(x)))
        else:
            post = self.act_fn(self.hook_pre(self.gate(x))) * self.hook_pre_linear(self.fc1(x))
        out = self.fc2(self.hook_post(post))
        return out if self.layer_scale is None else out * self.layer_scale

    @property
    def W_gate(self) -> torch.Tensor | None:  # noqa: N802
        return None if self.gate is None else self.gate.weight.T

    @property
    def b_gate(self) -> torch.Tensor | None:
        return None if self.gate is None else self.gate.bias

    @property
    def W_in(self) -> torch.Tensor:  # noqa: N802
        return self.fc1.weight.T

    @property
    def b_in(self) -> torch.Tensor:
        return self.fc1.bias

    @property
    def W_out(self) -> torch.Tensor:  # noqa: N802
        w = self.fc2.weight.T
        return w if self.layer_scale is None else w * self.layer_scale

    @property
    def b_out(self) -> torch.Tensor:
        return self.fc2.bias if self.layer_scale is None else self.fc2.bias * self.layer_scale


class HookedViTBlock(nn.Module):
    """One pre-norm encoder block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(.))`` (layer scale inside)."""

    def __init__(self, parts: BlockParts, cfg: HookedViTConfig, layer: int = 0):
        super().__init__()
        #: Whether this block attends within windows (the others attend over whole images).
        self.windowed = cfg.full_attention_blocks is not None and layer not in cfg.full_attention_blocks
        # Registered in the order they run, so that hook_dict lists hooks in firing order.
        self.hook_resid_pre = ShapedHookPoint("batch", "pos", "d_model")
        self.ln1 = HookedNorm(parts.ln1, cfg.norm_type)
        self.attn = HookedAttention(parts, cfg.n_heads, rotary=cfg.positional == "rotary_2d")
        self.hook_attn_out = ShapedHookPoint("batch", "pos", "d_model")
        self.hook_resid_mid = ShapedHookPoint("batch", "pos", "d_model")
        self.ln2 = HookedNorm(parts.ln2, cfg.norm_type)
        self.mlp = HookedMLP(parts)
        self.hook_mlp_out = ShapedHookPoint("batch", "pos", "d_model")
        self.hook_resid_post = ShapedHookPoint("batch", "pos", "d_model")

    def forward(self, resid_pre: torch.Tensor, context: TokenContext | None = None) -> torch.Tensor:
        """Map the residual stream ``[batch, tokens, d_model]`` to the next one.

        ``context`` carries the attention mask and rotary factors of packed or rotary towers.
        """
        resid_pre = self.hook_resid_pre(resid_pre)
        if context is None:
            attn_out = self.attn(self.ln1(resid_pre))
        else:
            mask = context.window_mask if self.windowed else context.full_mask
            rotary = None if context.cos is None else (context.cos, context.sin)
            attn_out = self.attn(self.ln1(resid_pre), mask=mask, rotary=rotary)
        attn_out = self.hook_attn_out(attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


def parts_from_config(cfg: HookedViTConfig) -> TowerParts:
    """Fresh modules of the layout ``cfg`` describes (for a tower built without Hugging Face)."""
    from transformers.activations import ACT2FN

    d, eps = cfg.d_model, cfg.layer_norm_eps

    width = cfg.n_heads * cfg.d_head

    def block() -> BlockParts:
        fused = cfg.fused_qkv
        return BlockParts(
            ln1=_norm_module(cfg.norm_type, d, eps),
            ln2=_norm_module(cfg.norm_type, d, eps),
            q=None if fused else nn.Linear(d, width),
            k=None if fused else nn.Linear(d, width),
            v=None if fused else nn.Linear(d, width),
            qkv=nn.Linear(d, 3 * width) if fused else None,
            mlp_gate=nn.Linear(d, cfg.d_mlp) if cfg.gated_mlp else None,
            o=nn.Linear(width, d),
            mlp_in=nn.Linear(d, cfg.d_mlp),
            mlp_out=nn.Linear(cfg.d_mlp, d),
            act_fn=ACT2FN[cfg.act_fn],
            q_norm=RMSNorm(cfg.n_heads * cfg.d_head, eps) if cfg.qk_norm else None,
            k_norm=RMSNorm(cfg.n_heads * cfg.d_head, eps) if cfg.qk_norm else None,
            ls1=nn.Parameter(torch.ones(d)) if cfg.layer_scale else None,
            ls2=nn.Parameter(torch.ones(d)) if cfg.layer_scale else None,
        )

    if cfg.packed:
        patch_embed: nn.Module = nn.Linear(cfg.n_channels * cfg.patch_size**2, d, bias=False)
    else:
        patch_embed = nn.Conv2d(cfg.n_channels, d, cfg.patch_size, stride=cfg.patch_size)
    return TowerParts(
        patch_embed=patch_embed,
        pos_embed=nn.Embedding(cfg.n_tokens, d) if cfg.positional == "absolute" else None,
        blocks=[block() for _ in range(cfg.n_layers)],
        final_norm=None if cfg.final_norm_type is None else _norm_module(cfg.final_norm_type, d, eps),
        prefix_tokens=nn.Parameter(torch.zeros(1, cfg.n_prefix_tokens, d)) if cfg.n_prefix_tokens else None,
    )


class HookNameResolutionMixin:
    """Hook methods of ``HookedRootModule`` that take names in any naming convention.

    The class using it provides ``resolve_hook_name`` and ``_cache_model`` (the module whose
    ``cfg`` an ``ActivationCache`` reads, for shorthand such as ``cache["resid_post", -1]``).
    """

    def _enable_hook_with_name(self, name: str, hook: Callable, dir: Any) -> None:
        super()._enable_hook_with_name(self.resolve_hook_name(name), hook, dir)

    def add_hook(
        self,
        name: Any,
        hook: Callable,
        dir: Any = "fwd",
        is_permanent: bool = False,
        level=None,
        prepend=False,
    ):
        """Add a hook as ``HookedRootModule.add_hook``; names may be in any convention."""
        if isinstance(name, str):
            name = self.resolve_hook_name(name)
        super().add_hook(name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def get_caching_hooks(self, names_filter=None, *args: Any, **kwargs: Any):
        """As ``HookedRootModule.get_caching_hooks``, resolving names in any convention."""
        if isinstance(names_filter, str):
            names_filter = self.resolve_hook_name(names_filter)
        elif isinstance(names_filter, (list, tuple)):
            names_filter = [self.resolve_hook_name(n) for n in names_filter]
        return super().get_caching_hooks(names_filter, *args, **kwargs)

    def run_with_cache(self, *model_args: Any, return_cache_object: bool = True, **kwargs: Any):
        """Run the tower and cache activations, as ``HookedTransformer.run_with_cache``.

        Args:
            *model_args: Arguments of :meth:`forward`.
            return_cache_object: Wrap the cache in a TransformerLens ``ActivationCache``
                (``cache["resid_post", 3]`` shorthand); a plain dict otherwise.
            **kwargs: ``names_filter``, ``device``, ``remove_batch_dim``, ... as in
                TransformerLens, plus keyword arguments of :meth:`forward`.

        Returns:
            ``(output, cache)``.
        """
        out, cache_dict = super().run_with_cache(*model_args, **kwargs)
        if return_cache_object:
            has_batch_dim = not kwargs.get("remove_batch_dim", False)
            return out, ActivationCache(cache_dict, self._cache_model, has_batch_dim=has_batch_dim)
        return out, cache_dict


class HookedViT(SAESplicingMixin, HookNameResolutionMixin, HookedRootModule):
    """A vision tower with TransformerLens hook points.

    The module wraps a Hugging Face vision tower (SigLIP in Gemma 3, InternViT in InternVL3,
    any family with an adapter) without copying its weights: parameters are shared, so the
    Hugging Face model and this one always agree. Hook names follow TransformerLens /
    ViT-Prisma (``blocks.{i}.hook_resid_post``, ``blocks.{i}.attn.hook_pattern``, ...); see
    :attr:`hook_dict` for the full list. Hugging Face module paths and TransformerLens
    ``TransformerBridge`` names of the family are accepted wherever a hook name is.

    The residual stream is ``[batch, tokens, d_model]`` with ``cfg.n_prefix_tokens`` prefix
    tokens (a class token, say) before the ``cfg.n_patches`` patches in row-major order.

    TransformerLens' ``ActivationCache`` analysis works on its caches (``decompose_resid``,
    ``accumulated_resid``, ``apply_ln_to_stack``, ``stack_head_results``,
    ``get_full_resid_decomposition``): the config has the fields it reads and the blocks expose
    ``W_Q``, ``W_O``, ``W_in``, ``W_out``, ... (see :class:`HookedAttention`, :class:`HookedMLP`).

    Example:
        >>> vit = HookedViT.from_pretrained("google/gemma-3-4b-it")  # doctest: +SKIP
        >>> out, cache = vit.run_with_cache(pixel_values)  # doctest: +SKIP
        >>> cache["resid_post", 16].shape  # [batch, tokens, d_model]  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: HookedViTConfig,
        parts: TowerParts | None = None,
        *,
        name_map: HookNameMap | None = None,
        hf_tower: nn.Module | None = None,
    ):
        """Build the tower over ``parts`` (fresh modules from ``cfg`` if ``None``).

        Use :meth:`from_hf` or :meth:`from_pretrained` for a Hugging Face tower; this
        constructor is what adapters call.
        """
        super().__init__()
        self.cfg = cfg
        parts = parts if parts is not None else parts_from_config(cfg)
        if len(parts.blocks) != cfg.n_layers:
            raise ValueError(f"cfg.n_layers={cfg.n_layers} but {len(parts.blocks)} blocks were given.")
        # Kept out of the module tree: their parameters are registered below under TL names.
        object.__setattr__(self, "_hf_tower", hf_tower)
        object.__setattr__(self, "_name_map", name_map or HookNameMap(cfg.hf_prefix, "blocks.{layer}", {}))
        object.__setattr__(self, "_interpolate", parts.interpolate_pos_encoding)
        object.__setattr__(self, "_geometry_fn", parts.geometry)
        object.__setattr__(self, "_max_patches_fn", parts.max_patches)
        #: The processor outputs this tower reads besides ``pixel_values`` (e.g. ``image_grid_thw``).
        self.tower_input_keys: tuple[str, ...] = tuple(parts.input_keys)
        if (parts.pos_embed is None) != (cfg.positional != "absolute"):
            raise ValueError("parts.pos_embed must be given exactly when cfg.positional is 'absolute'.")
        self.patch_embed = parts.patch_embed
        self.prefix_tokens = parts.prefix_tokens
        self.pos_embed = parts.pos_embed
        self.hook_embed = ShapedHookPoint("batch", "pos", "d_model")
        if self.pos_embed is not None:
            self.hook_pos_embed = ShapedHookPoint("batch", "pos", "d_model")
        self.blocks = nn.ModuleList(
            HookedViTBlock(block, cfg, layer) for layer, block in enumerate(parts.blocks)
        )
        if (parts.final_norm is None) != (cfg.final_norm_type is None):
            raise ValueError("cfg.final_norm_type and parts.final_norm must both be set or both be None.")
        self.ln_final = (
            None if parts.final_norm is None else HookedNorm(parts.final_norm, cfg.final_norm_type)
        )
        self.setup()
        self.cfg.device = str(self.device)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_hf(cls, tower: nn.Module, model_name: str | None = None) -> HookedViT:
        """Wrap a Hugging Face vision tower already in memory, sharing its weights.

        Args:
            tower: A bare Hugging Face vision tower of a family with an adapter (SigLIP from a
                Gemma 3, InternViT from an InternVL3).
            model_name: Name recorded in ``cfg.model_name``. Defaults to the tower config's
                ``_name_or_path``.

        Raises:
            UnsupportedModelError: If no adapter knows the tower's architecture.
        """
        return adapter_for_tower(tower).hooked_vit(tower, model_name=model_name)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
    ) -> HookedViT:
        """Load only the vision weights of a VLM checkpoint (a hub id or a local folder).

        Args:
            name_or_path: Hub id such as ``"google/gemma-3-4b-it"`` or a folder written by
                ``save_pretrained``.
            device: Device to put the weights on. Defaults to CPU.
            dtype: Weight dtype. Defaults to the checkpoint's.
            revision: Hub revision.
        """
        adapter = adapter_for(name_or_path, revision=revision)
        tower = adapter.load_tower(name_or_path, device=device, dtype=dtype, revision=revision)
        return adapter.hooked_vit(tower, model_name=name_or_path)

    @property
    def hf_tower(self) -> nn.Module | None:
        """The wrapped Hugging Face tower (same parameters as this module), if any."""
        return self._hf_tower

    @property
    def hook_name_map(self) -> HookNameMap:
        """The family's translation tables for Hugging Face and TransformerBridge names."""
        return self._name_map

    @property
    def _reference_weight(self) -> torch.Tensor:
        if self.pos_embed is not None:
            return self.pos_embed.weight
        return next(self.patch_embed.parameters())

    @property
    def device(self) -> torch.device:
        return self._reference_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._reference_weight.dtype

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.cfg.device = str(self.device)
        return out

    @property
    def W_pos(self) -> torch.Tensor:  # noqa: N802 - TransformerLens' name
        """Position embeddings ``[tokens, d_model]`` (prefix tokens first)."""
        if self.pos_embed is None:
            raise AttributeError("This tower has rotary position embeddings and no W_pos.")
        return self.pos_embed.weight.reshape(-1, self.cfg.d_model)

    # ------------------------------------------------------------------ geometry
    def image_geometry(self, pixel_values: torch.Tensor, **tower_inputs: Any) -> ImageGeometry:
        """Where every token of this batch sits (see :class:`~vis_steer_lens.geometry.ImageGeometry`).

        Args:
            pixel_values: The tower's input, as the processor gives it.
            **tower_inputs: What else the family's tower reads (Qwen2-VL's ``image_grid_thw``).
        """
        if self._geometry_fn is not None:
            return self._geometry_fn(pixel_values, **tower_inputs)
        if tower_inputs:
            raise ValueError(f"This tower takes pixel_values only, got also {sorted(tower_inputs)}.")
        height, width = pixel_values.shape[-2:]
        grid = (height // self.cfg.patch_size, width // self.cfg.patch_size)
        return ImageGeometry.fixed_grid(
            pixel_values.shape[0], grid, self.cfg.n_prefix_tokens, device=pixel_values.device
        )

    def max_patches_per_image(self, image_processor: Any = None) -> int:
        """The most patches one image can have after ``image_processor``: ``cfg.n_patches`` for a fixed
        grid; for native-resolution towers what the processor's pixel bounds allow (the width of
        mining's per-image maps)."""
        if self._max_patches_fn is None:
            return int(self.cfg.n_patches)
        if image_processor is None:
            raise ValueError(
                "A native-resolution tower's patch count per image depends on its image processor."
            )
        return int(self._max_patches_fn(image_processor))

    # ------------------------------------------------------------------ forward
    #: The image processor integer (image) tensors go through; a HookedVLM sets its own.
    image_processor: Any = None

    def _processed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The one rule for pixel tensors (:func:`~vis_steer_lens.activations.to_pixel_values`): an
        integer tensor ``[batch, channels, H, W]`` holds images (values 0..255) for the image processor;
        a float one holds processed pixel values, refused when it looks like raw 0..255 pixels."""
        from vis_steer_lens.activations import (
            PixelValuesError,
            check_processed_pixels,
            is_image,
            to_pixel_values,
        )

        if not is_image(pixel_values):
            return check_processed_pixels(pixel_values)
        if self.image_processor is None:
            raise PixelValuesError(
                f"An integer ({pixel_values.dtype}) pixel tensor is images (values 0..255), and this HookedViT has "
                "no image processor to resize and normalise them. Use the HookedVLM (it has one), set "
                "vit.image_processor = AutoImageProcessor.from_pretrained(<the model>), or pass pixel values "
                "from the model's processor."
            )
        if pixel_values.ndim != 4:
            raise PixelValuesError(
                f"Integer image tensors go as [batch, channels, H, W], got {tuple(pixel_values.shape)}."
            )
        return to_pixel_values(list(pixel_values), self.image_processor)

    def embed(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        geometry: ImageGeometry | None = None,
    ) -> torch.Tensor:
        """Token and position embeddings: ``[batch, channels, H, W]`` → ``[batch, tokens, d_model]``.

        ``hook_embed`` holds the prefix tokens and the patch embeddings, ``hook_pos_embed`` the
        position embeddings; the residual stream starts as their sum. A packed tower takes the
        flattened patches ``[patches, patch_dim]`` with their ``geometry`` and returns
        ``[1, patches, d_model]`` in the geometry's order (its positions are rotary, in attention).
        """
        if self.cfg.packed:
            if geometry is None:
                raise ValueError("A packed tower needs the batch's geometry to embed its patches.")
            tokens = self.patch_embed(pixel_values.to(device=self.device, dtype=self.dtype))
            tokens = tokens[geometry.order.to(tokens.device)].unsqueeze(0)
            return self.hook_embed(tokens)
        pixel_values = self._processed_pixels(pixel_values)
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.cfg.n_channels:
            raise ValueError(
                f"HookedViT expects pixel_values of shape [batch, {self.cfg.n_channels}, height, width], "
                f"got {tuple(pixel_values.shape)}. Use the model's processor to turn images into pixel_values."
            )
        height, width = pixel_values.shape[-2:]
        if not interpolate_pos_encoding and (height, width) != (self.cfg.image_size, self.cfg.image_size):
            raise ValueError(
                f"This tower takes {self.cfg.image_size}x{self.cfg.image_size} images, got {height}x{width}. "
                "Resize with the model's processor, or pass interpolate_pos_encoding=True."
            )
        patches = self.patch_embed(pixel_values.to(device=self.device, dtype=self.dtype))
        tokens = patches.flatten(2).transpose(1, 2)
        if self.prefix_tokens is not None:
            prefix = self.prefix_tokens.reshape(1, -1, self.cfg.d_model).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([prefix, tokens], dim=1)
        embed = self.hook_embed(tokens)
        if self.pos_embed is None:
            return embed
        if interpolate_pos_encoding:
            if self._interpolate is None:
                raise ValueError("This tower cannot interpolate its position embeddings.")
            pos = self._interpolate(embed, height, width)
        else:
            pos = self.W_pos.unsqueeze(0)
        pos = pos.expand(embed.shape[0], -1, -1)
        if _is_hooked(self.hook_pos_embed):
            pos = self.hook_pos_embed(pos.clone())  # a real tensor, so that hooks may edit it in place
        return embed + pos

    def forward(
        self,
        input: torch.Tensor,
        *,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        interpolate_pos_encoding: bool = False,
        geometry: ImageGeometry | None = None,
        **tower_inputs: Any,
    ) -> torch.Tensor:
        """Run the tower, or a slice of its blocks.

        Args:
            input: ``pixel_values`` of shape ``[batch, channels, H, W]`` (a packed tower:
                the processor's flattened patches ``[patches, patch_dim]``), or, with
                ``start_at_layer``, the residual stream ``[batch, tokens, d_model]`` entering
                that block (packed: ``[1, tokens, d_model]``).
            start_at_layer: First block to run (as ``HookedTransformer.forward``). The input is
                then the residual stream, and the embedding hooks do not fire.
            stop_at_layer: Block to stop before (exclusive; negative counts from the end). The
                residual stream entering it is returned and ``ln_final`` does not run. So
                ``stop_at_layer=L + 1`` returns ``blocks.L.hook_resid_post``.
            interpolate_pos_encoding: Interpolate position embeddings for other image sizes.
            geometry: The batch's :class:`~vis_steer_lens.geometry.ImageGeometry` (computed from
                the pixels and ``tower_inputs`` if not given; needed with ``start_at_layer`` on a
                packed or rotary tower).
            **tower_inputs: What else the family's tower reads from the processor's outputs
                (Qwen2-VL: ``image_grid_thw``).

        Returns:
            ``[batch, tokens, d_model]``: the tower's last hidden state (after ``ln_final``
            where the tower has one, equal to the Hugging Face tower's ``last_hidden_state``),
            or the residual stream when ``stop_at_layer`` is given.
        """
        n_layers = self.cfg.n_layers
        start = 0 if start_at_layer is None else _layer_index(start_at_layer, n_layers, "start_at_layer")
        stop = n_layers if stop_at_layer is None else _layer_index(stop_at_layer, n_layers, "stop_at_layer")
        needs_context = self._needs_context
        if needs_context and geometry is None:
            if start_at_layer is not None:
                raise ValueError(
                    "This tower's blocks need the batch's geometry: pass geometry=vit.image_geometry(pixel_values, "
                    "...) with start_at_layer."
                )
            geometry = self.image_geometry(input, **tower_inputs)
        elif tower_inputs and not needs_context:
            raise ValueError(f"This tower takes pixel_values only, got also {sorted(tower_inputs)}.")
        if start_at_layer is None:
            resid = self.embed(input, interpolate_pos_encoding=interpolate_pos_encoding, geometry=geometry)
        else:
            expected = (self.cfg.n_tokens, self.cfg.d_model)
            if self.cfg.packed:
                expected = (geometry.n_positions, self.cfg.d_model)
            if input.ndim != 3 or (not interpolate_pos_encoding and tuple(input.shape[1:]) != expected):
                raise ValueError(
                    f"With start_at_layer, HookedViT expects the residual stream [batch, {expected[0]}, "
                    f"{expected[1]}], got {tuple(input.shape)}."
                )
            resid = input.to(device=self.device, dtype=self.dtype)
        context = TokenContext.from_geometry(geometry, self.cfg, self.device) if needs_context else None
        for block in self.blocks[start:stop]:
            resid = block(resid) if context is None else block(resid, context)
        if stop_at_layer is not None or self.ln_final is None:
            return resid
        return self.ln_final(resid)

    @property
    def _needs_context(self) -> bool:
        """Whether the blocks need the geometry (packed images, rotary positions, windows)."""
        cfg = self.cfg
        return cfg.packed or cfg.positional != "absolute" or cfg.full_attention_blocks is not None

    # ------------------------------------------------------------------ hooks
    def resolve_hook_name(self, name: str) -> str:
        """The HookedViT name of a hook given in any naming convention of this model's family.

        Raises:
            UnknownHookNameError: With the closest valid names, if the name is unknown.
        """
        if name in self.hook_dict:
            return name
        return resolve_hook_name(name, self._hook_sites(), self._name_map)

    def _hook_sites(self) -> list[str]:
        """Every hook name, including those where an SAE is spliced in now."""
        return list(self.hook_dict) + list(self.__dict__.get("_spliced_saes", {}))

    def parse_hook_name(self, name: str) -> HookName:
        """The parsed :class:`~vis_steer_lens.hook_names.HookName` of a hook (any convention).

        Raises:
            UnknownHookNameError: If the name is unknown.
        """
        name = self.resolve_hook_name(name)
        hook_point = self.get_submodule(name)
        hook_point = getattr(hook_point, "original_hook_point", hook_point)  # an SAE spliced in there
        layer, site = split_hook_name(name)
        dims = getattr(hook_point, "dims", None) or ("batch", "pos", "d_model")
        sizes = {
            "d_model": self.cfg.d_model,
            "d_mlp": self.cfg.d_mlp,
            "key_pos": self.cfg.n_tokens,
            "one": 1,
            "d_head": self.cfg.n_heads * self.cfg.d_head,
        }
        return HookName(name=name, layer=layer, site=site, dims=tuple(dims), width=sizes.get(dims[-1], 0))

    def hook_width(self, name: str) -> int:
        """Last dimension of the activation at a hook (``d_in`` of an SAE placed there).

        Per-head hooks (``hook_q|k|v|z``) count all heads together, as SAELens does for
        ``hook_z`` SAEs.
        """
        return self.parse_hook_name(name).width

    def equivalent_names(self, name: str) -> HookNameTriple:
        """One hook named in HookedViT, TransformerBridge and Hugging Face conventions."""
        return name_triple(name, self._hook_sites(), self._name_map)

    @property
    def _cache_model(self) -> HookedViT:
        return self

    def hook_names(self) -> list[str]:
        """All hook names, in the order they fire."""
        return list(self.hook_dict)

    def tower_fingerprint(self) -> str:
        """A hash of every weight of the tower (names, shapes and values), as 16 hex digits.

        Values are hashed at bfloat16 precision, so a bfloat16 checkpoint loaded in float32 or
        bfloat16 gives the same fingerprint. SAEs record it (``cfg.metadata.tower_fingerprint``)
        so that :func:`~vis_steer_lens.load_sae` can tell a model with the same tower (Gemma 3
        4B, 12B and 27B share one) from one with other weights of the same shapes.
        """
        import hashlib

        digest = hashlib.sha1()
        for name, param in self.state_dict().items():
            digest.update(f"{name}:{tuple(param.shape)};".encode())
            values = param.detach().to(device="cpu", dtype=torch.bfloat16).contiguous()
            digest.update(values.view(torch.int16).numpy().tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ TransformerLens analysis
    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> torch.Tensor:
        """Sum of the attention and MLP output biases written before ``layer`` ``[d_model]``.

        As ``HookedTransformer.accumulated_bias`` (used by ``get_full_resid_decomposition``):
        layer scale folded in; with ``mlp_input``, block ``layer``'s attention bias too.
        """
        total = torch.zeros(self.cfg.d_model, device=self.device, dtype=self.dtype)
        for index in range(layer):
            total = total + self.blocks[index].attn.b_O
            if include_mlp_biases:
                total = total + self.blocks[index].mlp.b_out
        if mlp_input:
            total = total + self.blocks[layer].attn.b_O
        return total

    def __repr__(self) -> str:
        c = self.cfg
        prefix = f" + {c.n_prefix_tokens} prefix" if c.n_prefix_tokens else ""
        tokens = (
            "tokens=packed images of any size"
            if c.packed
            else f"tokens={c.n_patches} patches ({c.grid_size}x{c.grid_size})"
        )
        return (
            f"HookedViT({c.model_name!r}, family={c.family!r}, n_layers={c.n_layers}, d_model={c.d_model}, "
            f"n_heads={c.n_heads}, d_mlp={c.d_mlp}, {tokens}"
            f"{prefix}, norm={c.norm_type}, layer_scale={c.layer_scale}, hooks={len(self.hook_dict)})"
        )


def _layer_index(layer: int, n_layers: int, what: str) -> int:
    if not -n_layers <= layer <= n_layers:
        raise ValueError(f"{what}={layer} is out of range for a {n_layers}-layer tower (use 0..{n_layers}).")
    return layer % n_layers if layer < 0 else layer


__all__ = [
    "POSITIONAL_KINDS",
    "BlockParts",
    "HookNameResolutionMixin",
    "HookedViT",
    "HookedViTConfig",
    "ShapedHookPoint",
    "TokenContext",
    "TowerParts",
    "parts_from_config",
]
