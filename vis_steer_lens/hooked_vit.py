"""HookedViT: a vision tower with TransformerLens hook points, sharing the Hugging Face weights.

The tower's forward pass is written out here (rather than hooking Hugging Face modules)
so that every activation a user may want to read or edit is one tensor at one
:class:`~transformer_lens.hook_points.HookPoint`, with TransformerLens semantics, and an
edit at any hook reaches everything downstream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from vis_steer_lens.hook_names import GEMMA3_HF_PREFIX, canonical_hook_name, hooked_vit_names
from vis_steer_lens.saes.splicing import SAESplicingMixin


@dataclass
class HookedViTConfig:
    """Shape of a vision tower, as HookedViT sees it.

    Attributes:
        n_layers: Number of encoder blocks.
        d_model: Width of the residual stream.
        n_heads: Attention heads per block.
        d_head: Width of one head (``d_model // n_heads``).
        d_mlp: Hidden width of the MLP.
        image_size: Side of the (square) input image in pixels.
        patch_size: Side of one patch in pixels.
        n_channels: Colour channels of the input.
        layer_norm_eps: Epsilon of every LayerNorm.
        model_name: Name or path the tower was loaded from (recorded in SAE metadata).
        hf_prefix: Prefix of the tower's modules inside the full Hugging Face model, used to
            translate Hugging Face module paths into hook names.
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
    model_name: str = "unnamed"
    hf_prefix: str = GEMMA3_HF_PREFIX
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        """Patch tokens per image (``grid_size ** 2``)."""
        return self.grid_size**2


def _is_hooked(hook_point: nn.Module) -> bool:
    """Whether anything reads or edits this hook (a spliced SAE counts)."""
    if not isinstance(hook_point, HookPoint):
        return True
    return bool(hook_point.fwd_hooks or hook_point.bwd_hooks)


class HookedLayerNorm(nn.Module):
    """LayerNorm with TransformerLens' ``hook_scale`` and ``hook_normalized``.

    ``hook_normalized`` is ``(x - mean) / scale`` before the weight and bias are applied, as in
    TransformerLens. With neither hook in use the fused kernel runs instead.
    """

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.w = norm.weight
        self.b = norm.bias
        self.eps = norm.eps
        self.hook_scale = HookPoint()  # [batch, patches, 1]
        self.hook_normalized = HookPoint()  # [batch, patches, d_model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``[batch, patches, d_model]``."""
        if not (_is_hooked(self.hook_scale) or _is_hooked(self.hook_normalized)):
            return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
        centered = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((centered.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        normalized = self.hook_normalized(centered / scale)
        return normalized * self.w + self.b


class HookedAttention(nn.Module):
    """Multi-head self-attention over patches, over the Hugging Face projection layers.

    Runs PyTorch's fused scaled-dot-product attention unless a hook on the scores or the
    pattern is in use; only then are the ``[batch, heads, q, k]`` matrices materialised.
    """

    def __init__(self, attn: nn.Module, n_heads: int):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            attn.q_proj,
            attn.k_proj,
            attn.v_proj,
            attn.out_proj,
        )
        self.n_heads = n_heads
        self.d_head = attn.q_proj.out_features // n_heads
        self.scale = getattr(attn, "scale", self.d_head**-0.5)
        self.hook_q = HookPoint()  # [batch, patches, heads, d_head]
        self.hook_k = HookPoint()  # [batch, patches, heads, d_head]
        self.hook_v = HookPoint()  # [batch, patches, heads, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, heads, q, k], scaled, before softmax
        self.hook_pattern = HookPoint()  # [batch, heads, q, k]
        self.hook_z = HookPoint()  # [batch, patches, heads, d_head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over ``x`` of shape ``[batch, patches, d_model]``; returns the same shape."""
        batch, patches, _ = x.shape
        head_shape = (batch, patches, self.n_heads, self.d_head)
        q = self.hook_q(self.q_proj(x).view(head_shape)).transpose(1, 2)
        k = self.hook_k(self.k_proj(x).view(head_shape)).transpose(1, 2)
        v = self.hook_v(self.v_proj(x).view(head_shape)).transpose(1, 2)
        if _is_hooked(self.hook_attn_scores) or _is_hooked(self.hook_pattern):
            scores = self.hook_attn_scores(torch.matmul(q, k.transpose(-1, -2)) * self.scale)
            # Softmax in float32 as the Hugging Face eager path does.
            pattern = self.hook_pattern(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
            z = torch.matmul(pattern, v)
        else:
            z = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        z = self.hook_z(z.transpose(1, 2))
        return self.out_proj(z.reshape(batch, patches, -1))


class HookedMLP(nn.Module):
    """Two-layer MLP with hooks on the pre- and post-activation hidden units."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.fc1, self.fc2 = mlp.fc1, mlp.fc2
        self.act_fn: Callable[[torch.Tensor], torch.Tensor] = mlp.activation_fn
        self.hook_pre = HookPoint()  # [batch, patches, d_mlp]
        self.hook_post = HookPoint()  # [batch, patches, d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, patches, d_model]`` to the same shape."""
        pre = self.hook_pre(self.fc1(x))
        return self.fc2(self.hook_post(self.act_fn(pre)))


class HookedViTBlock(nn.Module):
    """One pre-LayerNorm encoder block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(.))``."""

    def __init__(self, layer: nn.Module, n_heads: int):
        super().__init__()
        # Registered in the order they run, so that hook_dict lists hooks in firing order.
        self.hook_resid_pre = HookPoint()  # [batch, patches, d_model]
        self.ln1 = HookedLayerNorm(layer.layer_norm1)
        self.attn = HookedAttention(layer.self_attn, n_heads)
        self.hook_attn_out = HookPoint()  # [batch, patches, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, patches, d_model]
        self.ln2 = HookedLayerNorm(layer.layer_norm2)
        self.mlp = HookedMLP(layer.mlp)
        self.hook_mlp_out = HookPoint()  # [batch, patches, d_model]
        self.hook_resid_post = HookPoint()  # [batch, patches, d_model]

    def forward(self, resid_pre: torch.Tensor) -> torch.Tensor:
        """Map the residual stream ``[batch, patches, d_model]`` to the next one."""
        resid_pre = self.hook_resid_pre(resid_pre)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


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
    """A SigLIP-style vision tower with TransformerLens hook points.

    The module wraps a Hugging Face vision tower (e.g. ``SiglipVisionModel``, the tower of
    Gemma 3) without copying its weights: parameters are shared, so the Hugging Face model
    and this one always agree. Hook names follow TransformerLens / ViT-Prisma
    (``blocks.{i}.hook_resid_post``, ``blocks.{i}.attn.hook_pattern``, ...); see
    :attr:`hook_dict` for the full list. Hugging Face module paths and TransformerLens
    ``TransformerBridge`` names are accepted wherever a hook name is (see
    :mod:`vis_steer_lens.hook_names`).

    Example:
        >>> vit = HookedViT.from_pretrained("google/gemma-3-4b-it")  # doctest: +SKIP
        >>> out, cache = vit.run_with_cache(pixel_values)  # doctest: +SKIP
        >>> cache["resid_post", 16].shape  # [batch, patches, d_model]  # doctest: +SKIP
    """

    def __init__(self, vision_tower: nn.Module, cfg: HookedViTConfig):
        super().__init__()
        self.cfg = cfg
        # Kept out of the module tree: its parameters are registered below under TL names.
        object.__setattr__(self, "_hf_tower", vision_tower)
        embeddings = vision_tower.embeddings
        self.patch_embed = embeddings.patch_embedding
        self.pos_embed = embeddings.position_embedding
        self.hook_embed = HookPoint()  # [batch, patches, d_model]
        self.hook_pos_embed = HookPoint()  # [batch, patches, d_model]
        self.blocks = nn.ModuleList(
            HookedViTBlock(layer, cfg.n_heads) for layer in vision_tower.encoder.layers
        )
        self.ln_final = HookedLayerNorm(vision_tower.post_layernorm)
        self.setup()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_hf(
        cls, vision_tower: nn.Module, model_name: str | None = None, hf_prefix: str = GEMMA3_HF_PREFIX
    ) -> HookedViT:
        """Wrap a Hugging Face vision tower already in memory, sharing its weights.

        Args:
            vision_tower: A ``SiglipVisionModel`` (e.g. ``Gemma3ForConditionalGeneration().model.vision_tower``).
            model_name: Name recorded in ``cfg.model_name``. Defaults to the tower config's
                ``_name_or_path``.
            hf_prefix: Prefix of the tower in the full model's module paths.

        Raises:
            TypeError: If the tower is not a supported architecture.
        """
        from vis_steer_lens.adapters import vision_tower_config

        cfg = vision_tower_config(vision_tower, model_name=model_name, hf_prefix=hf_prefix)
        return cls(vision_tower, cfg)

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
        from vis_steer_lens.adapters import adapter_for

        adapter = adapter_for(name_or_path, revision=revision)
        tower = adapter.load_vision_tower(name_or_path, device=device, dtype=dtype, revision=revision)
        return cls.from_hf(tower, model_name=name_or_path, hf_prefix=adapter.hf_vision_prefix)

    @property
    def hf_tower(self) -> nn.Module:
        """The wrapped Hugging Face tower (same parameters as this module)."""
        return self._hf_tower

    @property
    def device(self) -> torch.device:
        return self.pos_embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_embed.weight.dtype

    # ------------------------------------------------------------------ forward
    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Patch and position embeddings: ``[batch, channels, H, W]`` → ``[batch, patches, d_model]``."""
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
        embed = self.hook_embed(patches.flatten(2).transpose(1, 2))
        if interpolate_pos_encoding:
            pos = self._hf_tower.embeddings.interpolate_pos_encoding(embed, height, width)
        else:
            pos = self.pos_embed.weight.unsqueeze(0)
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
    ) -> torch.Tensor:
        """Run the tower, or a slice of its blocks.

        Args:
            input: ``pixel_values`` of shape ``[batch, channels, H, W]``, or, with
                ``start_at_layer``, the residual stream ``[batch, patches, d_model]`` entering
                that block.
            start_at_layer: First block to run (as ``HookedTransformer.forward``). The input is
                then the residual stream, and the embedding hooks do not fire.
            stop_at_layer: Block to stop before (exclusive; negative counts from the end). The
                residual stream entering it is returned and ``ln_final`` does not run. So
                ``stop_at_layer=L + 1`` returns ``blocks.L.hook_resid_post``.
            interpolate_pos_encoding: Interpolate position embeddings for other image sizes.

        Returns:
            ``[batch, patches, d_model]``: the tower's last hidden state (after ``ln_final``,
            equal to the Hugging Face tower's ``last_hidden_state``), or the residual stream
            when ``stop_at_layer`` is given.
        """
        n_layers = self.cfg.n_layers
        start = 0 if start_at_layer is None else _layer_index(start_at_layer, n_layers, "start_at_layer")
        stop = n_layers if stop_at_layer is None else _layer_index(stop_at_layer, n_layers, "stop_at_layer")
        if start_at_layer is None:
            resid = self.embed(input, interpolate_pos_encoding=interpolate_pos_encoding)
        else:
            expected = (self.cfg.n_patches, self.cfg.d_model)
            if input.ndim != 3 or (not interpolate_pos_encoding and tuple(input.shape[1:]) != expected):
                raise ValueError(
                    f"With start_at_layer, HookedViT expects the residual stream [batch, {expected[0]}, "
                    f"{expected[1]}], got {tuple(input.shape)}."
                )
            resid = input.to(device=self.device, dtype=self.dtype)
        for block in self.blocks[start:stop]:
            resid = block(resid)
        if stop_at_layer is not None:
            return resid
        return self.ln_final(resid)

    # ------------------------------------------------------------------ hooks
    def resolve_hook_name(self, name: str) -> str:
        """The HookedViT name of a hook given in any naming convention.

        Raises:
            UnknownHookNameError: With the closest valid names, if the name is unknown.
        """
        if name in self.hook_dict:
            return name
        return canonical_hook_name(name, n_layers=self.cfg.n_layers, hf_prefix=self.cfg.hf_prefix)

    def hook_width(self, name: str) -> int:
        """Last dimension of the activation at a hook (``d_in`` of an SAE placed there).

        Per-head hooks (``hook_q|k|v|z``) count all heads together, as SAELens does for
        ``hook_z`` SAEs.
        """
        name = self.resolve_hook_name(name)
        if name.endswith(("mlp.hook_pre", "mlp.hook_post")):
            return self.cfg.d_mlp
        if name.endswith(("hook_attn_scores", "hook_pattern")):
            return self.cfg.n_patches
        if name.endswith("hook_scale"):
            return 1
        return self.cfg.d_model

    @property
    def _cache_model(self) -> HookedViT:
        return self

    def hook_names(self) -> list[str]:
        """All hook names, in the order they fire."""
        return hooked_vit_names(self.cfg.n_layers)

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"HookedViT({c.model_name!r}, n_layers={c.n_layers}, d_model={c.d_model}, n_heads={c.n_heads}, "
            f"d_mlp={c.d_mlp}, patches={c.n_patches} ({c.grid_size}x{c.grid_size}), hooks={len(self.hook_dict)})"
        )


def _layer_index(layer: int, n_layers: int, what: str) -> int:
    if not -n_layers <= layer <= n_layers:
        raise ValueError(f"{what}={layer} is out of range for a {n_layers}-layer tower (use 0..{n_layers}).")
    return layer % n_layers if layer < 0 else layer


__all__ = ["HookNameResolutionMixin", "HookedViT", "HookedViTConfig"]
