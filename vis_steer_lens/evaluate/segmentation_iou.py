"""Segmentation IoU: does the explanation, found in a feature's top images, cover where the feature fires?

The paper's third measure (Ferrando et al., CVPR 2026; the authors' ``evaluation/baseline_simulator.py``
and ``evaluation/utils.py`` of HPAI-BSC/vision-interp), rule for rule:

1. The text prompt is the explanation (its first completion) with a ``"."`` appended when it has none.
   An empty explanation is skipped (its score is NaN, as the authors' code skips it).
2. Grounding DINO finds the prompt in each top image (box threshold 0.3, text threshold 0.25);
   SAM segments the **first** surviving box, in the detector's own order; no box gives an empty mask.
3. The feature's activation map on that image is min–max normalised (``(a - min) / (max - min +
   1e-8)``), cast to 8 bits (``* 255``, truncated), resized to 224 x 224 pixels with nearest
   neighbour and binarised at ``> 0``; the mask is resized the same way (nearest neighbour) and
   binarised at ``> 0``. (The issue's text says the mask is min–max normalised too; the authors'
   code leaves it as it is, which differs only for a mask that covers the whole image; the code is
   followed here.)
4. IoU, precision ``|map ∩ mask| / |mask|`` and recall ``|map ∩ mask| / |map|`` per (feature,
   image), each 0 when its denominator is; a feature's score is the mean over its images.

:data:`UNION` is the named variant that segments every surviving box and takes the union of the
masks (the rule of EvolvingLMMs-Lab/multimodal-sae), scored as ``segmentation_iou_union``.

A segmenter is any callable ``(images, text, *, source, image_ids) -> masks``: per image, a list of
boolean ``[H, W]`` masks, one per detection, in the detector's order. :class:`GroundingDinoSamSegmenter`
is the paper's; a world that knows its objects plugs in its own through
:data:`vis_steer_lens.plugins.SEGMENTERS` (the toy world's returns the exact pixels of the objects
an explanation names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image

from vis_steer_lens.evaluate.scoring import rows_frame, score_rows

#: The paper's resolution of the comparison.
IMAGE_SIZE = 224
#: The paper's rule: the mask of the first surviving box.
FIRST = "first"
#: The named variant: the union of the masks of every surviving box.
UNION = "union"
#: Defaults of the paper's detector and segmenter (hub ids).
PAPER_DETECTOR = "IDEA-Research/grounding-dino-base"
PAPER_SEGMENTER = "facebook/sam2.1-hiera-large"


class SegmentationError(ValueError):
    """A segmentation input of the wrong kind or shape; the message says what was expected."""


class Segmenter(Protocol):
    """Finds a text in images: per image, boolean ``[H, W]`` masks, one per detection, best first."""

    name: str

    def __call__(
        self, images: Sequence[Any], text: str, *, source: Any = None, image_ids: Sequence[int] | None = None
    ) -> list[list[np.ndarray]]: ...


def text_prompt(explanation: str) -> str:
    """The detector's prompt: the explanation with a ``"."`` appended when it does not end in one."""
    text = str(explanation).strip()
    return text if text.endswith(".") else text + "."


def binarize_map(activation_map: Any, size: int = IMAGE_SIZE) -> np.ndarray:
    """The paper's binary activation map: min–max normalised, 8-bit, nearest-resized, ``> 0``.

    Args:
        activation_map: ``[rows, cols]`` per-patch activations of one feature on one image.
        size: Side of the square output, pixels.

    Returns:
        ``[size, size]`` booleans.
    """
    heat = np.asarray(
        activation_map.float() if torch.is_tensor(activation_map) else activation_map, np.float64
    )
    if heat.ndim != 2:
        raise SegmentationError(
            f"An activation map must be [rows, cols]; got shape {heat.shape}. Pass one image's map."
        )
    heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-8)
    image = Image.fromarray((heat * 255).astype(np.uint8)).resize((size, size), Image.NEAREST)
    return np.asarray(image) > 0


