"""HookedVLM: a whole vision-language model whose vision side runs through HookedViT."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vis_steer_lens.families import NoLanguageModelError, adapter_for, end_of_answer_ids
from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.hook_names import UnknownHookNameError
from vis_steer_lens.hooked_vit import HookedViT, HookNameResolutionMixin
from vis_steer_lens.saes.splicing import SAESplicingMixin

if TYPE_CHECKING:
    from vis_steer_lens.adapters.base import VLMAdapter

logger = logging.getLogger(__name__)

# Names of the projector's hooks in TransformerBridge's convention.
_PROJECTOR_ALIASES = {
    "vision_projector.hook_in": "projector.hook_in",
    "vision_projector.hook_out": "projector.hook_out",
}


class HookedProjector(nn.Module):
    """The multi-modal projector with hooks on its input and its output.

    ``hook_in`` is the vision tower output the projector reads ``[batch, tokens, d_vision]``
    (the last hidden state, or the residual stream of the adapter's feature layer);
    ``hook_out`` is one vector per soft image token ``[batch, soft_tokens, d_lm]``, exactly what
    the language model receives in place of the image placeholder tokens.
    """

    def __init__(self, projector: nn.Module):
        super().__init__()
        self.projector = projector
        self.hook_in = HookPoint()
        self.hook_out = HookPoint()

    def forward(self, vision_out: torch.Tensor, geometry: ImageGeometry | None = None) -> torch.Tensor:
        """Map the tower output to soft tokens; projectors of packed towers also read the geometry."""
        vision_out = self.hook_in(vision_out)
        if getattr(self.projector, "takes_geometry", False):
            if geometry is None:
                raise ValueError("This projector needs the batch's geometry.")
            return self.hook_out(self.projector(vision_out, geometry))
        return self.hook_out(self.projector(vision_out))


class HookedVLM(SAESplicingMixin, HookNameResolutionMixin, HookedRootModule):
    """A Hugging Face VLM with a hooked vision tower, a hooked projector and the language model.

    The vision tower runs as a :class:`HookedViT` (``.vision``) over the model's own
    weights, so caching and editing vision activations work through TransformerLens hook
    names; the language model is the Hugging Face one, untouched. Hook names at this level
    are the vision tower's (``blocks.3.hook_resid_post``; ``vision.``-prefixed, Bridge and
    Hugging Face names are accepted too) plus ``projector.hook_in`` and ``projector.hook_out``.

    Vision hooks fire once per prompt: :meth:`generate` encodes the images once under the
    active hooks and hands the soft tokens to Hugging Face ``generate``.

    Example:
        >>> vlm = HookedVLM.from_pretrained("google/gemma-3-4b-it", device="cuda", dtype=torch.bfloat16)  # doctest: +SKIP
        >>> inputs = vlm.prompt_inputs([image], "Describe the image.")  # doctest: +SKIP
        >>> logits, cache = vlm.run_with_cache(**inputs, names_filter="blocks.16.hook_resid_post")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any = None,
        adapter: VLMAdapter | None = None,
        model_name: str | None = None,
    ):
        super().__init__()
        self.adapter = adapter or adapter_for(model)
        if not self.adapter.has_language_model:
            raise NoLanguageModelError(
                f"HookedVLM wraps a vision-language model; {type(model).__name__} is a {self.adapter.name} vision "
                "tower with no language model. Wrap it with HookedViT.from_hf(tower) (mining, Top-k displays, the "
                "dashboard and SAE training work on a tower)."
            )
        self.model_name = model_name or getattr(model.config, "_name_or_path", "") or "unnamed"
        self.hf_model = model
        self.processor = processor
        self.vision = self.adapter.vlm_tower(model, model_name=self.model_name)
        if processor is not None:  # integer (image) tensors given as pixel values go through it
            from vis_steer_lens.activations import image_processor_of

            self.vision.image_processor = image_processor_of(self, processor)
        self.projector = HookedProjector(self.adapter.projector(model))
        self._projector_stop = self.adapter.projector_stop_at_layer(model, self.vision.cfg.n_layers)
        self.setup()

    def setup(self) -> None:
        """Collect the hook points of the vision tower and the projector (not of the HF modules)."""
        self.hook_dict = dict(self.vision.hook_dict)
        for name in ("hook_in", "hook_out"):
            hook_point = getattr(self.projector, name)
            hook_point.name = f"projector.{name}"
            self.hook_dict[hook_point.name] = hook_point
        self.mod_dict = dict(self.hook_dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_hf(cls, model: nn.Module, processor: Any = None, model_name: str | None = None) -> HookedVLM:
        """Wrap a Hugging Face VLM already in memory (weights are shared, not copied).

        Args:
            model: E.g. a ``Gemma3ForConditionalGeneration`` or an ``InternVLForConditionalGeneration``.
            processor: Its processor, needed by :meth:`prompt_inputs` and :meth:`generate_text`.
            model_name: Name recorded in SAE metadata and results. Defaults to the config's
                ``_name_or_path``.

        Raises:
            UnsupportedModelError: If no adapter knows the model's architecture.
        """
        return cls(model.eval(), processor=processor, model_name=model_name)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
        load_processor: bool = True,
        model_name: str | None = None,
    ) -> HookedVLM:
        """Load a VLM and its processor from a hub id (``"google/gemma-3-4b-it"``) or a local folder.

        Args:
            name_or_path: Hub id or folder written by ``save_pretrained``.
            device: Device for the weights. Defaults to CPU.
            dtype: Weight dtype. Defaults to the checkpoint's.
            revision: Hub revision.
            load_processor: Load the processor saved beside the model. A folder without one
                gives ``processor=None`` (with a warning).
            model_name: Name recorded in results and SAE metadata (default: ``name_or_path``).

        Raises:
            UnsupportedModelError: If no adapter knows the checkpoint's architecture.
        """
        adapter = adapter_for(name_or_path, revision=revision)
        if not adapter.has_language_model:
            raise NoLanguageModelError(
                f"{name_or_path!r} is a {adapter.name} vision tower with no language model; load it with "
                "HookedViT.from_pretrained(...) (mining, Top-k displays and SAE training work on a tower)."
            )
        model = adapter.load_model(name_or_path, device=device, dtype=dtype, revision=revision)
        processor = None
        if load_processor:
            try:
                processor = adapter.load_processor(name_or_path, revision=revision)
            except (OSError, ValueError, TypeError) as err:
                logger.warning(
                    "No processor loaded from %r (%s); pass one to HookedVLM.from_hf.", name_or_path, err
                )
        return cls(model, processor=processor, adapter=adapter, model_name=model_name or name_or_path)

    @property
    def device(self) -> torch.device:
        return self.vision.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vision.dtype

    @property
    def feature_layer(self) -> int:
        """The last vision block whose output reaches the language model.

        ``n_layers - 1`` for most families; LLaVA reads the penultimate block
        (``vision_feature_layer=-2``), so an edit in its last block or its final norm changes nothing
        the model says. Steering refuses SAEs whose hook is after it (see
        :meth:`reaches_language_model`); reading there (mining, Top-k) is fine.
        """
        return self.adapter.feature_layer(self.hf_model, self.vision.cfg.n_layers)

    @property
    def reads_prefix_tokens(self) -> bool:
        """Whether the projector reads the tower's prefix tokens (a class token) at :attr:`feature_layer`
        (LLaVA and InternVL3 drop the class token; it reaches the language model only through
        attention in the blocks before)."""
        return self.adapter.reads_prefix_tokens(self.hf_model)

    def reaches_language_model(self, hook_name: str) -> bool:
        """Whether an edit at ``hook_name`` (any convention) can change what the language model reads.

        Embedding hooks and blocks up to :attr:`feature_layer` reach it; later blocks, and the final
        norm where the projector reads an earlier layer, do not; the projector's hooks do.

        Raises:
            UnknownHookNameError: If the name is unknown.
        """
        name = self.resolve_hook_name(hook_name)
        if name.startswith("projector."):
            return True
        layer = self.vision.parse_hook_name(name).layer
        if layer is not None:
            return layer <= self.feature_layer
        if name.startswith("ln_final."):
            return self._projector_stop is None
        return True  # embeddings, position embeddings, the pre-norm: before every block

    @property
    def image_token_id(self) -> int:
        return self.adapter.image_token_id(self.hf_model)

    # ------------------------------------------------------------------ forward passes
    def encode_images(
        self,
        pixel_values: torch.Tensor | None = None,
        *,
        resid: torch.Tensor | None = None,
        start_at_layer: int | None = None,
        geometry: ImageGeometry | None = None,
        **tower_inputs: Any,
    ) -> torch.Tensor:
        """Soft image tokens for the language model, under the active hooks.

        Args:
            pixel_values: ``[batch, channels, H, W]`` from the processor (packed towers: the
                flattened patches ``[patches, patch_dim]``).
            resid: Instead of pixels, the residual stream ``[batch, tokens, d_vision]``
                entering block ``start_at_layer`` (to reuse activations computed earlier).
            start_at_layer: First vision block to run when ``resid`` is given.
            geometry: The batch's geometry (needed with ``resid`` on a packed tower; computed
                from the pixels otherwise).
            **tower_inputs: The processor outputs the tower reads besides the pixels (the
                adapter's ``tower_input_keys``, e.g. ``image_grid_thw``).

        Returns:
            ``[batch, soft_tokens, d_lm]`` (packed and AnyRes towers: ``[1, all soft tokens, d_lm]``,
            in the order of the image placeholder tokens).
        """
        if (pixel_values is None) == (resid is None):
            raise ValueError("Pass exactly one of pixel_values or resid (with start_at_layer).")
        takes_geometry = getattr(self.projector.projector, "takes_geometry", False)
        if geometry is None and pixel_values is not None and (self.vision._needs_context or takes_geometry):
            geometry = self.vision.image_geometry(pixel_values, **tower_inputs)
        extra = {} if geometry is None else {"geometry": geometry}
        if resid is not None:
            if start_at_layer is None:
                raise ValueError("resid needs start_at_layer: the block the residual stream enters.")
            vision_out = self.vision(
                resid, start_at_layer=start_at_layer, stop_at_layer=self._projector_stop, **extra
            )
        else:
            from vis_steer_lens.activations import image_processor_of, is_image, to_pixel_values

            if is_image(pixel_values) and self.processor is not None:  # integer tensors are images
                pixel_values = to_pixel_values(list(pixel_values), image_processor_of(self))
            vision_out = self.vision(pixel_values, stop_at_layer=self._projector_stop, **extra)
        return self.projector(vision_out, geometry)

    def image_geometry(self, pixel_values: torch.Tensor, **tower_inputs: Any) -> ImageGeometry:
        """Where every token of a batch of images sits in the tower (see :class:`ImageGeometry`)."""
        return self.vision.image_geometry(pixel_values, **tower_inputs)

    # ------------------------------------------------------------------ the public contract
    # What explainers, scorers and decoding need of a VLM, whatever its family: they call these
    # and never reach into the adapter or the processor.
    @property
    def language_input_keys(self) -> tuple[str, ...]:
        """The processor outputs the language model takes besides the image (the family's)."""
        return tuple(self.adapter.language_input_keys)

    def split_inputs(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split processor outputs into the language model's inputs and the tower's.

        Args:
            inputs: E.g. from :meth:`prompt_inputs`: ``input_ids``, ``attention_mask``,
                ``pixel_values`` and the family's extras (``token_type_ids``, ``image_grid_thw``...).

        Returns:
            ``(language_inputs, tower_inputs)``: the first without ``pixel_values`` (what
            :func:`~vis_steer_lens.explain.decoding.greedy_decode` takes); the second
            ``pixel_values`` plus the keys the tower reads (what :meth:`encode_images` and
            :meth:`image_geometry` take as keyword arguments). ``image_grid_thw`` is in both
            for packed families: the language model places its image tokens by it (AnyRes:
            ``image_sizes``, which the language model's forward takes too).
        """
        tower_keys = ("pixel_values", *self.adapter.tower_input_keys)
        tower = {key: inputs[key] for key in tower_keys if key in inputs}
        language = {key: value for key, value in inputs.items() if key != "pixel_values"}
        return language, tower

    def image_feature_inputs(self, image_features: torch.Tensor) -> dict[str, Any]:
        """The keyword arguments that hand precomputed soft tokens to the Hugging Face forward.

        Args:
            image_features: ``[n_images, soft_tokens, d_lm]`` (packed towers ``[1, all soft tokens,
                d_lm]``) from :meth:`encode_images`.
        """
        pooled = self.adapter.pooled_image_features(image_features)
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=pooled)}}

    def decoding_positions(
        self, inputs: Mapping[str, torch.Tensor], position_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Positions for a decoding loop of our own: the family's prefill positions (multimodal
        RoPE for some) and ``[batch]`` offsets added to every decoded token's text position
        (``None``: none).

        Args:
            inputs: The prompt's language inputs (``input_ids`` ``[batch, seq]`` and the family's extras).
            position_ids: ``[batch, seq]`` text positions counting only unpadded tokens.
            attention_mask: ``[batch, seq]``.
        """
        return self.adapter.decoding_positions(self.hf_model, inputs, position_ids, attention_mask)

    def prefill_masks(self, inputs: Mapping[str, torch.Tensor]) -> dict | None:
        """Attention masks for an unpadded prefill where the family builds its own faster (else ``None``)."""
        return self.adapter.prefill_masks(self.hf_model, dict(inputs))

    def end_of_answer_ids(self) -> list[int]:
        """Token ids that end an answer: the tokenizer's EOS and the family's end-of-turn tokens."""
        return end_of_answer_ids(self.tokenizer, self.adapter)

    def empty_image(self, kind: str = "white") -> Image.Image:
        """The empty image steering starts from, as the PIL image a prompt is built from.

        Args:
            kind: ``"white"`` (default), ``"black"``, ``"gray"``, ``"mean"`` or ``"zeros"``.
        """
        return self.adapter.empty_image(kind, self.processor)

    def empty_image_inputs(self, kind: str = "white") -> dict[str, torch.Tensor]:
        """Tower inputs of the empty image on the model's device: ``pixel_values`` (``[1, C, H, W]``;
        packed towers ``[patches, patch_dim]``) and the family's tower keys (``image_grid_thw``)."""
        inputs = self.adapter.empty_image_inputs(kind, self.require_processor(), dtype=self.dtype)
        return {key: value.to(self.device) for key, value in inputs.items()}

    def _language_kwargs(
        self, pixel_values: torch.Tensor | None, image_features: torch.Tensor | None, kwargs: dict
    ) -> dict:
        if pixel_values is not None and image_features is not None:
            raise ValueError("Pass pixel_values or image_features, not both.")
        if pixel_values is not None:
            tower_inputs = {key: kwargs[key] for key in self.adapter.tower_input_keys if key in kwargs}
            image_features = self.encode_images(pixel_values, **tower_inputs)
        if image_features is not None:
            kwargs.update(self.image_feature_inputs(image_features))
        return kwargs

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        image_features: torch.Tensor | None = None,
        return_type: str = "logits",
        **kwargs: Any,
    ) -> Any:
        """Run the whole model once.

        Args:
            input_ids: ``[batch, seq]`` with the image placeholder tokens in place.
            pixel_values: ``[n_images, channels, H, W]``, encoded through the hooked tower.
            attention_mask: ``[batch, seq]``.
            image_features: Precomputed soft tokens ``[n_images, soft_tokens, d_lm]`` instead
                of ``pixel_values``.
            return_type: ``"logits"`` (``[batch, seq, vocab]``) or ``"output"`` (the Hugging Face
                output object).
            **kwargs: Passed to the Hugging Face model (e.g. ``token_type_ids``).
        """
        kwargs = self._language_kwargs(pixel_values, image_features, kwargs)
        output = self.hf_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if return_type == "logits":
            return output.logits
        if return_type == "output":
            return output
        raise ValueError(f"return_type must be 'logits' or 'output', got {return_type!r}.")

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        image_features: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Hugging Face ``generate`` with the images encoded once through the hooked tower.

        Hooks active when this is called (``with vlm.hooks(...)``) act on the image encoding;
        decoding is greedy unless ``generate_kwargs`` say otherwise.

        Args:
            input_ids: ``[batch, seq]`` prompt tokens (left-padded for batches).
            pixel_values: ``[n_images, channels, H, W]``.
            attention_mask: ``[batch, seq]``.
            image_features: Precomputed soft tokens instead of ``pixel_values``.
            **generate_kwargs: ``max_new_tokens``, ``token_type_ids``, ``stopping_criteria``, ...

        Returns:
            ``[batch, seq + new_tokens]`` token ids.
        """
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs = self._language_kwargs(pixel_values, image_features, generate_kwargs)
        return self.hf_model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)

    # ------------------------------------------------------------------ text convenience
    def require_processor(self) -> Any:
        """The processor, or a clear error when this model was wrapped without one.

        Raises:
            ValueError: If the model has no processor.
        """
        if self.processor is None:
            raise ValueError(
                "This HookedVLM has no processor. Load it with HookedVLM.from_pretrained(...) from a folder "
                "that has one, or pass processor= to HookedVLM.from_hf."
            )
        return self.processor

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer (raises as :meth:`require_processor` without a processor)."""
        processor = self.require_processor()
        return getattr(processor, "tokenizer", processor)

    def prompt_inputs(
        self,
        images: Sequence[Any] | None,
        instruction: str | Sequence[str],
        device: str | torch.device | None = None,
    ) -> dict[str, torch.Tensor]:
        """Model inputs in the family's prompt format: one user turn per row, with its images then the
        instruction (a chat template; PaliGemma's processor format, which has none: see the adapter's
        ``prompt_inputs``).

        Args:
            images: One PIL image per row (or a list of images per row; ``None`` for text only), of
                any size: fixed-grid families resize each to their tower's size, native-resolution
                ones (Qwen2-VL) keep its own within the processor's pixel bounds, and the prompt
                holds as many image tokens as each image gives.
            instruction: The user's text, one string for all rows or one per row.
            device: Where the tensors go (default: the model's device).

        Returns:
            A dict with ``input_ids``, ``attention_mask``, ``pixel_values`` and whatever else the
            family's language model takes (``token_type_ids`` for Gemma 3), on ``device``,
            left-padded for generation. Each image is one tower input (the adapter's
            ``one_tile_per_image`` options: InternVL's processor does not tile it).
        """
        processor = self.require_processor()
        n_rows = (
            len(images) if images is not None else (1 if isinstance(instruction, str) else len(instruction))
        )
        texts = [instruction] * n_rows if isinstance(instruction, str) else list(instruction)
        if len(texts) != n_rows:
            raise ValueError(f"Got {n_rows} image rows but {len(texts)} instructions.")
        rows = []
        for row in range(n_rows):
            row_images = [] if images is None else images[row]
            rows.append(list(row_images) if isinstance(row_images, (list, tuple)) else [row_images])
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"
        # The family builds its own prompt format: a chat template for most, PaliGemma's prefix format.
        inputs = self.adapter.prompt_inputs(processor, rows, texts)
        keep = (*self.adapter.language_input_keys, *self.adapter.tower_input_keys, "pixel_values")
        return {
            key: value.to(device or self.device) if hasattr(value, "to") else value
            for key, value in inputs.items()
            if key in keep
        }

    def generate_text(
        self,
        images: Sequence[Any] | None,
        instruction: str | Sequence[str],
        *,
        max_new_tokens: int = 64,
        fwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
        **generate_kwargs: Any,
    ) -> list[str]:
        """Generate an answer per row and decode only the new tokens.

        Args:
            images: One image (or list of images) per row.
            instruction: The user's text.
            max_new_tokens: Tokens to generate at most.
            fwd_hooks: ``(hook_name, fn)`` pairs active while the images are encoded.
            **generate_kwargs: Passed to :meth:`generate`.
        """
        inputs = self.prompt_inputs(images, instruction)
        with self.hooks(fwd_hooks=list(fwd_hooks)):
            tokens = self.generate(**inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
        new_tokens = tokens[:, inputs["input_ids"].shape[1] :]
        return self.require_processor().batch_decode(new_tokens, skip_special_tokens=True)

    # ------------------------------------------------------------------ hooks
    def resolve_hook_name(self, name: str) -> str:
        """The hook name used at this level for a name in any convention.

        Raises:
            UnknownHookNameError: With the closest valid names, if the name is unknown.
        """
        if name in self.hook_dict:
            return name
        if name in _PROJECTOR_ALIASES:
            return _PROJECTOR_ALIASES[name]
        if name.startswith("vision."):
            name = name[len("vision.") :]
        try:
            return self.vision.resolve_hook_name(name)
        except UnknownHookNameError as err:
            raise UnknownHookNameError(
                f"{err} The projector's hooks are 'projector.hook_in' and 'projector.hook_out'."
            ) from None

    @property
    def _cache_model(self) -> HookedViT:
        return self.vision  # the cache's layer shorthand counts vision layers

    def __repr__(self) -> str:
        return f"HookedVLM({self.model_name!r}, adapter={self.adapter.name!r}, vision={self.vision!r})"


__all__ = ["HookedProjector", "HookedVLM"]
