"""The pieces of a HookedViT: the Hugging Face modules an adapter hands over (:class:`BlockParts`,
:class:`TowerParts`), and the hooked norm, attention, MLP and block built over them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.hooked_vit.config import NORM_TYPES, HookedViTConfig


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
            (``(n_tokens - n_register_tokens) * d_model`` numbers in any shape, prefix tokens first;
            registers have none).
        blocks: One :class:`BlockParts` per block.
        final_norm: Norm after the last block, or ``None``.
        prefix_tokens: Learned tokens put before the patches (``(n_prefix_tokens -
            n_register_tokens) * d_model`` numbers, e.g. a class token), or ``None``.
        register_tokens: Learned register tokens put after ``prefix_tokens`` and before the patches
            (``n_register_tokens * d_model`` numbers; DINOv2 with registers), or ``None``. They take
            no position embedding.
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
        embed_norm: Norm of the embeddings before the first block (CLIP's pre-LayerNorm), or
            ``None``.
        crops: ``(pixel_values, geometry=None, **tower_inputs) -> [crops, channels, H, W]``: the tower's batch rows
            for towers that see each image as several crops (LLaVA-NeXT's AnyRes: a base image and
            its tiles), from the processor's ``[images, max_crops, channels, H, W]``; ``None``: the
            pixels are the batch rows. Such a tower's geometry spans several rows per image.

    ``pos_embed`` is ``None`` for towers with rotary position embeddings.
    """

    patch_embed: nn.Module
    pos_embed: nn.Module | None
    blocks: list[BlockParts]
    final_norm: nn.Module | None = None
    prefix_tokens: nn.Parameter | None = None
    register_tokens: nn.Parameter | None = None
    interpolate_pos_encoding: Callable[..., torch.Tensor] | None = None
    geometry: Callable[..., ImageGeometry] | None = None
    input_keys: tuple[str, ...] = ()
    max_patches: Callable[[Any], int] | None = None
    embed_norm: nn.Module | None = None
    crops: Callable[..., torch.Tensor] | None = None


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


def is_hooked(hook_point: nn.Module) -> bool:
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
        hooked = is_hooked(self.hook_scale) or is_hooked(self.hook_normalized)
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


class AttentionGroups:
    """Which tokens attend to which in a packed sequence: each token only to its own group (its image,
    or its attention window), given as one group id per position in the tower's order.

    Where every group's positions are contiguous (images and Qwen2.5-VL's windows are), the fused
    path attends group by group, batching the groups of equal length into one call: no
    ``[tokens, tokens]`` mask is built, and the cost is that of the groups, not of the whole
    sequence squared (32 packed empty images of 256 patches cost 32x less than one masked
    8192-token attention). The mask itself is built only when a hook reads the pattern.

    Args:
        group: ``[positions]`` int64, the group of each position.
    """

    def __init__(self, group: torch.Tensor):
        self.group = group
        change = torch.ones(len(group), dtype=torch.bool, device=group.device)
        change[1:] = group[1:] != group[:-1]
        starts = change.nonzero().view(-1)
        lengths = torch.diff(starts, append=torch.tensor([len(group)], device=group.device))
        #: Each group one run of positions: then ``segments`` holds ``(start, length)`` per group.
        self.contiguous = len(torch.unique(group)) == len(starts)
        self.segments = list(zip(starts.tolist(), lengths.tolist(), strict=True)) if self.contiguous else []
        self._mask: torch.Tensor | None = None

    def mask(self) -> torch.Tensor:
        """``[positions, positions]`` bool, ``True`` where a query may attend to a key (built once)."""
        if self._mask is None:
            self._mask = self.group[:, None] == self.group[None, :]
        return self._mask

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        """Fused attention ``[batch, heads, positions, d_head]`` restricted to the groups."""
        if not self.contiguous:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(), scale=scale)
        batch, heads, positions, d_head = q.shape
        lengths = {length for _, length in self.segments}
        if len(lengths) == 1:  # equal groups back to back (copies of one image): a reshape, no copy
            (length,) = lengths
            n = positions // length

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(batch, heads, n, length, d_head).transpose(1, 2)

            z = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=scale)
            return z.transpose(1, 2).reshape(batch, heads, positions, d_head)
        z = torch.empty_like(q)
        for length in sorted(lengths):
            starts = torch.tensor([s for s, n in self.segments if n == length], device=q.device)
            index = (starts[:, None] + torch.arange(length, device=q.device)).reshape(-1)

            # [batch, groups, heads, length, d_head]
            qs, ks, vs = (
                t[:, :, index].reshape(batch, heads, -1, length, d_head).transpose(1, 2) for t in (q, k, v)
            )
            out = F.scaled_dot_product_attention(qs, ks, vs, scale=scale)
            z[:, :, index] = out.transpose(1, 2).reshape(batch, heads, -1, d_head)
        return z


