"""Segmentation IoU: the paper's rules by hand, the union variant, the toy segmenter, tiny Grounding DINO → SAM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vis_steer_lens.evaluate.segmentation_iou import (
    FIRST,
    UNION,
    GroundingDinoSamSegmenter,
    SegmentationError,
    SegmentationIoUScorer,
    binarize_map,
    segmentation_iou,
    text_prompt,
)


def _cell_mask(row: int, col: int) -> np.ndarray:
    """A 64 x 64 mask of one 16-pixel cell."""
    mask = np.zeros((64, 64), dtype=bool)
    mask[row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] = True
    return mask


def test_hand_computed_case():
    # The map fires at patches (0, 0) and (0, 1) of a 4 x 4 grid: at 224 px, rows 0-55, cols 0-111.
    activation = torch.zeros(4, 4)
    activation[0, 0], activation[0, 1] = 2.0, 1.0
    # The mask is cell (0, 0) of a 64-px image: nearest resize 64 -> 224 keeps x < 55.5, 56 pixels.
    iou, precision, recall = segmentation_iou(activation, _cell_mask(0, 0))
    inter, union = 56 * 56, 56 * 112
    assert iou == pytest.approx(inter / union)  # 0.5
    assert precision == pytest.approx(1.0)
    assert recall == pytest.approx(inter / (56 * 112))


def test_eight_bit_rule_drops_tiny_activations():
    # 1 / 1000 of the maximum is 0.255 / 255 after normalising: truncated to 0, so outside the map.
    activation = torch.zeros(4, 4)
    activation[0, 0], activation[3, 3] = 1000.0, 1.0
    binary = binarize_map(activation)
    assert binary.sum() == 56 * 56 and binary[0, 0] and not binary[-1, -1]
    # A constant map is empty: IoU 0 against any mask, as in the authors' code.
    assert segmentation_iou(torch.ones(4, 4), _cell_mask(1, 1)) == (0.0, 0.0, 0.0)


def test_text_prompt_appends_one_period():
    assert text_prompt("cyan") == "cyan."
    assert text_prompt(" a red circle. ") == "a red circle."


class _FakeMined:
    """Two top images of feature 3; feature 3 fires at cell (0, 0) of both."""

    sae_id = "fake-sae"
    images = None

    def top_images(self, feature):
        activation = torch.zeros(4, 4)
        activation[0, 0] = 1.0
        return [(10, 2.0, activation), (11, 1.0, activation), (12, 0.0, activation)]

    def image(self, image_id):
        return Image.new("RGB", (64, 64))


class _TwoBoxes:
    """Finds "cyan" twice per image: first at cell (1, 1), then at cell (0, 0); nothing else."""

    name = "two-boxes"

    def __call__(self, images, text, *, source=None, image_ids=None):
        if text != "cyan.":
            return [[] for _ in images]
        return [[_cell_mask(1, 1), _cell_mask(0, 0)] for _ in images]


def test_scorer_first_box_union_variant_and_no_detection(tmp_path):
    rows = pd.DataFrame(
        {"feature": [3, 3, 3], "explanation": ["cyan", "red", ""], "method": ["steering", "topk", "hybrid"]}
    )
    first = SegmentationIoUScorer(_TwoBoxes(), _FakeMined(), variant=FIRST).score(rows, progress=False)
    union = SegmentationIoUScorer(_TwoBoxes(), _FakeMined(), variant=UNION).score(
        rows, progress=False, out_path=tmp_path / "s.jsonl"
    )
    # The first box misses the firing cell: IoU 0. The union covers it and one more cell: 1/2.
    assert first["segmentation_iou"].iloc[0] == 0.0
    assert union["segmentation_iou_union"].iloc[0] == pytest.approx(0.5)
    assert union["recall"].iloc[0] == pytest.approx(1.0)
    assert first["n_images"].iloc[0] == 2  # the zero-score slot is not a top image
    # No detection: an empty mask, IoU 0. An empty explanation is skipped (NaN), as the paper skips it.
    assert first["segmentation_iou"].iloc[1] == 0.0
    assert np.isnan(first["segmentation_iou"].iloc[2])

    # Resumed from the file: the same rows without calling the segmenter again.
    class Failing(_TwoBoxes):
        def __call__(self, *args, **kwargs):
            pytest.fail("the segmenter ran on a resumed row")

    again = SegmentationIoUScorer(Failing(), _FakeMined(), variant=UNION)
    resumed = again.score(rows, progress=False, out_path=tmp_path / "s.jsonl")
    assert resumed["segmentation_iou_union"].tolist()[:2] == union["segmentation_iou_union"].tolist()[:2]


def test_bad_variant_is_one_line():
    with pytest.raises(SegmentationError, match="variant must be"):
        SegmentationIoUScorer(_TwoBoxes(), _FakeMined(), variant="all")


def test_toy_segmenter_names_exact_pixels():
    from vis_steer_lens.plugins import SEGMENTERS
    from vis_steer_lens.toy import ToyImages
    from vis_steer_lens.toy.segmenter import named_masks
    from vis_steer_lens.toy.world import ObjectSpec, Scene

    red = ObjectSpec("circle", "red", "solid", "large", cell=0)
    cyan = ObjectSpec("square", "cyan", "striped", "small", cell=5)
    scene = Scene((red, cyan), background="white background")
    assert [m.sum() for m in named_masks(scene, "cyan.")] == [cyan.pixel_mask().sum()]
    assert np.array_equal(named_masks(scene, "a large red circle")[0], red.pixel_mask())
    assert len(named_masks(scene, "red, cyan")) == 2
    assert named_masks(scene, "large cyan") == []  # no object is both
    assert named_masks(scene, "blank") == []
    background = named_masks(scene, "white background")[0]
    assert background.sum() == 64 * 64 - red.pixel_mask().sum() - cyan.pixel_mask().sum()
    # Through the plug-in registry, on a toy image source by id.
    source = ToyImages(seed=1, n=4)
    segmenter = SEGMENTERS.get("toy")()
    scene0 = source.scene(0)
    color = scene0.objects[0].color
    masks = segmenter([source[0]], color, source=source, image_ids=[0])[0]
    assert masks and np.array_equal(masks[0], scene0.objects[0].pixel_mask())


def test_grounding_dino_then_sam_on_tiny_random_models(tmp_path):
    from tests.evaluate.tiny_models import tiny_grounding_dino, tiny_sam

    detector, detector_processor = tiny_grounding_dino(tmp_path)
    sam, sam_processor = tiny_sam()

    def segmenter(box_threshold):
        return GroundingDinoSamSegmenter(
            box_threshold=box_threshold,
            text_threshold=0.25,
            detector_model=detector,
            detector_processor=detector_processor,
            segmenter_model=sam,
            segmenter_processor=sam_processor,
        )

    image = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    keep_all = segmenter(0.0)
    boxes = keep_all.boxes(image, "large cyan circle.")
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0  # threshold 0 keeps boxes
    masks = keep_all([image], "large cyan circle.")[0]
    assert len(masks) == len(boxes) and masks[0].shape == (64, 64) and masks[0].dtype == bool
    # Nothing passes a threshold above 1: an empty mask list, scored as an empty mask.
    assert segmenter(1.01)([image], "large cyan circle.") == [[]]

    class Mined(_FakeMined):
        def image(self, image_id):
            return image

    scored = SegmentationIoUScorer(keep_all, Mined()).score(
        pd.DataFrame({"feature": [3], "explanation": ["large cyan circle"]}), progress=False
    )
    activation = Mined().top_images(3)[0][2]
    assert scored["segmentation_iou"].iloc[0] == pytest.approx(segmentation_iou(activation, masks[0])[0])
    with pytest.raises(SegmentationError, match="PIL images"):
        keep_all([np.zeros((64, 64, 3))], "cyan.")
