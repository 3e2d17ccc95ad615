"""Qwen2-VL (``Qwen2VLForConditionalGeneration``) and Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``):
native-resolution towers whose images are packed into one sequence, a patch merger as the projector,
a Qwen2 language model with M-RoPE positions.

What the adapter tells HookedViT:

* The processor flattens each image into ``[patches, channels * temporal_patch_size * patch ** 2]``
  with ``image_grid_thw`` ``(1, h, w)`` per image, patches in merge-block order (each
  ``spatial_merge_size x spatial_merge_size`` block of neighbouring patches consecutive). The patch
  embedding is a ``Conv3d`` over ``temporal_patch_size`` copies of the frame.
* Every image's patches are packed into one sequence ``[1, tokens, d]``; attention stays within each
  image (transformers' ``cu_seqlens``). Positions are 2-D rotary embeddings of each patch's (row, col).
* Qwen2.5-VL permutes the merge blocks into attention windows (``window_size`` pixels) before the
  first block and attends within windows except in the ``fullatt_block_indexes`` blocks; its blocks
  use RMSNorm and a SwiGLU MLP. Qwen2-VL's use LayerNorm and a quick-GELU MLP, and attend over
  whole images everywhere.
* The projector (the "merger") normalises, concatenates each merge block's tokens and maps them with
  an MLP; Qwen2.5-VL's soft tokens are then put back from window order to the processor's order.

The geometry (:class:`~vis_steer_lens.geometry.ImageGeometry`) records all of this: the tower holds
its tokens in window order, and ``order``/``row``/``col`` say where each one is in its image.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.adapters.base import VLMAdapter
from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.hook_names import HookNameMap
from vis_steer_lens.hooked_vit import BlockParts, HookedViTConfig, TowerParts

#: The Qwen vision towers in Hugging Face module paths (transformers 5: ``model.visual``).
QWEN2_VL_HOOK_NAMES = HookNameMap(
    hf_prefix="model.visual.",
    hf_block="blocks.{layer}",
    # Only modules whose output is exactly a HookedViT activation.
    hf_block_sites={"hook_resid_post": ""},
    hf_extra_prefixes=("visual.",),
    bridge_note="transformer-lens 3.9 has no TransformerBridge for Qwen2-VL's vision tower",
)


@functools.cache
def image_only_processor_class(processor_class_name: str) -> type:
    """Qwen's processor class ``processor_class_name`` (``"Qwen2VLProcessor"``,
    ``"Qwen2_5_VLProcessor"``) without its video processor (which needs torchvision): what
    :meth:`Qwen2VLAdapter.load_processor` builds for folders it cannot load otherwise."""
    import transformers

    base = getattr(transformers, processor_class_name)

    class ImageOnlyProcessor(base):
        """Qwen's processor without its video processor (which needs torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    ImageOnlyProcessor.__name__ = f"ImageOnly{processor_class_name}"
    return ImageOnlyProcessor