def binarize_mask(mask: Any, size: int = IMAGE_SIZE) -> np.ndarray:
    """A segmentation mask as the paper compares it: 8-bit, nearest-resized to ``size``, ``> 0``.

    Args:
        mask: ``[H, W]`` booleans or numbers.
        size: Side of the square output, pixels.

    Returns:
        ``[size, size]`` booleans.
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise SegmentationError(f"A mask must be [H, W]; got shape {array.shape}. Pass one mask per image.")
    array = (array > 0).astype(np.uint8)
    if array.shape != (size, size):
        array = np.asarray(Image.fromarray(array).resize((size, size), Image.NEAREST))
    return array > 0


def iou_precision_recall(heatmap: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """IoU, precision and recall of a mask against a binary activation map (the authors' ``calculate_iou``).

    Args:
        heatmap: ``[H, W]`` booleans, where the feature fires (the reference).
        mask: ``[H, W]`` booleans, where the explanation was found (the prediction).

    Returns:
        ``(iou, precision, recall)``: ``|h ∩ m| / |h ∪ m|``, ``|h ∩ m| / |m|``, ``|h ∩ m| / |h|``,
        each 0.0 when its denominator is 0.
    """
    h, m = np.asarray(heatmap) > 0, np.asarray(mask) > 0
    inter = float(np.logical_and(h, m).sum())
    union = float(np.logical_or(h, m).sum())
    iou = inter / union if union else 0.0
    precision = inter / float(m.sum()) if m.sum() else 0.0
    recall = inter / float(h.sum()) if h.sum() else 0.0
    return iou, precision, recall


def segmentation_iou(activation_map: Any, mask: Any, size: int = IMAGE_SIZE) -> tuple[float, float, float]:
    """``(iou, precision, recall)`` of one (feature, image) pair under the paper's rules.

    Args:
        activation_map: ``[rows, cols]`` per-patch activations of the feature on the image.
        mask: ``[H, W]`` mask of the explanation in the image (all false when nothing was found).
        size: Resolution of the comparison (paper: 224).
    """
    return iou_precision_recall(binarize_map(activation_map, size), binarize_mask(mask, size))


def combine_masks(masks: Sequence[np.ndarray], shape: tuple[int, int], variant: str = FIRST) -> np.ndarray:
    """One mask from an image's detections: the first (the paper's rule) or the union of all.

    Args:
        masks: Boolean ``[H, W]`` masks, in the detector's order.
        shape: ``(H, W)`` of the empty mask returned when there is no detection.
        variant: :data:`FIRST` or :data:`UNION`.
    """
    if variant not in (FIRST, UNION):
        raise SegmentationError(f"variant must be {FIRST!r} or {UNION!r}; got {variant!r}.")
    if not len(masks):
        return np.zeros(shape, dtype=bool)
    if variant == FIRST:
        return np.asarray(masks[0]) > 0
    return np.logical_or.reduce([np.asarray(m) > 0 for m in masks])


@dataclass(frozen=True)
class SegmentationSettings:
    """Settings of :class:`SegmentationIoUScorer`.

    Attributes:
        variant: :data:`FIRST` (the paper's) or :data:`UNION` (every box's mask).
        image_size: Resolution of the comparison, pixels (paper: 224).
        k_images: Top images per feature (at most those mined; paper: 5).
    """

    variant: str = FIRST
    image_size: int = IMAGE_SIZE
    k_images: int = 5


class SegmentationIoUScorer:
    """Score explanations by the IoU of their segmentation in a feature's top images with its activation map.

    Args:
        segmenter: A :class:`Segmenter` (``GroundingDinoSamSegmenter()``, or a plug-in's such as
            ``plugins.SEGMENTERS.get("toy")()``).
        mined: The feature's top images and activation maps
            (:class:`~vis_steer_lens.MinedActivations`).
        variant: :data:`FIRST` (the paper's rule) or :data:`UNION` (the named variant).
        image_size: Resolution of the comparison (paper: 224).
        k_images: Top images used per feature (paper: 5; at most the mined ``k``).

    The score column is named after the scorer: ``segmentation_iou`` (``segmentation_iou_union``
    for the variant), beside ``precision`` and ``recall`` and the per-image lists.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        mined: Any,
        *,
        variant: str = FIRST,
        image_size: int = IMAGE_SIZE,
        k_images: int = 5,
    ) -> None:
        if variant not in (FIRST, UNION):
            raise SegmentationError(
                f"variant must be {FIRST!r} (the paper's) or {UNION!r}; got {variant!r}. Pick one of them."
            )
        if image_size < 1 or k_images < 1:
            raise SegmentationError(
                f"image_size and k_images must be positive; got {image_size} and {k_images}."
            )
        self.segmenter = segmenter
        self.mined = mined
        self.settings = SegmentationSettings(variant=variant, image_size=image_size, k_images=k_images)

    @property
    def name(self) -> str:
        """``segmentation_iou`` for the paper's rule, ``segmentation_iou_union`` for the variant."""
        return "segmentation_iou" if self.settings.variant == FIRST else "segmentation_iou_union"

    def _settings(self) -> dict[str, Any]:
        return {
            "scorer": self.name,
            "segmenter": str(getattr(self.segmenter, "name", type(self.segmenter).__name__)),
            "variant": self.settings.variant,
            "image_size": self.settings.image_size,
            "k_images": self.settings.k_images,
        }

    def score_feature(self, feature: int, explanation: str) -> dict[str, Any]:
        """IoU, precision and recall of one explanation on its feature's top images (means and lists)."""
        tops = [t for t in self.mined.top_images(int(feature)) if t[1] > 0][: self.settings.k_images]
        empty = {self.name: float("nan"), "precision": float("nan"), "recall": float("nan")}
        if not isinstance(explanation, str) or not explanation.strip() or not tops:
            return {**empty, "image_ids": [], "ious": [], "precisions": [], "recalls": [], "n_images": 0}
        ids = [int(t[0]) for t in tops]
        images = [self.mined.image(i) for i in ids]
        found = self.segmenter(images, text_prompt(explanation), source=self.mined.images, image_ids=ids)
        if len(found) != len(images):
            raise SegmentationError(
                f"The segmenter returned masks for {len(found)} images; expected {len(images)} (one list per image)."
            )
        ious, precisions, recalls = [], [], []
        for image, masks, (_, _, activation_map) in zip(images, found, tops, strict=True):
            shape = (
                (image.height, image.width)
                if hasattr(image, "height")
                else tuple(np.asarray(image).shape[:2])
            )
            mask = combine_masks(masks, shape, self.settings.variant)
            iou, precision, recall = segmentation_iou(activation_map, mask, self.settings.image_size)
            ious.append(iou)
            precisions.append(precision)
            recalls.append(recall)
        return {
            self.name: float(np.mean(ious)),
            "precision": float(np.mean(precisions)),
            "recall": float(np.mean(recalls)),
            "image_ids": ids,
            "ious": ious,
            "precisions": precisions,
            "recalls": recalls,
            "n_images": len(ids),
        }

    def score(
        self,
        explanations: pd.DataFrame,
        progress: bool = True,
        out_path: str | Path | None = None,
        desc: str | None = None,
    ) -> pd.DataFrame:
        """Score every explanation row (rows of dead features are left out).

        Args:
            explanations: ``feature``, ``explanation`` and usually ``sae_id``, ``method``, ``direction``.
            progress: Show a progress bar.
            out_path: A ``.jsonl`` file to append to and resume from.
            desc: The progress bar's label.

        Returns:
            One row per explanation: the key columns, ``method_label``, ``is_control``,
            ``explanation``, the score column (:attr:`name`), ``precision``, ``recall``,
            ``n_images`` and the per-image ``image_ids``, ``ious``, ``precisions``, ``recalls``.
        """

        def chunk(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**row, **self.score_feature(row["feature"], row["explanation"])} for row in rows]

        rows = score_rows(
            explanations,
            chunk,
            settings=self._settings(),
            sae_id=str(self.mined.sae_id) if self.mined is not None else "",
            chunk_size=8,
            out_path=out_path,
            progress=progress,
            desc=desc or self.name,
        )
        columns = [self.name, "precision", "recall", "n_images", "image_ids", "ious", "precisions", "recalls"]
        return rows_frame(rows, columns)