@dataclass
class TokenContext:
    """What the blocks of a packed or rotary tower need besides the residual stream.

    Attributes:
        full_groups: Who attends to whom in full-attention blocks (each image of a packed
            sequence), or ``None`` (everything).
        window_groups: The same for windowed blocks (each window), or ``None``.
        cos, sin: ``[positions, d_head]`` rotary factors (float32), or ``None``.
    """

    full_groups: AttentionGroups | None = None
    window_groups: AttentionGroups | None = None
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None

    @classmethod
    def from_geometry(
        cls, geometry: ImageGeometry, cfg: HookedViTConfig, device: torch.device
    ) -> TokenContext:
        """Attention groups from the geometry's images and windows, rotary factors from its (row, col)."""
        geometry = geometry.to(device)
        full_groups = window_groups = None
        if geometry.packed and geometry.n_images > 1:
            full_groups = AttentionGroups(geometry.image_index)
        if cfg.full_attention_blocks is not None and geometry.window is not None:
            window_groups = AttentionGroups(geometry.window)
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
        return cls(full_groups=full_groups, window_groups=window_groups, cos=cos, sin=sin)


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
        groups: AttentionGroups | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` of shape ``[batch, tokens, d_model]``; returns the same shape.

        Args:
            x: The normalised residual stream.
            groups: Each token attends only within its group (an image, a window), or ``None``.
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
        if is_hooked(self.hook_attn_scores) or is_hooked(self.hook_pattern):
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            if groups is not None:
                scores = scores.masked_fill(~groups.mask(), float("-inf"))
            scores = self.hook_attn_scores(scores)
            # Softmax in float32 as the Hugging Face eager paths do (or equal to it in float32).
            pattern = self.hook_pattern(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
            z = torch.matmul(pattern, v)
        elif groups is not None:
            z = groups.attend(q, k, v, self.scale)
        else:
            z = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
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
            groups = context.window_groups if self.windowed else context.full_groups
            rotary = None if context.cos is None else (context.cos, context.sin)
            attn_out = self.attn(self.ln1(resid_pre), groups=groups, rotary=rotary)
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

    n_positioned_prefix = cfg.n_prefix_tokens - cfg.n_register_tokens
    if cfg.packed:
        patch_embed: nn.Module = nn.Linear(cfg.n_channels * cfg.patch_size**2, d, bias=False)
    else:
        patch_embed = nn.Conv2d(cfg.n_channels, d, cfg.patch_size, stride=cfg.patch_size)
    return TowerParts(
        patch_embed=patch_embed,
        pos_embed=nn.Embedding(cfg.n_tokens - cfg.n_register_tokens, d)
        if cfg.positional == "absolute"
        else None,
        blocks=[block() for _ in range(cfg.n_layers)],
        final_norm=None if cfg.final_norm_type is None else _norm_module(cfg.final_norm_type, d, eps),
        prefix_tokens=nn.Parameter(torch.zeros(1, n_positioned_prefix, d)) if n_positioned_prefix else None,
        register_tokens=(
            nn.Parameter(torch.zeros(1, cfg.n_register_tokens, d)) if cfg.n_register_tokens else None
        ),
        embed_norm=None if cfg.embed_norm_type is None else _norm_module(cfg.embed_norm_type, d, eps),
    )
