"""Top-k and Steering-informed Top-k: explain a feature from the images that activate it most.

Top-k shows the explainer VLM a feature's top images together in one prompt, with the patches
where the feature is inactive masked out (or a heatmap overlay), and asks what they share.
Steering-informed Top-k does the same and, in the same forward pass, adds the feature's decoder
direction to each image's activations at the patches where the feature is active: the hybrid of
the paper, at the cost of Top-k. Both encode the prompt's images once (under the hybrid's hooks)
and decode with :func:`.decoding.greedy_decode`, as steering does: greedy ``generate``'s tokens,
with each row leaving the batch once its answer has ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from sae_lens import SAE

from vis_steer_lens.activations import patch_tokens
from vis_steer_lens.display import heatmap_overlay, mask_patches
from vis_steer_lens.explain.base import Explainer
from vis_steer_lens.explain.decoding import greedy_decode
from vis_steer_lens.explain.prompts import PromptSet, get_prompt
from vis_steer_lens.explain.settings import check_coefficient, check_positive_int
from vis_steer_lens.explain.text import explanation_and_flag
from vis_steer_lens.memory import explain_bytes_per_row
from vis_steer_lens.saes.metadata import sae_identity
from vis_steer_lens.saes.validation import SAEModelMismatchError, check_sae_steers

if TYPE_CHECKING:
    from vis_steer_lens.hooked_vlm import HookedVLM
    from vis_steer_lens.mining import MinedActivations


class TopKExplainer(Explainer):
    """Explain features by showing the explainer VLM their top-activating images.

    Args:
        mined: Results of :func:`vis_steer_lens.mine_top_activations` (top images per feature with
            per-patch activation maps, and access to the images).
        explainer_model: The VLM that writes explanations (a :class:`~vis_steer_lens.HookedVLM`
            with a processor). May be larger than the subject model; by default the model the
            activations were mined with, when ``mined`` still holds it.
        k_images: Top images per prompt (the paper shows 5); ``None``: as many as were mined.
            More than were mined is an error.
        display: ``"mask"`` (inactive patches painted gray) or ``"heatmap"`` (green overlay).
        prompt: A prompt id or :class:`PromptSet`; its Top-k instruction is used.
        max_new_tokens: Cap on generated tokens.
        batch_size: Features per batch (one prompt each; decoded together, rows leaving as they end);
            ``"auto"`` fits the free memory (see :class:`~vis_steer_lens.SteeringExplainer`).
        heatmap_alpha: Overlay opacity at the map's maximum (``display="heatmap"``).
        direction: ``"sae"`` (each feature's own images) or ``"permuted"`` (a control: each
            feature is shown another feature's images, the list rotated by half its length).
        stop_at_sentence_end: Stop each row at its sentence end.
        seed: Recorded; Top-k itself is deterministic.
    """

    method = "topk"
    _allowed_directions: tuple[str, ...] = ("sae", "permuted")

    def __init__(
        self,
        mined: MinedActivations,
        explainer_model: HookedVLM | None = None,
        *,
        sae: SAE | None = None,
        k_images: int | None = None,
        display: str = "mask",
        prompt: str | PromptSet = "default",
        max_new_tokens: int = 48,
        batch_size: int = 8,
        heatmap_alpha: float = 0.5,
        direction: str = "sae",
        stop_at_sentence_end: bool = True,
        seed: int = 0,
    ):
        model = explainer_model if explainer_model is not None else getattr(mined, "model", None)
        if model is None:
            raise ValueError("Pass explainer_model: the mined results do not hold the model they came from.")
        if direction not in self._allowed_directions:
            raise ValueError(
                f"{type(self).__name__} supports direction {self._allowed_directions}, got {direction!r}."
            )
        if sae is not None and sae_identity(sae) != mined.sae_id:
            raise SAEModelMismatchError(
                f"The mined top images are of SAE {mined.sae_id}, but the SAE given is {sae_identity(sae)}: "
                "its features would be explained with another SAE's images. Mine with this SAE, or pass the "
                "SAE that was mined."
            )
        super().__init__(
            model,
            sae,
            prompt=get_prompt(prompt),
            batch_size=batch_size,
            direction=direction,
            seed=seed,
            sae_id=mined.sae_id,
            d_sae=mined.d_sae,
            live_features=mined.live_features(),
        )
        k_images = mined.k if k_images is None else k_images
        if k_images < 1:
            raise ValueError(f"k_images must be >= 1, got {k_images}.")
        if k_images > mined.k:
            raise ValueError(
                f"k_images={k_images} asks for more top images than were mined (k={mined.k} per feature). "
                f"Pass k_images <= {mined.k} (--k-images), or mine again with --k-images {k_images}."
            )
        self.prompt.topk(display)  # validates display
        self.mined = mined
        self.k_images = k_images
        self.display = display
        self.max_new_tokens = check_positive_int(max_new_tokens, "max_new_tokens")
        self.heatmap_alpha = heatmap_alpha
        self.stop_at_sentence_end = stop_at_sentence_end
        self._tokenizer = model.tokenizer
        self._eos = model.end_of_answer_ids()
        self._patch_size = mined.patch_size

    def _tower_refusal(self, vit: Any) -> str:
        return (
            f"Top-k needs a vision-language model to write explanations; the features were mined on a "
            f"HookedViT ({vit.cfg.family} tower {vit.cfg.model_name!r}) with no language model. Pass "
            "explainer_model=<any HookedVLM>: it is shown the top images, and need not hold the tower."
        )

    def run_config(self) -> dict[str, Any]:
        config = super().run_config()
        config.update(
            {
                "k_images": self.k_images,
                "display": self.display,
                "heatmap_alpha": self.heatmap_alpha if self.display == "heatmap" else None,
                "max_new_tokens": self.max_new_tokens,
                "rank_by": self.mined.rank_by,
                "image_source": self.mined.source_id,
            }
        )
        return config

    def _shown_image(self, image: Any, activation_map: torch.Tensor):
        if self.display == "mask":
            return mask_patches(image, activation_map > 0, self._patch_size)
        return heatmap_overlay(image, activation_map, self._patch_size, max_alpha=self.heatmap_alpha)

    def _top(self, feature: int) -> list[tuple[int, float, torch.Tensor]]:
        return [entry for entry in self.mined.top_images(feature)[: self.k_images] if entry[1] > 0]

    def _image_feature(self, feature: int, direction_feature: int) -> int:
        """Whose top images a row shows: under the permuted control, another feature's."""
        return direction_feature

    def _steering_hook(self, features, direction_features, tops) -> list[tuple[str, Any]]:
        """Hooks active while the prompt's images are encoded (none for plain Top-k)."""
        return []

    def _row_bytes(self) -> int:
        # The largest image mined (native-resolution towers keep each at its own size).
        patches = int(self.mined.top_grids.prod(dim=-1).max()) if self.model.vision.variable_grids else None
        return explain_bytes_per_row(self.model, self.k_images, self.max_new_tokens, patches=patches or None)

    def _explain_batch(self, features: list[int], direction_features: list[int]) -> list[dict[str, Any]]:
        tops = [
            self._top(self._image_feature(f, df)) for f, df in zip(features, direction_features, strict=True)
        ]
        rows: dict[int, dict[str, Any]] = {}
        live = [i for i, top in enumerate(tops) if top]
        for i, feature in enumerate(features):
            if not tops[i]:  # never fired on the mined images: nothing to show
                rows[i] = self._row(
                    feature,
                    direction_features[i],
                    explanation="",
                    raw_generation="",
                    image_ids=[],
                    coefficient=self._row_coefficient(),
                    flag="empty",  # the images it would show never fired (a permuted control's)
                )
        if live:
            images = [
                [self._shown_image(self.mined.image(image_id), amap) for image_id, _, amap in tops[i]]
                for i in live
            ]
            inputs = self.model.prompt_inputs(images, self.prompt.topk(self.display))
            prompt_length = inputs["input_ids"].shape[1]
            prefix = self.prompt.prefix(self.method)
            stopping = self._stopping_criteria(prompt_length)
            language_inputs, tower_inputs = self.model.split_inputs(inputs)
            self._batch_geometry = (
                self.model.image_geometry(**tower_inputs) if self.model.vision.variable_grids else None
            )
            hooks = self._steering_hook(
                [features[i] for i in live], [direction_features[i] for i in live], [tops[i] for i in live]
            )
            with torch.no_grad():
                with self.model.hooks(fwd_hooks=hooks):  # the hybrid's steering acts on the images only
                    image_features = self.model.encode_images(**tower_inputs)
                # Greedy, as generate would be, but rows leave the batch once they have ended.
                tokens, ended = greedy_decode(
                    self.model,
                    language_inputs,
                    image_features,
                    max_new_tokens=self.max_new_tokens,
                    eos_token_ids=self._eos,
                    pad_token_id=self._tokenizer.pad_token_id,
                    stop=stopping,
                    return_finished=True,
                )
            for row_index, i in enumerate(live):
                raw = self._tokenizer.decode(tokens[row_index, prompt_length:], skip_special_tokens=True)
                explanation, flag = explanation_and_flag(
                    raw, prefix, self.prompt.strip, bool(ended[row_index])
                )
                rows[i] = self._row(
                    features[i],
                    direction_features[i],
                    explanation=explanation,
                    flag=flag,
                    raw_generation=raw,
                    image_ids=[int(image_id) for image_id, _, _ in tops[i]],
                    coefficient=self._row_coefficient(),
                )
        return [rows[i] for i in range(len(features))]

    def _row_coefficient(self) -> float | None:
        return None

    def _dead_fields(self) -> dict[str, Any]:
        return {"coefficient": self._row_coefficient(), "image_ids": []}


class SteeringInformedTopKExplainer(TopKExplainer):
    """Top-k with the feature's direction also added to each shown image where the feature is active.

    The explainer model must be the subject model (the SAE reads its vision tower). Arguments are
    those of :class:`TopKExplainer`, plus:

    Args:
        sae: The SAE whose decoder directions steer.
        coefficient: Scale of the added direction as a multiple of each image's mean patch norm
            at the SAE's hook (measured in the same forward pass, so it costs nothing). The
            hybrid wants smaller values than plain steering.
        direction: ``"sae"``, ``"random_norm_matched"`` or ``"permuted"``. The images are always
            the feature's own, so the controls isolate what the steering adds.
    """

    method = "hybrid"
    _allowed_directions = ("sae", "random_norm_matched", "permuted")

    def __init__(
        self,
        mined: MinedActivations,
        explainer_model: HookedVLM | None = None,
        *,
        sae: SAE,
        coefficient: float = 1.0,
        **kwargs: Any,
    ):
        coefficient = check_coefficient(coefficient, "coefficient (a multiple of the patch norm)")
        _refuse_tower_subject(mined, sae)
        super().__init__(mined, explainer_model, sae=sae, **kwargs)
        self.hook_name = check_sae_steers(sae, self.model, method="the hybrid (Steering-informed Top-k)")
        self.coefficient = float(coefficient)

    def _image_feature(self, feature: int, direction_feature: int) -> int:
        # The images stay the feature's own; controls change only the steering direction.
        return feature

    def run_config(self) -> dict[str, Any]:
        config = super().run_config()
        config.update({"hook_name": self.hook_name, "coefficient": self.coefficient})
        return config

    def _row_coefficient(self) -> float | None:
        return self.coefficient

    def _steering_hook(self, features, direction_features, tops) -> list[tuple[str, Any]]:
        directions = self.directions(features, direction_features).float()  # [rows, d_in]
        # One entry per shown image, in the processor's order (row by row).
        per_image_direction = torch.cat([directions[i].expand(len(top), -1) for i, top in enumerate(tops)])
        geometry = getattr(self, "_batch_geometry", None)
        if geometry is not None:  # images of their own grids: packed in one sequence, or AnyRes crops
            hook = self.model.vision.parse_hook_name(self.hook_name)
            return [(self.hook_name, self._packed_add(geometry, tops, per_image_direction, hook))]
        masks = torch.cat(
            [torch.stack([amap.flatten() > 0 for _, _, amap in top]) for top in tops]
        )  # [images, patches]
        # Prefix tokens (a class token) are never steered: the maps cover patches only.
        n_prefix = self.model.vision.cfg.n_prefix_tokens
        masks = torch.cat([masks.new_zeros(masks.shape[0], n_prefix), masks], dim=1)  # [images, tokens]
        multiple = self.coefficient
        hook_name = self.model.vision.parse_hook_name(self.hook_name)

        def add(act: torch.Tensor, hook: Any) -> torch.Tensor:
            flat = hook_name.flatten(act)
            patch_norm = (
                patch_tokens(flat, self.model).float().norm(dim=-1).mean(dim=1, keepdim=True)
            )  # [images, 1]
            delta = multiple * patch_norm.unsqueeze(-1) * per_image_direction.to(act.device).unsqueeze(1)
            delta = delta * masks.to(act.device).unsqueeze(-1)
            return act + hook_name.unflatten(delta, act).to(act.dtype)

        return [(self.hook_name, add)]

    def _packed_add(self, geometry: Any, tops: list, per_image_direction: torch.Tensor, hook_name: Any):
        """The hybrid's hook on a tower of per-image grids: each shown image's tokens (a packed
        ``[1, tokens, ...]`` or AnyRes crops ``[crops, tokens, ...]``, flattened alike) steered where its
        own map (at its own grid) is active, scaled by that image's mean patch norm."""
        maps = [amap for top in tops for _, _, amap in top]
        masks = []
        for image, amap in enumerate(maps):
            grid = geometry.grid(image)
            if geometry.crop_tokens is not None and tuple(amap.shape) != grid:
                # AnyRes prompts with several images show each as its base crop only (OneVision): the
                # mined map of the whole image, max-pooled to that coarser grid, says where it fired.
                amap = torch.nn.functional.adaptive_max_pool2d(amap[None, None].float(), grid)[0, 0]
            if tuple(amap.shape) != grid:
                raise ValueError(
                    f"A shown image has a {geometry.grid(image)} grid but its map is {tuple(amap.shape)}: "
                    "the processor resized it differently from the mined image."
                )
            masks.append(geometry.from_patch_map((amap > 0).to(geometry.row.device), image, fill=False))
        mask = torch.cat(masks)  # [tokens], in the tower's order
        multiple = self.coefficient

        def add(act: torch.Tensor, hook: Any) -> torch.Tensor:
            flat_act = hook_name.flatten(act)
            flat = flat_act.reshape(-1, flat_act.shape[-1]).float()  # [tokens, d_in]
            delta = torch.zeros_like(flat)
            for image in range(geometry.n_images):
                span = geometry.image_positions(image)
                patches = geometry.is_patch[span].to(flat.device)
                norm = flat[span][patches].norm(dim=-1).mean()
                delta[span] = multiple * norm * per_image_direction[image].to(flat.device)
            delta = delta * mask.to(flat.device).unsqueeze(-1)
            return act + hook_name.unflatten(delta.reshape(flat_act.shape), act).to(act.dtype)

        return add


def _refuse_tower_subject(mined: Any, sae: Any) -> None:
    """The hybrid steers the tower the SAE reads inside the explainer VLM: refuse features of a
    vision-only tower (mined on one, or an SAE whose recorded family has no language model)."""
    from vis_steer_lens.families import NoLanguageModelError, UnsupportedModelError, get_adapter

    subject = getattr(mined, "model", None)
    families = [getattr(getattr(getattr(subject, "vision", subject), "cfg", None), "family", None)]
    families.append(sae.cfg.metadata.get("model_family") if sae is not None else None)
    for family in filter(None, families):
        try:
            has_language_model = get_adapter(family).has_language_model
        except UnsupportedModelError:  # a family no adapter is registered for: nothing known about it
            continue
        if not has_language_model:
            raise NoLanguageModelError(
                f"The hybrid (Steering-informed Top-k) steers the SAE's tower inside a vision-language model, "
                f"and this SAE reads a {family} tower, which has no language model. Use TopKExplainer with any "
                "HookedVLM as explainer_model, or an SAE trained on a VLM's tower."
            )
