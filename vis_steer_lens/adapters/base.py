"""The adapter interface: what one VLM family tells HookedViT and HookedVLM about itself."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from vis_steer_lens.choices import EMPTY_IMAGES, NOISE_SEED
from vis_steer_lens.families import UnsupportedModelError
from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.hook_names import HookNameMap
from vis_steer_lens.hooked_vit import HookedViT, HookedViTConfig, TowerParts


class VLMAdapter:
    """Knows the layout of one family of Hugging Face vision-language models.

    A new family (PaliGemma 2, LLaVA, Qwen2-VL, ...) is one subclass registered with
    :func:`vis_steer_lens.register_adapter`; nothing else in the library changes. It tells
    :class:`~vis_steer_lens.HookedViT` how the tower is built (:meth:`tower_config`,
    :meth:`tower_parts`, :attr:`hook_name_map`) and :class:`~vis_steer_lens.HookedVLM` how image
    features reach the language model (:meth:`projector`, :meth:`projector_stop_at_layer` and from
    it :meth:`feature_layer`, the last vision block the language model reads, :meth:`reads_prefix_tokens`,
    :meth:`prompt_inputs`, the prompt format, :meth:`image_token_id`, :attr:`end_of_turn_tokens`, :meth:`prefill_masks`,
    :attr:`language_input_keys`, :meth:`empty_image_pixel_values`). Its test models (tiny and
    random released ones) are the business of a :class:`vis_steer_lens.testing.ModelBuilder`
    registered under the same name, outside the production code.

    Attributes:
        name: Short name of the family (``"gemma3"``), used in configs and error messages.
        model_class: The transformers class of the full model (``"Gemma3ForConditionalGeneration"``).
        tower_class: The transformers class of the bare tower (``"SiglipVisionModel"``).
        vision_prefixes: Key prefixes under which checkpoints store the tower's weights.
        layout: The family's :class:`HookedViTConfig` layout fields (prefix tokens, norms, layer
            scale, ...), used to list its hook names without a model.
        model_types: ``config.model_type`` values of the full VLMs this adapter handles.
        tower_model_types: ``config.model_type`` values of their bare vision towers.
        model_name_markers: Lower-case substrings of hub ids that belong to this family
            (to pick the family of an SAE release from its model name).
        hook_name_map: Hugging Face and TransformerBridge names of the family's hooks.
        end_of_turn_tokens: Tokens that end a chat answer besides the tokenizer's EOS.
        language_input_keys: The processor outputs the language model takes (besides pixels).
        tower_input_keys: The processor outputs the vision tower reads besides ``pixel_values``
            (Qwen2-VL's ``image_grid_thw``), passed to :meth:`image_geometry`.
        one_tile_per_image: Image-processor options that make each image one tower input (for
            mining and scoring, which are per image), where the processor can tile images.
        has_language_model: Whether the family is a VLM (``False`` for vision-only towers,
            :mod:`vis_steer_lens.adapters.towers`).
    """

    name: ClassVar[str] = "base"
    model_class: ClassVar[str] = ""
    tower_class: ClassVar[str] = ""
    vision_prefixes: ClassVar[tuple[str, ...]] = ()
    layout: ClassVar[dict[str, Any]] = {}
    model_types: ClassVar[tuple[str, ...]] = ()
    tower_model_types: ClassVar[tuple[str, ...]] = ()
    model_name_markers: ClassVar[tuple[str, ...]] = ()
    hook_name_map: ClassVar[HookNameMap]
    end_of_turn_tokens: ClassVar[tuple[str, ...]] = ()
    language_input_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    tower_input_keys: ClassVar[tuple[str, ...]] = ()
    one_tile_per_image: ClassVar[dict[str, Any]] = {}
    has_language_model: ClassVar[bool] = True

    # ---- recognising the family
    def supports(self, config: Any) -> bool:
        """Whether a Hugging Face config belongs to this family."""
        return getattr(config, "model_type", None) in self.model_types

    def supports_tower(self, tower: nn.Module) -> bool:
        """Whether a bare Hugging Face vision tower belongs to this family."""
        return getattr(getattr(tower, "config", None), "model_type", None) in self.tower_model_types

    def claims_model_name(self, model_name: str) -> bool:
        """Whether a hub id or path names a model of this family: one of :attr:`model_name_markers`
        starts a word of it (after ``/``, ``-``, ``_``, ``.``, a space or the start), so
        ``"paligemma-3b"`` is not claimed by the marker ``"gemma-3"``."""
        return self.claimed_marker_length(model_name) > 0

    def claimed_marker_length(self, model_name: str) -> int:
        """Length of the longest of :attr:`model_name_markers` that starts a word of ``model_name``
        (0 if none does): the more specific family wins where two claim a name."""
        lowered = model_name.lower()
        longest = 0
        for marker in self.model_name_markers:
            if re.search(rf"(?:^|[/\\_\-. ]){re.escape(marker)}", lowered):
                longest = max(longest, len(marker))
        return longest

    def describe(self) -> str:
        """Model types, for error messages."""
        return f"model types {', '.join(self.model_types)}; towers {', '.join(self.tower_model_types)}"

    # ---- the vision tower
    def tower_config(self, tower: nn.Module, model_name: str) -> HookedViTConfig:
        """The :class:`HookedViTConfig` describing ``tower``."""
        raise NotImplementedError

    def tower_parts(self, tower: nn.Module) -> TowerParts:
        """The tower's Hugging Face modules, for HookedViT to run (shared, not copied)."""
        raise NotImplementedError

    def image_geometry(
        self, cfg: HookedViTConfig, pixel_values: torch.Tensor, **tower_inputs: Any
    ) -> ImageGeometry:
        """Where every token of a batch sits in the tower (see :class:`~vis_steer_lens.geometry.ImageGeometry`).

        The default is a fixed grid: ``[images, channels, H, W]`` pixels, each image
        ``cfg.n_prefix_tokens`` prefix tokens then its ``(H / patch) x (W / patch)`` patches in
        row-major order, one image per batch row. Families that pack, tile or reorder override it.

        Args:
            cfg: The tower's config.
            pixel_values: The tower's input as the processor gives it.
            **tower_inputs: Further processor outputs the tower reads (none by default).
        """
        if tower_inputs:
            raise ValueError(
                f"The {self.name} tower takes pixel_values only, got also {sorted(tower_inputs)}."
            )
        height, width = pixel_values.shape[-2:]
        grid = (height // cfg.patch_size, width // cfg.patch_size)
        return ImageGeometry.fixed_grid(
            pixel_values.shape[0], grid, cfg.n_prefix_tokens, device=pixel_values.device
        )

    def max_patches_per_image(self, cfg: HookedViTConfig, image_processor: Any) -> int:
        """The most patches one image can have after ``image_processor`` (mining's map width):
        ``cfg.n_patches`` for fixed grids."""
        return cfg.n_patches

    def default_config(self, n_layers: int) -> HookedViTConfig:
        """A small config of the family's layout, to list its hook names without a model."""
        shape = dict(d_model=8, n_heads=2, d_head=4, d_mlp=8, image_size=4, patch_size=2)
        return HookedViTConfig(n_layers=n_layers, family=self.name, **shape, **self.layout)

    def hooked_vit(self, tower: nn.Module, model_name: str | None = None) -> HookedViT:
        """Wrap a bare Hugging Face tower of this family as a :class:`HookedViT`."""
        if not self.supports_tower(tower):
            raise UnsupportedModelError(
                f"The {self.name} adapter takes vision towers of model type {self.tower_model_types}, got "
                f"{type(tower).__name__} ({getattr(getattr(tower, 'config', None), 'model_type', None)!r})."
            )
        name = model_name or getattr(tower.config, "_name_or_path", "") or "unnamed"
        cfg = self.tower_config(tower, name)
        parts = self.tower_parts(tower)
        if parts.geometry is None:
            parts.geometry = functools.partial(self.image_geometry, cfg)
        parts.input_keys = tuple(self.tower_input_keys)
        if (
            parts.max_patches is None
            and type(self).max_patches_per_image is not VLMAdapter.max_patches_per_image
        ):
            parts.max_patches = functools.partial(self.max_patches_per_image, cfg)
        return HookedViT(
            cfg,
            parts,
            name_map=self.hook_name_map,
            hf_tower=tower,
        )

    def vlm_tower(self, model: nn.Module, model_name: str | None = None) -> HookedViT:
        """The :class:`HookedViT` of a full model's tower (what :class:`~vis_steer_lens.HookedVLM`
        wraps): :meth:`hooked_vit` of :meth:`tower` by default; families whose tower reads settings
        of the VLM (LLaVA-NeXT's tiling) override it."""
        return self.hooked_vit(self.tower(model), model_name=model_name)

    @functools.cache  # noqa: B019 - adapters are a few long-lived singletons
    def _default_hook_names(self, n_layers: int) -> tuple[str, ...]:
        with torch.device("meta"):
            return tuple(HookedViT(self.default_config(n_layers), name_map=self.hook_name_map).hook_dict)

    def default_hook_names(self, n_layers: int) -> list[str]:
        """Hook names of an ``n_layers`` tower of this family, from a tower built on the meta device."""
        return list(self._default_hook_names(n_layers))

    # ---- the whole model
    def tower(self, model: nn.Module) -> nn.Module:
        """The Hugging Face vision tower of a full model."""
        raise NotImplementedError

    def projector(self, model: nn.Module) -> nn.Module:
        """A module mapping the tower's output ``[batch, tokens, d_vision]`` to soft tokens ``[batch, soft, d_lm]``."""
        raise NotImplementedError

    def projector_stop_at_layer(self, model: nn.Module, n_layers: int) -> int | None:
        """Which tower output the projector reads: ``None`` for the last hidden state (after the
        final norm), else the ``stop_at_layer`` whose residual stream it takes."""
        return None

    def feature_layer(self, model: nn.Module, n_layers: int) -> int:
        """The last vision block whose output reaches the language model (from
        :meth:`projector_stop_at_layer`): ``n_layers - 1`` where the projector reads the last hidden
        state, else the block whose ``hook_resid_post`` it reads (LLaVA: ``n_layers - 2``). Blocks after
        it, and the final norm, never reach the language model; ``-1`` means only the embeddings do."""
        stop = self.projector_stop_at_layer(model, n_layers)
        return n_layers - 1 if stop is None else stop - 1

    def reads_prefix_tokens(self, model: nn.Module) -> bool:
        """Whether the projector reads the tower's prefix tokens (a class token) at the feature layer;
        ``True`` by default (towers without prefix tokens have nothing to drop)."""
        return True

    def image_token_id(self, model: nn.Module) -> int:
        """Id of the placeholder token that soft image tokens replace."""
        return int(model.config.image_token_id)

    def pooled_image_features(self, image_features: torch.Tensor) -> Any:
        """The soft tokens ``[batch, soft_tokens, d_lm]`` in the form the model's ``mm_encoder_outputs``
        takes as ``pooler_output`` (the tensor itself by default)."""
        return image_features

    def decoding_positions(
        self,
        hf_model: nn.Module,
        inputs: Mapping[str, torch.Tensor],
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Positions for our own decoding loop (:func:`vis_steer_lens.explain.decoding.greedy_decode`).

        Args:
            hf_model: The Hugging Face model.
            inputs: The prompt's inputs (``input_ids`` and what the family adds).
            position_ids: ``[batch, seq]`` text positions (counting only the unpadded tokens).
            attention_mask: ``[batch, seq]``.

        Returns:
            ``(prefill position_ids, offset)``: what the prefill takes, and ``[batch]`` added to the
            text position of every decoded token (``None``: nothing). By default the text positions.
        """
        return position_ids, None

    def prefill_masks(self, hf_model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict | None:
        """Attention masks for an unpadded prefill, where the family needs its own (else ``None``)."""
        return None

    # ---- loading
    def load_model(self, name_or_path: str, *, device=None, dtype=None, revision=None) -> nn.Module:
        """Load the full Hugging Face model (``model_class``)."""
        import transformers

        model_class = getattr(transformers, self.model_class)
        model = model_class.from_pretrained(name_or_path, dtype=dtype or "auto", revision=revision)
        return model.to(device or "cpu").eval()

    def load_tower(self, name_or_path: str, *, device=None, dtype=None, revision=None) -> nn.Module:
        """Load only the vision tower's weights (from the shards that hold them)."""
        from transformers import AutoConfig

        from vis_steer_lens.adapters.checkpoints import load_tensors

        def strip(key: str) -> str | None:
            return next((key[len(p) :] for p in self.vision_prefixes if key.startswith(p)), None)

        config = AutoConfig.from_pretrained(name_or_path, revision=revision)
        tensors = load_tensors(name_or_path, lambda key: strip(key) is not None, revision)
        state = {strip(key): value for key, value in tensors.items()}
        tower_class = self._tower_class_object()
        tower = self._finish_tower(load_tower_weights(tower_class, config.vision_config, state, name_or_path))
        dtype = dtype or next(iter(state.values())).dtype
        return tower.to(device=device or "cpu", dtype=dtype).eval()

    def _tower_class_object(self) -> type:
        """The transformers class named :attr:`tower_class` (exported by ``transformers``)."""
        import transformers

        return getattr(transformers, self.tower_class)

    def load_processor(self, name_or_path: str, *, revision: str | None = None) -> Any:
        """The processor saved with a checkpoint (transformers' ``AutoProcessor``).

        Raises:
            OSError, ValueError, TypeError: As ``AutoProcessor`` does when there is none.
        """
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(name_or_path, revision=revision)

    def _finish_tower(self, tower: nn.Module) -> nn.Module:
        """Restore what a checkpoint does not store (non-persistent buffers); the tower by default."""
        return tower

    # ---- inputs
    def prompt_inputs(self, processor: Any, images: list[list[Any]], texts: list[str]) -> Mapping[str, Any]:
        """The processor's outputs for one user turn per row: its images, then its instruction.

        By default the processor's chat template (``apply_chat_template``, left-padded, one tower input
        per image by :attr:`one_tile_per_image`); a family prompted without a chat template
        (PaliGemma) overrides it.

        Args:
            processor: The model's processor (its tokenizer pads on the left).
            images: One list of images per row (empty for text only).
            texts: One instruction per row.

        Returns:
            The processor's outputs as tensors (``input_ids``, ``attention_mask``, ``pixel_values``, ...).
        """
        conversations = []
        for row_images, text in zip(images, texts, strict=True):
            content = [{"type": "image", "image": image} for image in row_images]
            content.append({"type": "text", "text": text})
            conversations.append([{"role": "user", "content": content}])
        return processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            padding=True,
            # One tower input per image (InternVL would tile a large one): the explainers' masks and
            # the hybrid's steering are per image.
            **self.one_tile_per_image,
        )

    #: Side in pixels of the empty image steering starts from; the processor resizes it as any image
    #: (fixed-grid towers to their size; native-resolution ones within their pixel bounds).
    empty_image_size: ClassVar[int] = 224

    def empty_image(self, kind: str, processor: Any = None) -> Image.Image:
        """The empty image as a PIL image of :attr:`empty_image_size` (``"mean"`` and ``"zeros"``: the
        processor's mean colour; ``"zeros"`` is made exact by :meth:`empty_image_inputs`; ``"noise"``:
        uniform pixel noise, seeded by :data:`~vis_steer_lens.choices.NOISE_SEED`)."""
        if kind not in EMPTY_IMAGES:
            raise ValueError(f"Unknown empty image {kind!r}; choose one of {EMPTY_IMAGES}.")
        if kind == "noise":
            return _noise_image(self.empty_image_size)
        if kind in ("mean", "zeros") and processor is not None:
            image_processor = getattr(processor, "image_processor", processor)
            colour = tuple(int(round(255 * m)) for m in image_processor.image_mean)
        else:
            colour = {"white": (255, 255, 255), "black": (0, 0, 0)}.get(kind, (128, 128, 128))
        return Image.new("RGB", (self.empty_image_size, self.empty_image_size), colour)

    def empty_image_inputs(
        self, kind: str, processor: Any, dtype: torch.dtype = torch.float32
    ) -> dict[str, torch.Tensor]:
        """The tower inputs of the empty image: ``pixel_values`` and the family's ``tower_input_keys``
        (by default :meth:`empty_image_pixel_values` alone)."""
        return {"pixel_values": self.empty_image_pixel_values(kind, processor, dtype)}

    def empty_image_pixel_values(
        self, kind: str, processor: Any, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """``pixel_values`` ``[1, channels, H, W]`` of an empty image.

        Args:
            kind: ``"white"``, ``"black"``, ``"gray"`` (128), ``"mean"`` (the processor's
                mean pixel, i.e. zeros after normalisation up to rounding) or ``"zeros"``
                (exact zeros after normalisation). The first four pass through the processor as
                a 224x224 RGB image, as the paper's code does.
            processor: The model's processor (its image processor resizes and normalises).
            dtype: Dtype of the result.
        """
        if kind not in EMPTY_IMAGES:
            raise ValueError(f"Unknown empty image {kind!r}; choose one of {EMPTY_IMAGES}.")
        image_processor = getattr(processor, "image_processor", processor)
        if kind == "zeros":  # the processor's output shape (its size, or its crop), all zeros
            image = Image.new("RGB", (224, 224), (0, 0, 0))
            pixel_values = image_processor(images=[image], return_tensors="pt")["pixel_values"]
            return torch.zeros_like(pixel_values[:1], dtype=dtype)
        if kind == "noise":
            image = _noise_image(224)
        elif kind == "mean":
            colour = tuple(int(round(255 * m)) for m in image_processor.image_mean)
            image = Image.new("RGB", (224, 224), colour)
        else:
            colour = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}[kind]
            image = Image.new("RGB", (224, 224), colour)
        pixel_values = image_processor(images=[image], return_tensors="pt")["pixel_values"]
        return pixel_values[:1].to(dtype)


def _noise_image(size: int) -> Image.Image:
    """A ``size`` x ``size`` RGB image of uniform pixel noise, the same for every call."""
    pixels = np.random.default_rng(NOISE_SEED).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def load_tower_weights(
    tower_class: type, vision_config: Any, state: dict[str, torch.Tensor], name_or_path: str
) -> nn.Module:
    """Build ``tower_class(vision_config)`` on the meta device and assign ``state`` to it.

    Raises:
        CheckpointError: If the weights do not fit the tower.
    """
    from vis_steer_lens.adapters.checkpoints import CheckpointError

    if not state:
        raise CheckpointError(f"The checkpoint {name_or_path!r} holds no vision tower weights.")
    vision_config._attn_implementation = "sdpa"
    with torch.device("meta"):
        tower = tower_class(vision_config)
    missing, unexpected = tower.load_state_dict(state, strict=False, assign=True)
    # position_ids is a non-persistent buffer that checkpoints do not store.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(
            f"Vision weights of {name_or_path!r} do not fit a {tower_class.__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}."
        )
    return tower


__all__ = ["EMPTY_IMAGES", "UnsupportedModelError", "VLMAdapter", "load_tower_weights"]