class QwenMerger(nn.Module):
    """The patch merger, taking the packed tower output in the tower's order and the batch's geometry.

    ``[1, tokens, d_vision]`` → ``[1, soft_tokens, d_lm]``: each merge block of ``merge ** 2``
    consecutive tokens becomes one soft token; the soft tokens are returned in the processor's
    order (the order of the image placeholder tokens), as transformers does.
    """

    takes_geometry: ClassVar[bool] = True

    def __init__(self, merger: nn.Module, merge_size: int):
        super().__init__()
        self.merger = merger
        self.unit = merge_size**2

    def forward(self, features: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
        merged = self.merger(features.reshape(-1, features.shape[-1]))
        # The input position of each merge block's first token, in tower order → back to input order.
        block_order = geometry.order.to(merged.device).reshape(-1, self.unit)[:, 0] // self.unit
        return merged[torch.argsort(block_order)].unsqueeze(0)


class Qwen2VLAdapter(VLMAdapter):
    """Adapter for transformers' ``Qwen2VLForConditionalGeneration`` (Qwen2-VL 2B-72B)."""

    name: ClassVar[str] = "qwen2_vl"
    model_class: ClassVar[str] = "Qwen2VLForConditionalGeneration"
    tower_class: ClassVar[str] = "Qwen2VisionTransformerPretrainedModel"
    processor_class: ClassVar[str] = "Qwen2VLProcessor"
    vision_prefixes: ClassVar[tuple[str, ...]] = ("model.visual.", "visual.")
    layout: ClassVar[dict] = dict(
        final_norm_type=None, fused_qkv=True, positional="rotary_2d", packed=True, act_fn="quick_gelu"
    )
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    tower_model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl_vision",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("qwen2-vl", "qwen2_vl")
    hook_name_map: ClassVar[HookNameMap] = QWEN2_VL_HOOK_NAMES
    end_of_turn_tokens: ClassVar[tuple[str, ...]] = ("<|im_end|>",)
    language_input_keys: ClassVar[tuple[str, ...]] = (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "image_grid_thw",
    )
    tower_input_keys: ClassVar[tuple[str, ...]] = ("image_grid_thw",)
    #: Side in pixels of the empty image steering starts from (a square, resized by the processor
    #: to a multiple of ``patch * merge`` within its pixel bounds): 224 px, for the releases 16 x 16
    #: patches of 14 px and 64 soft tokens; for the tiny test models 64 px, 8 x 8 patches, 16 soft tokens.
    empty_image_size: ClassVar[int] = 224

    # ---- the tower
    def _width(self, cfg: Any) -> int:
        return cfg.embed_dim

    def _mlp_width(self, cfg: Any) -> int:
        return int(cfg.embed_dim * cfg.mlp_ratio)

    def _blocks_layout(self, cfg: Any) -> dict[str, Any]:
        return dict(norm_type="LN", gated_mlp=False, full_attention_blocks=None)

    def tower_config(self, tower: nn.Module, model_name: str) -> HookedViTConfig:
        cfg = tower.config
        width = self._width(cfg)
        patch = cfg.patch_size
        return HookedViTConfig(
            n_layers=cfg.depth,
            d_model=width,
            n_heads=cfg.num_heads,
            d_head=width // cfg.num_heads,
            d_mlp=self._mlp_width(cfg),
            # Native resolution: no fixed size. The nominal one is the empty image's.
            image_size=self.empty_image_size // patch * patch,
            patch_size=patch,
            n_channels=cfg.in_channels,
            layer_norm_eps=1e-6,
            final_norm_type=None,
            act_fn=cfg.hidden_act,
            fused_qkv=True,
            positional="rotary_2d",
            rotary_theta=float(cfg.rope_parameters["rope_theta"]),
            packed=True,
            family=self.name,
            model_name=model_name,
            hf_prefix=self.hook_name_map.hf_prefix,
            extra=dict(
                spatial_merge_size=cfg.spatial_merge_size,
                temporal_patch_size=cfg.temporal_patch_size,
                window_size=getattr(cfg, "window_size", None),
            ),
            **self._blocks_layout(cfg),
        )

    def _block_parts(self, block: nn.Module) -> BlockParts:
        return BlockParts(
            ln1=block.norm1,
            ln2=block.norm2,
            q=None,
            k=None,
            v=None,
            qkv=block.attn.qkv,
            o=block.attn.proj,
            mlp_in=block.mlp.fc1,
            mlp_out=block.mlp.fc2,
            act_fn=block.mlp.act,
            attn_scale=block.attn.scaling,
        )

    def tower_parts(self, tower: nn.Module) -> TowerParts:
        return TowerParts(
            patch_embed=tower.patch_embed,
            pos_embed=None,
            blocks=[self._block_parts(block) for block in tower.blocks],
        )

    def image_geometry(
        self,
        cfg: HookedViTConfig,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
        **tower_inputs: Any,
    ) -> ImageGeometry:
        """The packed geometry of a batch: images one after the other, each in merge-block order
        (Qwen2.5-VL: merge blocks permuted into attention windows).

        Args:
            cfg: The tower's config.
            pixel_values: ``[patches, patch_dim]`` from the processor.
            image_grid_thw: ``[images, 3]`` ``(1, h, w)`` per image, from the processor.
        """
        from transformers.vision_utils import get_vision_position_ids

        if tower_inputs:
            raise ValueError(
                f"The {self.name} tower takes pixel_values and image_grid_thw, got also {sorted(tower_inputs)}."
            )
        if image_grid_thw is None:
            raise ValueError(
                f"The {self.name} tower needs image_grid_thw with pixel_values (the processor gives both)."
            )
        grid = image_grid_thw.to("cpu").long()
        if bool((grid[:, 0] != 1).any()):
            raise ValueError(f"Only still images (t = 1) are supported, got image_grid_thw {grid.tolist()}.")
        merge = cfg.extra["spatial_merge_size"]
        counts = grid[:, 1] * grid[:, 2]
        n = int(counts.sum())
        if pixel_values.shape[0] != n:
            raise ValueError(
                f"image_grid_thw describes {n} patches, pixel_values holds {pixel_values.shape[0]}."
            )
        hw = get_vision_position_ids(grid, merge)  # [n, 2] (row, col) in the processor's order
        order, window = self._window_order(cfg, grid)
        image_index = torch.arange(len(grid)).repeat_interleave(counts)
        ends = counts.cumsum(0)
        device = pixel_values.device
        return ImageGeometry(
            image_index=image_index[order].to(device),
            is_prefix=torch.zeros(n, dtype=torch.bool, device=device),
            row=hw[order, 0].to(device),
            col=hw[order, 1].to(device),
            grid_hw=grid[:, 1:].clone().to(device),
            span=torch.stack([ends - counts, ends], dim=1).to(device),
            order=order.to(device),
            soft_source=torch.ones(n, dtype=torch.bool, device=device),
            n_soft_tokens=(counts // merge**2).to(device),
            window=None if window is None else window.to(device),
            packed=True,
        )

    def _window_order(
        self, cfg: HookedViTConfig, grid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tower order of the tokens (identity: Qwen2-VL does not reorder) and their windows (none)."""
        return torch.arange(int((grid[:, 1] * grid[:, 2]).sum())), None

    def max_patches_per_image(self, cfg: HookedViTConfig, image_processor: Any) -> int:
        """The processor's ``max_pixels`` (``size["longest_edge"]``) in patches."""
        size = getattr(image_processor, "size", None) or {}
        max_pixels = (
            size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
        )
        if not max_pixels:
            raise ValueError("The Qwen image processor has no max_pixels (size['longest_edge']).")
        return int(max_pixels) // cfg.patch_size**2

    # ---- the whole model
    def tower(self, model: nn.Module) -> nn.Module:
        return model.model.visual

    def projector(self, model: nn.Module) -> nn.Module:
        return QwenMerger(model.model.visual.merger, model.config.vision_config.spatial_merge_size)

    def pooled_image_features(self, image_features: torch.Tensor) -> Any:
        """transformers concatenates a tuple of per-image soft tokens; one ``[soft_tokens, d_lm]`` suffices."""
        return (image_features.reshape(-1, image_features.shape[-1]),)

    def decoding_positions(
        self, hf_model: nn.Module, inputs: Any, position_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """M-RoPE: the prefill's (text, temporal, row, column) positions as ``generate`` builds them;
        decoded tokens at their text position plus the row's offset (``rope_deltas``)."""
        grid, token_types = inputs.get("image_grid_thw"), inputs.get("mm_token_type_ids")
        if grid is None or token_types is None:
            return position_ids, None
        rope, deltas = hf_model.model.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=token_types,
            image_grid_thw=grid,
            attention_mask=attention_mask,
        )
        return torch.cat([position_ids[None], rope], dim=0), deltas.reshape(-1)

    def empty_image_inputs(self, kind: str, processor: Any, dtype: torch.dtype = torch.float32) -> dict:
        """The empty image (:attr:`empty_image_size` px square, resized within the processor's pixel
        bounds) as ``pixel_values`` ``[patches, patch_dim]`` and ``image_grid_thw`` ``[1, 3]``."""
        image_processor = getattr(processor, "image_processor", processor)
        out = image_processor(images=[self.empty_image(kind, processor)], return_tensors="pt")
        pixel_values = out["pixel_values"].to(dtype)
        if kind == "zeros":
            pixel_values = torch.zeros_like(pixel_values)
        return {"pixel_values": pixel_values, "image_grid_thw": out["image_grid_thw"]}

    def empty_image_pixel_values(
        self, kind: str, processor: Any, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return self.empty_image_inputs(kind, processor, dtype)["pixel_values"]

    # ---- loading
    def load_processor(self, name_or_path: str, *, revision: str | None = None) -> Any:
        """Qwen's processor, or, where it cannot load (its video processor needs torchvision), the
        same processor for images only from the folder's image processor settings and tokenizer."""
        try:
            processor = super().load_processor(name_or_path, revision=revision)
        except (OSError, ImportError, ValueError, TypeError, AttributeError):
            processor = None
        if hasattr(processor, "image_processor"):
            return processor
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        return image_only_processor_class(self.processor_class)(
            image_processor=Qwen2VLImageProcessorPil.from_pretrained(name_or_path, revision=revision),
            tokenizer=tokenizer,
            chat_template=tokenizer.chat_template,
        )

    def _tower_class_object(self) -> type:
        """The tower class, from its modeling module (transformers does not export Qwen2-VL's)."""
        import importlib

        module = "qwen2_vl" if self.name == "qwen2_vl" else "qwen2_5_vl"
        modeling = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
        return getattr(modeling, self.tower_class)

    def _finish_tower(self, tower: nn.Module) -> nn.Module:
        """The rotary frequencies are non-persistent buffers a checkpoint does not store: rebuilt here
        (HookedViT computes its own from the config; transformers' tower needs them)."""
        with torch.device("cpu"):
            tower.rotary_pos_emb = type(tower.rotary_pos_emb)(tower.config)
        return tower


class Qwen25VLAdapter(Qwen2VLAdapter):
    """Adapter for transformers' ``Qwen2_5_VLForConditionalGeneration`` (Qwen2.5-VL 3B-72B): RMSNorm,
    SwiGLU MLPs, window attention with full-attention blocks."""

    name: ClassVar[str] = "qwen2_5_vl"
    model_class: ClassVar[str] = "Qwen2_5_VLForConditionalGeneration"
    tower_class: ClassVar[str] = "Qwen2_5_VisionTransformerPretrainedModel"
    processor_class: ClassVar[str] = "Qwen2_5_VLProcessor"
    layout: ClassVar[dict] = dict(
        final_norm_type=None,
        fused_qkv=True,
        positional="rotary_2d",
        packed=True,
        norm_type="RMS",
        gated_mlp=True,
        full_attention_blocks=[0],
        act_fn="silu",
    )
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    tower_model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl_vision",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("qwen2.5-vl", "qwen2_5_vl")

    def _width(self, cfg: Any) -> int:
        return cfg.hidden_size

    def _mlp_width(self, cfg: Any) -> int:
        return cfg.intermediate_size

    def _blocks_layout(self, cfg: Any) -> dict[str, Any]:
        return dict(norm_type="RMS", gated_mlp=True, full_attention_blocks=list(cfg.fullatt_block_indexes))

    def _block_parts(self, block: nn.Module) -> BlockParts:
        return BlockParts(
            ln1=block.norm1,
            ln2=block.norm2,
            q=None,
            k=None,
            v=None,
            qkv=block.attn.qkv,
            o=block.attn.proj,
            mlp_in=block.mlp.up_proj,
            mlp_gate=block.mlp.gate_proj,
            mlp_out=block.mlp.down_proj,
            act_fn=block.mlp.act_fn,
            attn_scale=block.attn.scaling,
        )

    def _window_order(
        self, cfg: HookedViTConfig, grid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Merge blocks permuted into attention windows, as transformers does; each token's window."""
        from transformers.vision_utils import get_vision_window_index

        merge = cfg.extra["spatial_merge_size"]
        window_index, cu_windows = get_vision_window_index(
            grid, spatial_merge_size=merge, window_size=cfg.extra["window_size"], patch_size=cfg.patch_size
        )
        unit = merge**2
        order = (window_index[:, None] * unit + torch.arange(unit)).reshape(-1)
        boundaries = cu_windows.long()
        window = torch.bucketize(torch.arange(len(order)), boundaries[1:], right=True)
        return order, window