class GroundingDinoSamSegmenter:
    """The paper's segmenter: Grounding DINO boxes the text, SAM (or SAM 2) segments each box.

    Through transformers' own classes, chosen by hub id: ``GroundingDinoForObjectDetection`` for
    the detector; ``Sam2Model`` for a SAM 2 id (``"sam2"`` in it, the default
    ``facebook/sam2.1-hiera-large``), else ``SamModel``. Models and processors built in code (tiny
    random configs in tests) may be passed instead of ids.

    Args:
        detector: Hub id or folder of a Grounding DINO checkpoint.
        segmenter: Hub id or folder of a SAM or SAM 2 checkpoint.
        box_threshold: Keeps boxes whose best token score exceeds it (paper: 0.3).
        text_threshold: Keeps the tokens of a box's label above it (paper: 0.25).
        device: Where the models run.
        detector_model, detector_processor, segmenter_model, segmenter_processor: Loaded objects
            that replace the ids.
    """

    name = "grounding-dino+sam"

    def __init__(
        self,
        detector: str = PAPER_DETECTOR,
        segmenter: str = PAPER_SEGMENTER,
        *,
        box_threshold: float = 0.3,
        text_threshold: float = 0.25,
        device: str | torch.device = "cpu",
        detector_model: Any = None,
        detector_processor: Any = None,
        segmenter_model: Any = None,
        segmenter_processor: Any = None,
    ) -> None:
        import transformers

        self.device = torch.device(device)
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        if detector_model is None or detector_processor is None:
            detector_model = transformers.GroundingDinoForObjectDetection.from_pretrained(detector)
            detector_processor = transformers.AutoProcessor.from_pretrained(detector)
        if segmenter_model is None or segmenter_processor is None:
            sam2 = "sam2" in str(segmenter).lower()
            model_class = transformers.Sam2Model if sam2 else transformers.SamModel
            processor_class = transformers.Sam2Processor if sam2 else transformers.SamProcessor
            segmenter_model = model_class.from_pretrained(segmenter)
            segmenter_processor = processor_class.from_pretrained(segmenter)
        self.detector = detector_model.to(self.device).eval()
        self.detector_processor = detector_processor
        self.segmenter = segmenter_model.to(self.device).eval()
        self.segmenter_processor = segmenter_processor
        self.is_sam2 = "sam2" in type(self.segmenter).__name__.lower()
        self.name = f"{self.name}:{getattr(self.detector.config, '_name_or_path', '') or detector}" + (
            f"+{getattr(self.segmenter.config, '_name_or_path', '') or segmenter}"
        )

    @torch.no_grad()
    def boxes(self, image: Image.Image, text: str) -> torch.Tensor:
        """Surviving boxes ``[n, 4]`` (x0, y0, x1, y1 in pixels), in the detector's order."""
        inputs = self.detector_processor(images=image, text=text, return_tensors="pt").to(self.device)
        outputs = self.detector(**inputs)
        result = self.detector_processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[(image.height, image.width)],
        )[0]
        return result["boxes"].float().cpu()

    @torch.no_grad()
    def segment(self, image: Image.Image, boxes: torch.Tensor) -> list[np.ndarray]:
        """One boolean ``[H, W]`` mask per box (single-mask output, as LangSAM asks SAM for)."""
        if len(boxes) == 0:
            return []
        inputs = self.segmenter_processor(
            images=image, input_boxes=[[[float(v) for v in box] for box in boxes]], return_tensors="pt"
        ).to(self.device)
        outputs = self.segmenter(**inputs, multimask_output=False)
        if self.is_sam2:
            masks = self.segmenter_processor.post_process_masks(
                outputs.pred_masks.cpu(), inputs["original_sizes"].cpu()
            )
        else:
            masks = self.segmenter_processor.post_process_masks(
                outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
            )
        per_box = masks[0]  # [boxes, 1, H, W]
        return [np.asarray(per_box[i, 0] > 0) for i in range(per_box.shape[0])]

    def __call__(
        self, images: Sequence[Any], text: str, *, source: Any = None, image_ids: Sequence[int] | None = None
    ) -> list[list[np.ndarray]]:
        out = []
        for image in images:
            if not isinstance(image, Image.Image):
                raise SegmentationError(
                    f"GroundingDinoSamSegmenter takes PIL images; got {type(image).__name__}. Convert it first."
                )
            image = image.convert("RGB")
            out.append(self.segment(image, self.boxes(image, text)))
        return out


__all__ = [
    "FIRST",
    "IMAGE_SIZE",
    "PAPER_DETECTOR",
    "PAPER_SEGMENTER",
    "UNION",
    "GroundingDinoSamSegmenter",
    "SegmentationError",
    "SegmentationIoUScorer",
    "SegmentationSettings",
    "Segmenter",
    "binarize_map",
    "binarize_mask",
    "combine_masks",
    "iou_precision_recall",
    "segmentation_iou",
    "text_prompt",
]
