"""HookedViT: the whole tower with TransformerLens hook points, and the hook-name resolution it
shares with HookedVLM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.HookedRootModule import HookedRootModule

from vis_steer_lens.families import adapter_for, adapter_for_tower, get_adapter
from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.hook_names import (
    HookName,
    HookNameMap,
    HookNameTriple,
    name_triple,
    resolve_hook_name,
    split_hook_name,
)
from vis_steer_lens.hooked_vit.components import (
    HookedNorm,
    HookedViTBlock,
    ShapedHookPoint,
    TokenContext,
    TowerParts,
    is_hooked,
    parts_from_config,
)
from vis_steer_lens.hooked_vit.config import HookedViTConfig
from vis_steer_lens.saes.splicing import SAESplicingMixin


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
        object.__setattr__(self, "_crops_fn", parts.crops)
        #: The processor outputs this tower reads besides ``pixel_values`` (e.g. ``image_grid_thw``).
        self.tower_input_keys: tuple[str, ...] = tuple(parts.input_keys)
        if (parts.pos_embed is None) != (cfg.positional != "absolute"):
            raise ValueError("parts.pos_embed must be given exactly when cfg.positional is 'absolute'.")
        self.patch_embed = parts.patch_embed
        self.prefix_tokens = parts.prefix_tokens
        if (parts.register_tokens is None) != (cfg.n_register_tokens == 0):
            raise ValueError("parts.register_tokens must be given exactly when cfg.n_register_tokens > 0.")
        #: Learned register tokens after the class token (DINOv2 with registers), or ``None``.
        self.register_tokens = parts.register_tokens
        self.pos_embed = parts.pos_embed
        self.hook_embed = ShapedHookPoint("batch", "pos", "d_model")
        if self.pos_embed is not None:
            self.hook_pos_embed = ShapedHookPoint("batch", "pos", "d_model")
        if (parts.embed_norm is None) != (cfg.embed_norm_type is None):
            raise ValueError("cfg.embed_norm_type and parts.embed_norm must both be set or both be None.")
        #: The norm of the embeddings before the first block (CLIP's pre-LayerNorm), or ``None``.
        self.ln_pre = None if parts.embed_norm is None else HookedNorm(parts.embed_norm, cfg.embed_norm_type)
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
    def from_hf(cls, tower: nn.Module, model_name: str | None = None, family: str | None = None) -> HookedViT:
        """Wrap a Hugging Face vision tower already in memory, sharing its weights.

        Args:
            tower: A bare Hugging Face vision tower of a family with an adapter (SigLIP from a
                Gemma 3, InternViT from an InternVL3, a ``Dinov2Model``).
            model_name: Name recorded in ``cfg.model_name``. Defaults to the tower config's
                ``_name_or_path``.
            family: The adapter to use (``"clip"``, ``"siglip"``: the vision-only families of a
                bare tower that a VLM family would otherwise claim); ``None`` picks it by the
                tower's config type.

        Raises:
            UnsupportedModelError: If no adapter knows the tower's architecture, or ``family``'s
                adapter does not take it.
        """
        adapter = adapter_for_tower(tower) if family is None else get_adapter(family)
        return adapter.hooked_vit(tower, model_name=model_name)

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
        """Position embeddings ``[tokens - n_register_tokens, d_model]`` (prefix tokens first;
        registers have none)."""
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

    def input_image_size(self, image_processor: Any = None) -> int:
        """Side in pixels of the (square) images this tower reads after ``image_processor``:
        ``cfg.image_size``, except where the tower fits its positions to any size
        (``cfg.interpolate_positions``, DINOv2: trained at 518 px, its processor crops 224 px), where
        it is the size the processor gives (one blank image through it).

        Raises:
            ValueError: For a processor whose output is not square.
        """
        processor = image_processor if image_processor is not None else self.image_processor
        if not self.cfg.interpolate_positions or processor is None:
            return int(self.cfg.image_size)
        from PIL import Image

        from vis_steer_lens.activations import to_pixel_values

        height, width = to_pixel_values([Image.new("RGB", (256, 256))], processor).shape[-2:]
        if height != width:
            raise ValueError(
                f"The image processor gives {height}x{width} images; a fixed grid needs square ones."
            )
        return int(height)

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
        interpolate = interpolate_pos_encoding or self.cfg.interpolate_positions
        if not interpolate and (height, width) != (self.cfg.image_size, self.cfg.image_size):
            raise ValueError(
                f"This tower takes {self.cfg.image_size}x{self.cfg.image_size} images, got {height}x{width}. "
                "Resize with the model's processor, or pass interpolate_pos_encoding=True."
            )
        patches = self.patch_embed(pixel_values.to(device=self.device, dtype=self.dtype))
        tokens = patches.flatten(2).transpose(1, 2)
        learned = [p for p in (self.prefix_tokens, self.register_tokens) if p is not None]
        if learned:
            prefix = torch.cat([p.reshape(1, -1, self.cfg.d_model) for p in learned], dim=1)
            tokens = torch.cat([prefix.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        embed = self.hook_embed(tokens)
        if self.pos_embed is None:
            return embed
        # Registers take no position embedding: positions are fitted to the other tokens, and the
        # registers' rows of hook_pos_embed are zeros.
        n_registers = self.cfg.n_register_tokens
        first_register = self.cfg.n_prefix_tokens - n_registers
        positioned = embed
        if n_registers:
            positioned = torch.cat([embed[:, :first_register], embed[:, self.cfg.n_prefix_tokens :]], dim=1)
        if interpolate_pos_encoding or self.cfg.interpolate_positions:
            if self._interpolate is None:
                raise ValueError("This tower cannot interpolate its position embeddings.")
            pos = self._interpolate(positioned, height, width)
        else:
            pos = self.W_pos.unsqueeze(0)
        if n_registers:
            zeros = pos.new_zeros(pos.shape[0], n_registers, pos.shape[-1])
            pos = torch.cat([pos[:, :first_register], zeros, pos[:, first_register:]], dim=1)
        pos = pos.expand(embed.shape[0], -1, -1)
        if is_hooked(self.hook_pos_embed):
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
                the processor's flattened patches ``[patches, patch_dim]``; an AnyRes tower:
                ``[images, max_crops, channels, H, W]``, run as ``[crops, tokens, d_model]``), or, with
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
                (Qwen2-VL: ``image_grid_thw``; LLaVA-NeXT: ``image_sizes``).

        Returns:
            ``[batch, tokens, d_model]``: the tower's last hidden state (after ``ln_final``
            where the tower has one, equal to the Hugging Face tower's ``last_hidden_state``),
            or the residual stream when ``stop_at_layer`` is given.
        """
        n_layers = self.cfg.n_layers
        start = 0 if start_at_layer is None else _layer_index(start_at_layer, n_layers, "start_at_layer")
        stop = n_layers if stop_at_layer is None else _layer_index(stop_at_layer, n_layers, "stop_at_layer")
        needs_context = self._needs_context
        if self._crops_fn is not None and start_at_layer is None:
            # AnyRes: each image is several crops (batch rows); the geometry says which.
            input = self._crops_fn(input, geometry=geometry, **tower_inputs)
            tower_inputs = {}
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
            if self.ln_pre is not None:
                resid = self.ln_pre(resid)
        else:
            expected = (self.cfg.n_tokens, self.cfg.d_model)
            if self.cfg.packed:
                expected = (geometry.n_positions, self.cfg.d_model)
            any_size = interpolate_pos_encoding or self.cfg.interpolate_positions
            if input.ndim != 3 or (not any_size and tuple(input.shape[1:]) != expected):
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
    def variable_grids(self) -> bool:
        """Whether each image keeps a patch grid of its own, set by the image processor: native
        resolution (packed Qwen2-VL) or AnyRes tiles (LLaVA-NeXT/OneVision, stitched). Such images
        go through the processor one by one, and their maps have each image's own grid (the geometry)."""
        return bool(self.cfg.packed or self._crops_fn is not None)

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


__all__ = ["HookNameResolutionMixin", "HookedViT"]
