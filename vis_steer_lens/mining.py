"""Streaming top-k activation mining: the top images of every SAE feature, in bounded memory.

One pass over an image collection keeps, per feature, the ``k`` best images (by the mean or max of the
feature's activation over patches) with their per-patch activation maps, plus running statistics
(firing frequencies, max/mean activation, an activation histogram). Memory is
``features × k × patches``, independent of the number of images. Long runs checkpoint atomically and
resume to a result identical to an uninterrupted run.

Histogram design: each feature has ``hist_bins`` linear bins over ``[0, R_f)`` counting its *nonzero*
(``> 0``) patch activations, where ``R_f`` is the smallest power of two strictly above the largest
activation seen so far. When a larger activation arrives, ``R_f`` doubles (possibly several times) and
adjacent bins are merged in pairs, which is exact: because ``R_f`` is a power of two, a value's bin at
``2R`` is exactly ``floor(bin at R / 2)`` in floating point too. So the final counts equal those of a
single pass with the final range, whatever the batching, the bins are data-driven (at least half of the
range is below the max), and no first pass or guessed scale is needed. Bin edges of feature ``f`` are
``linspace(0, R_f, hist_bins + 1)`` (``hist_range`` in ``top.safetensors``); a feature that never fired
has ``R_f = 0`` and no counts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image
from safetensors.torch import save_file
from tqdm.auto import tqdm

from vis_steer_lens.activations import (
    hook_activations,
    image_patch_activations,
    image_processor_of,
    needs_image_processor,
    patch_tokens,
    to_pixel_values,
    vision_model,
)
from vis_steer_lens.atomic import FileWriteError, atomic_path, damaged, load_safetensors, safetensors_metadata
from vis_steer_lens.distributed import World, barrier, contiguous_shard, current_world, gather_objects
from vis_steer_lens.image_sources import (
    IMAGE_DECODE_ERRORS,
    FolderImages,
    ImageSource,
    NoReadableImageError,
    UnreadableImageError,
    as_image_source,
    open_image_source,
    to_rgb,
)
from vis_steer_lens.memory import auto_batch_size, check_batch_size, mining_bytes_per_image
from vis_steer_lens.saes.metadata import sae_identity
from vis_steer_lens.saes.validation import check_feature_ids, check_sae_fits
from vis_steer_lens.store import ResumeMismatchError, description_mismatches

FORMAT_VERSION = 1
TOP_FILE = "top.safetensors"
FEATURES_FILE = "features.parquet"
META_FILE = "mining.json"
#: Under a launcher, each rank's part of the run: ``<out_dir>/shards/rank-00000`` ...
SHARDS_DIR = "shards"
#: A folder source's listing when mined (relative name, size, mtime_ns per file): resuming after
#: files were deleted keeps every image's id, and reopening finds the images mined.
LISTING_FILE = "image_listing.parquet"
RANK_BY = ("max", "mean")
#: Unreadable images logged one by one; the rest are counted (all are in ``meta["skipped_images"]``).
_SKIPS_LOGGED = 10
#: What to do about a damaged mining file.
_DAMAGED_FIX = "delete the folder's files (or pass another --out) and run mine again"

logger = logging.getLogger(__name__)

#: Largest block of dense SAE codes (numbers) held at once while mining: 32 MiB in float32 (at
#: least one image: 128 MiB for an 8192-feature SAE over 4096 patches).
CODE_BLOCK_ELEMENTS = 1 << 23
#: Tokens x features encoded by the SAE at once (32 MiB of pre-activations in float32).
ENCODE_CHUNK_ELEMENTS = 1 << 23
#: Largest block of top-k maps (numbers) updated at once: bounds mining's temporaries (16 MiB in float32).
MAP_BLOCK_ELEMENTS = 1 << 22

# Settings that must match for a checkpoint to be continued: anything that changes which images are
# kept or what the statistics mean.
_RESUME_KEYS = (
    "sae_id",
    "hook_name",
    "d_sae",
    "model_name",
    "source_id",
    "n_images",
    "k",
    "rank_by",
    "features",
    "hist_bins",
    "n_patches",
    "image_range",
)
_STATE_TENSORS = (
    "feature_ids",
    "top_scores",
    "top_image_ids",
    "top_maps",
    "fire_images",
    "fire_patches",
    "act_sum",
    "max_act",
    "hist_counts",
    "hist_range",
    "top_grids",
    "tokens_seen",
)


@dataclass(eq=False)
class MinedActivations:
    """Top images per feature and running statistics of one mining pass.

    Row ``r`` of every tensor belongs to SAE feature ``feature_ids[r]`` (all features, or the subset
    that was mined); index tensors by SAE feature id through the methods.

    Attributes:
        feature_ids: ``[F]`` int64, the SAE feature of each row.
        top_scores: ``[F, k]`` float32, best scores first (ties: lower image id first); ``-inf`` in
            slots never filled (fewer than ``k`` images).
        top_image_ids: ``[F, k]`` int64 indices into the image source; ``-1`` in unfilled slots.
        top_maps: ``[F, k, patches]`` float32 per-patch activations of the kept images, each in
            row-major order over its own grid (``top_grids``), zero-padded to ``patches``.
        fire_images: ``[F]`` int64, images where the feature is ``> 0`` on at least one patch.
        fire_patches: ``[F]`` int64, patch tokens where the feature is ``> 0``.
        act_sum: ``[F]`` float64, sum of the feature over all patch tokens.
        max_act: ``[F]`` float32, largest activation seen (0 if never positive).
        hist_counts: ``[F, hist_bins]`` int64 counts of nonzero patch activations.
        hist_range: ``[F]`` float32 upper edge ``R_f`` of each feature's histogram.
        top_grids: ``[F, k, 2]`` int64 patch grid (rows, columns) of each kept image (native-resolution
            towers mine images of several sizes and aspect ratios; fixed grids are all the same).
        tokens_seen: ``[1]`` int64 patch tokens of all images read (the denominator of frequencies).
        meta: Settings and provenance (``mining.json``); ``meta["skipped_images"]`` lists the
            images that could not be read (``{"index", "name", "reason"}``), which keep their
            index but contribute nothing.
        images_processed: Images of the source gone through so far, read or skipped (the next
            index to mine); :attr:`images_mined` of them were read.
        images: The image source (reopened from ``meta["image_source"]`` on first use if absent).
        model: The model mined with, when mined in this process (``None`` after :meth:`load`).
    """

    feature_ids: torch.Tensor
    top_scores: torch.Tensor
    top_image_ids: torch.Tensor
    top_maps: torch.Tensor
    fire_images: torch.Tensor
    fire_patches: torch.Tensor
    act_sum: torch.Tensor
    max_act: torch.Tensor
    hist_counts: torch.Tensor
    hist_range: torch.Tensor
    top_grids: torch.Tensor
    tokens_seen: torch.Tensor
    meta: dict[str, Any]
    images_processed: int = 0
    images: ImageSource | None = field(default=None, repr=False)
    model: Any = field(default=None, repr=False)

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def empty(cls, feature_ids: list[int], k: int, n_patches: int, hist_bins: int, meta: dict[str, Any]):
        """Initial state before any image: nothing kept, all statistics zero."""
        n_features = len(feature_ids)
        return cls(
            feature_ids=torch.tensor(feature_ids, dtype=torch.int64),
            top_scores=torch.full((n_features, k), -math.inf),
            top_image_ids=torch.full((n_features, k), -1, dtype=torch.int64),
            top_maps=torch.zeros(n_features, k, n_patches),
            fire_images=torch.zeros(n_features, dtype=torch.int64),
            fire_patches=torch.zeros(n_features, dtype=torch.int64),
            act_sum=torch.zeros(n_features, dtype=torch.float64),
            max_act=torch.zeros(n_features),
            hist_counts=torch.zeros(n_features, hist_bins, dtype=torch.int64),
            hist_range=torch.zeros(n_features),
            top_grids=torch.zeros(n_features, k, 2, dtype=torch.int64),
            tokens_seen=torch.zeros(1, dtype=torch.int64),
            meta=meta,
        )

    # -- simple accessors ---------------------------------------------------------------------------

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def rank_by(self) -> str:
        return self.meta["rank_by"]

    @property
    def grid_size(self) -> int:
        return int(self.meta["grid_size"])

    @property
    def n_patches(self) -> int:
        return int(self.meta["n_patches"])

    @property
    def patch_size(self) -> int:
        """Side of one patch in the model's input pixels."""
        return int(self.meta["patch_size"])

    @property
    def sae_id(self) -> str:
        return self.meta["sae_id"]

    @property
    def d_sae(self) -> int:
        return int(self.meta["d_sae"])

    @property
    def hook_name(self) -> str:
        return self.meta["hook_name"]

    @property
    def source_id(self) -> str:
        return self.meta["source_id"]

    @property
    def hist_bins(self) -> int:
        return int(self.meta["hist_bins"])

    @property
    def skipped_images(self) -> list[dict[str, Any]]:
        """The images that could not be read, ``{"index", "name", "reason"}`` each, by index."""
        return self.meta.get("skipped_images", [])

    @property
    def image_range(self) -> tuple[int, int]:
        """The block of image ids this state covers: all of them, or one rank's shard."""
        block = self.meta.get("image_range")
        return (0, int(self.meta["n_images"])) if block is None else (int(block[0]), int(block[1]))

    @property
    def images_mined(self) -> int:
        """Images read and folded in: the denominator of every frequency in :attr:`stats`."""
        return self.images_processed - self.image_range[0] - len(self.skipped_images)

    @property
    def complete(self) -> bool:
        """Whether every image of the source (of the shard, for one rank's part) has been processed."""
        return self.images_processed >= self.image_range[1]

    @classmethod
    def merge(cls, parts: list[MinedActivations]) -> MinedActivations:
        """One state from the finished shards of a launched run, equal to one process's pass.

        ``parts`` cover consecutive blocks of image ids in order (as
        :func:`vis_steer_lens.distributed.contiguous_shard` cuts them). Counts, maxima and
        histograms merge exactly (histogram ranges are powers of two, see the module doc); the
        top-k lists are merged by (score desc, image id asc), the order one pass keeps, so the kept
        images, scores and maps are identical; the float64 sums differ only in summation order.

        Raises:
            ValueError: If the parts are from different settings, unfinished, or leave a gap.
        """
        if not parts:
            raise ValueError("Nothing to merge: give the shards' mined states.")
        first = parts[0]
        position = 0
        for part in parts:
            # Native-resolution maps are as wide as the largest image each shard saw.
            ignore = ("image_range", "n_patches") if first.meta.get("packed") else ("image_range",)
            differences = _mismatches(part.meta, first.meta, ignore=ignore)
            if differences:
                raise ValueError(f"Shards from different runs cannot be merged ({'; '.join(differences)}).")
            start, stop = part.image_range
            if start != position or not part.complete:
                raise ValueError(
                    f"The shards must be finished and cover consecutive image ids: expected one starting at "
                    f"{position}, got images {start}..{stop} ({part.images_processed - start} processed)."
                )
            position = stop
        if position != int(first.meta["n_images"]):
            raise ValueError(f"The shards cover images 0..{position} of {first.meta['n_images']}.")
        meta = {key: value for key, value in first.meta.items() if key != "image_range"}
        meta["skipped_images"] = [item for part in parts for item in part.skipped_images]
        width = max(part.n_patches for part in parts)
        meta["n_patches"] = width
        merged = cls.empty(first.feature_ids.tolist(), first.k, width, first.hist_bins, meta)
        merged.images_processed = position
        k = first.k
        for part in parts:
            candidates = torch.cat([merged.top_scores, part.top_scores], dim=1)  # [F, 2k]
            # Kept entries precede the part's (lower ids), so a stable sort breaks ties by lower id.
            order = torch.sort(candidates, dim=1, descending=True, stable=True).indices[:, :k]
            merged.top_scores = candidates.gather(1, order)
            merged.top_image_ids = torch.cat([merged.top_image_ids, part.top_image_ids], dim=1).gather(
                1, order
            )
            part_maps = torch.nn.functional.pad(part.top_maps, (0, width - part.n_patches))
            maps = torch.cat([merged.top_maps, part_maps], dim=1)
            merged.top_maps = maps.gather(1, order.unsqueeze(-1).expand(-1, -1, width))
            grids = torch.cat([merged.top_grids, part.top_grids], dim=1)
            merged.top_grids = grids.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
            merged.tokens_seen += part.tokens_seen
            merged.fire_images += part.fire_images
            merged.fire_patches += part.fire_patches
            merged.act_sum += part.act_sum
            merged.max_act = torch.maximum(merged.max_act, part.max_act)
            new_range = torch.maximum(merged.hist_range, part.hist_range)
            merged.hist_counts = _rebin(merged.hist_counts, merged.hist_range, new_range) + _rebin(
                part.hist_counts, part.hist_range, new_range
            )
            merged.hist_range = new_range
        return merged

    def _row(self, feature: int) -> int:
        feature = int(feature)
        rows = (self.feature_ids == feature).nonzero()
        if len(rows) == 0:
            check_feature_ids(self.d_sae, [feature])
            raise KeyError(f"Feature {feature} was not mined (mined {len(self.feature_ids)} features).")
        return int(rows[0, 0])

    # -- results ------------------------------------------------------------------------------------

    def top_images(self, feature: int) -> list[tuple[int, float, torch.Tensor]]:
        """The kept images of one feature, best first.

        Returns:
            ``(image_id, score, activation_map)`` tuples, ``activation_map`` a ``[rows, cols]`` tensor
            of the feature's per-patch activations on that image, at the image's own grid. Entries may have score 0 when the
            feature fired on fewer than ``k`` images (filter on ``score > 0`` to show only firing ones).
        """
        row = self._row(feature)
        out = []
        for slot in range(self.k):
            image_id = int(self.top_image_ids[row, slot])
            if image_id < 0:
                continue
            h, w = (int(v) for v in self.top_grids[row, slot])
            activation_map = self.top_maps[row, slot, : h * w].reshape(h, w).clone()
            out.append((image_id, float(self.top_scores[row, slot]), activation_map))
        return out

    def image(self, image_id: int) -> Any:
        """Image ``image_id`` of the mined collection, reopened from its description if needed."""
        if self.images is None:
            source = open_image_source(self.meta["image_source"])
            mined_dir = getattr(self, "_mined_dir", None)
            if source.source_id != self.source_id and mined_dir is not None:
                source = _folder_as_mined(source, mined_dir, self.source_id) or source
            if source.source_id != self.source_id:
                raise ValueError(
                    f"The reopened image source is {source.source_id!r}, but the mining ran on "
                    f"{self.source_id!r}; pass the original images with MinedActivations.load(dir, images=...)."
                )
            self.images = source
        return self.images[int(image_id)]

    def histogram(self, feature: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Histogram of one feature's nonzero patch activations.

        Returns:
            ``(edges [hist_bins + 1], counts [hist_bins])``; bar centres for a Neuronpedia
            ``freq_hist`` are ``(edges[:-1] + edges[1:]) / 2``.
        """
        row = self._row(feature)
        edges = torch.linspace(0.0, float(self.hist_range[row]), self.hist_bins + 1)
        return edges, self.hist_counts[row].clone()

    @property
    def stats(self) -> pd.DataFrame:
        """One row per mined feature: frequencies, activation summary and top image ids.

        Frequencies and means are over the images read (:attr:`images_mined`, ``n_images_seen``),
        not counting unreadable images that were skipped.
        """
        n_images = max(self.images_mined, 1)
        n_tokens = max(int(self.tokens_seen.sum()), 1)
        fire_patches = self.fire_patches.double()
        return pd.DataFrame(
            {
                "feature": self.feature_ids.tolist(),
                "n_images_seen": [self.images_mined] * len(self.feature_ids),
                "frac_images": (self.fire_images.double() / n_images).tolist(),
                "frac_nonzero": (fire_patches / n_tokens).tolist(),
                "max_act": self.max_act.double().tolist(),
                "mean_act": (self.act_sum / n_tokens).tolist(),
                "mean_nonzero_act": (self.act_sum / fire_patches.clamp(min=1)).tolist(),
                "top_image_ids": [[i for i in row if i >= 0] for row in self.top_image_ids.tolist()],
                "top_scores": [
                    [s for s, i in zip(scores, ids, strict=True) if i >= 0]
                    for scores, ids in zip(self.top_scores.tolist(), self.top_image_ids.tolist(), strict=True)
                ],
            }
        )

    def live_features(self, min_frac: float = 0.0) -> list[int]:
        """Features that fired (``> 0`` on some patch) on at least one image and on at least
        ``min_frac`` of the images."""
        frac = self.fire_images.double() / max(self.images_mined, 1)
        live = (self.fire_images > 0) & (frac >= min_frac)
        return self.feature_ids[live].tolist()

    # -- streaming update ---------------------------------------------------------------------------

    def update(
        self, feature_acts: torch.Tensor, first_image_id: int, grids: torch.Tensor | None = None
    ) -> None:
        """Fold one batch into the running top-k and statistics.

        Memory beyond the state is a few ``[F, k, patches]``-sized blocks of at most
        :data:`MAP_BLOCK_ELEMENTS` numbers and the batch's nonzero activations: the statistics are
        computed from the nonzeros (a TopK SAE has ``k`` per token), never from a dense float64 or
        bool copy of the ``[batch, patches, F]`` activations.

        Args:
            feature_acts: ``[batch, patches, F]`` activations of the mined features (row order of
                ``feature_ids``) on images ``first_image_id .. first_image_id + batch - 1``.
            first_image_id: Index of the batch's first image in the source.
            grids: ``[batch, 2]`` each image's patch grid where images differ in size (their
                activations row-major over their own grid, zero-padded to the batch's largest);
                the stored maps widen to the largest image seen, so their memory follows the images
                mined, not the processor's bound. ``None``: every image the square grid of
                ``grid_size``.
        """
        # The state lives on the device it was moved to (mining moves it to the SAE's device, so a GPU
        # run never ships [batch, patches, d_sae] activations to the CPU).
        acts = feature_acts.detach().to(device=self.top_scores.device, dtype=torch.float32)
        batch, n_patches, n_features = acts.shape
        if grids is not None and n_features == len(self.feature_ids):
            # Images of their own sizes: the maps are as wide as the largest image kept so far.
            if n_patches > self.n_patches:
                self._widen(n_patches)
            elif n_patches < self.n_patches:
                acts = torch.nn.functional.pad(acts, (0, 0, 0, self.n_patches - n_patches))
            n_patches = self.n_patches
        if n_patches != self.n_patches or n_features != len(self.feature_ids):
            raise ValueError(
                f"Expected activations [batch, {self.n_patches}, {len(self.feature_ids)}], got {tuple(acts.shape)}."
            )
        if grids is None:
            grids = torch.tensor([[self.grid_size, self.grid_size]], dtype=torch.int64).expand(batch, 2)
        grids = grids.to(device=self.top_grids.device, dtype=torch.int64)
        self._update_top(acts, first_image_id, grids)
        self.tokens_seen += int(grids.prod(dim=1).sum())
        # SAE codes are >= 0 (ReLU, TopK, JumpReLU), so their nonzeros are the firing entries: [nnz] each.
        images, patches, features = acts.nonzero(as_tuple=True)
        values = acts[images, patches, features]
        self.fire_patches += torch.bincount(features, minlength=n_features)
        image_feature = torch.unique(images * n_features + features)  # (image, feature) pairs that fired
        self.fire_images += torch.bincount(image_feature % n_features, minlength=n_features)
        self.act_sum += torch.zeros_like(self.act_sum).index_add_(0, features, values.double())
        batch_max = acts.amax(dim=(0, 1))
        self.max_act = torch.maximum(self.max_act, batch_max)
        self._update_histogram_codes(features, values, batch_max)
        self.images_processed = first_image_id + batch

    def _widen(self, width: int) -> None:
        """Zero-pad the kept maps to ``width`` patches (a larger image than any kept so far)."""
        self.top_maps = torch.nn.functional.pad(self.top_maps, (0, width - self.n_patches))
        self.meta["n_patches"] = int(width)

    def _update_top(self, acts: torch.Tensor, first_image_id: int, grids: torch.Tensor) -> None:
        k = self.k
        if self.rank_by == "max":
            scores = acts.amax(dim=1)  # [batch, F]
        else:
            counts = grids.prod(dim=1)
            same_size = bool((counts == acts.shape[1]).all())
            # Over each image's own patches (the padding of smaller images left out).
            scores = acts.mean(dim=1) if same_size else acts.sum(dim=1) / counts[:, None].to(acts.dtype)
        candidates = torch.cat([self.top_scores, scores.T], dim=1)  # [F, k + batch]
        # Kept entries are sorted (score desc, id asc) and all precede the batch's ids, and the batch
        # is in id order, so a *stable* descending sort breaks ties by lower image id.
        order = torch.sort(candidates, dim=1, descending=True, stable=True).indices[:, :k]  # [F, k]
        from_kept = order < k
        kept_slot = order.clamp(max=k - 1)
        batch_pos = (order - k).clamp(min=0)
        self.top_image_ids = torch.where(
            from_kept, self.top_image_ids.gather(1, kept_slot), first_image_id + batch_pos
        )
        self.top_scores = candidates.gather(1, order)
        grid_pool = torch.cat(
            [self.top_grids, grids.unsqueeze(0).expand(len(self.feature_ids), -1, -1)], dim=1
        )
        self.top_grids = grid_pool.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
        # The maps are rewritten in place, a block of features at a time, so the temporaries stay a
        # few blocks however many features are mined (a whole-store copy is 640 MiB at 8k x 5 x 4096).
        # Only the features whose list changed are touched (after the first images, few per batch).
        changed = (~(from_kept & (kept_slot == torch.arange(k, device=acts.device)))).any(dim=1)  # [F]
        block = max(1, MAP_BLOCK_ELEMENTS // ((k + acts.shape[0]) * max(self.n_patches, 1)))
        for start in range(0, len(self.feature_ids), block):
            span = slice(start, min(start + block, len(self.feature_ids)))
            local = changed[span].nonzero().view(-1)
            if len(local) == 0:
                continue
            # A slice (a view) when the whole block changed, as in the first batches; else the rows.
            whole = len(local) == span.stop - span.start
            rows = span if whole else start + local
            # The block's activations feature-major [features, batch, patches]: gathering maps
            # straight from [batch, patches, F] reads each patch F numbers apart (a cache miss each).
            block_acts = acts[:, :, span].permute(2, 0, 1)
            block_acts = block_acts if whole else block_acts[local]
            # Kept maps then the batch's, [features, k + batch, patches], indexed like `candidates`.
            pool = torch.cat([self.top_maps[rows], block_acts], dim=1)
            self.top_maps[rows] = pool.gather(1, order[rows].unsqueeze(-1).expand(-1, -1, self.n_patches))

    def _update_histogram_codes(
        self, features: torch.Tensor, values: torch.Tensor, batch_max: torch.Tensor
    ) -> None:
        """Add a batch's nonzero activations (``features``, ``values`` ``[nnz]``; per-feature
        ``batch_max`` ``[F]``) to the per-feature histograms (see module doc)."""
        bins = self.hist_bins
        grow = (batch_max > 0) & (batch_max >= self.hist_range)
        if grow.any():
            needed = batch_max[grow]
            new_range = torch.exp2(torch.floor(torch.log2(needed)) + 1)
            new_range = torch.where(new_range <= needed, new_range * 2, new_range)  # log2 rounding guard
            self.hist_counts[grow] = _rebin(self.hist_counts[grow], self.hist_range[grow], new_range)
            self.hist_range[grow] = new_range
        if len(features) == 0:
            return
        bin_index = torch.floor(values / self.hist_range[features] * bins).long().clamp(0, bins - 1)
        flat = torch.bincount(features * bins + bin_index, minlength=len(self.feature_ids) * bins)
        self.hist_counts += flat.view(len(self.feature_ids), bins)

    # -- persistence --------------------------------------------------------------------------------

    def to(self, device: str | torch.device) -> MinedActivations:
        """Move the state tensors to ``device`` (in place; returns ``self``)."""
        for name in _STATE_TENSORS:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in _STATE_TENSORS}
        # A TopK feature's map is mostly zeros outside the patches it fires on: store the nonzeros
        # (flat index, value) when that is smaller; :meth:`load` rebuilds the dense maps exactly.
        maps = tensors["top_maps"]
        nonzero = int(torch.count_nonzero(maps))
        index_dtype = torch.int32 if maps.numel() < 2**31 else torch.int64
        if nonzero * (4 + index_dtype.itemsize) < maps.numel() * 4:
            flat = maps.view(-1)
            index = flat.nonzero().view(-1)
            del tensors["top_maps"]
            tensors["top_maps_index"] = index.to(index_dtype)
            tensors["top_maps_values"] = flat[index]
        return tensors

    def _full_meta(self) -> dict[str, Any]:
        return {
            **self.meta,
            "images_processed": self.images_processed,
            "images_mined": self.images_mined,
            "complete": self.complete,
            "histogram": {
                "kind": "linear-power-of-two-range",
                "bins": self.hist_bins,
                "counts": "nonzero (> 0) patch activations",
                "edges": "feature f: linspace(0, hist_range[f], bins + 1); hist_range in top.safetensors",
            },
        }

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``top.safetensors``, ``features.parquet`` and ``mining.json`` into ``out_dir``.

        Each file is written to a temporary name and moved into place, so a crash never leaves a
        half-written file. ``top.safetensors`` (tensors plus the metadata in its header) is the
        authoritative state read by :meth:`load` and by resuming; it is written first. The top-k
        maps are stored as their nonzeros (``top_maps_index``, flat int32/int64 indices into
        ``[F, k, patches]``, and ``top_maps_values``) when that is smaller than the dense
        ``top_maps``, as it is for TopK SAEs; :meth:`load` restores them exactly.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = self._full_meta()
        _atomic_write(
            out / TOP_FILE,
            lambda path: save_file(self._state_tensors(), str(path), metadata={"mining": json.dumps(meta)}),
        )
        _atomic_write(out / FEATURES_FILE, lambda path: self.stats.to_parquet(path, index=False))
        _atomic_write(out / META_FILE, lambda path: Path(path).write_text(json.dumps(meta, indent=2)))
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike, images: Any = None) -> MinedActivations:
        """Read results saved by :meth:`save` (or a checkpoint of an unfinished run).

        Args:
            out_dir: The folder.
            images: The image source mined, when it cannot be reopened from its description (an
                in-memory list); checked against the recorded ``source_id``.
        """
        path = Path(out_dir) / TOP_FILE
        if not path.is_file():
            raise FileNotFoundError(f"No mining results in {str(out_dir)!r} (expected {TOP_FILE}).")
        header = safetensors_metadata(path, "mined top images", _DAMAGED_FIX)
        if "mining" not in header:
            raise ValueError(f"{path} is not a mining result (its header has no 'mining' metadata).")
        meta = json.loads(header["mining"])
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {meta.get('version')}; this library reads {FORMAT_VERSION}."
            )
        images_processed = int(meta.pop("images_processed"))
        for derived in ("complete", "histogram", "images_mined"):
            meta.pop(derived, None)
        tensors = load_safetensors(path, "mined top images", _DAMAGED_FIX)
        if "top_maps_index" in tensors:  # maps stored as their nonzeros
            k, n_patches = int(meta["k"]), int(meta["n_patches"])
            dense = torch.zeros(len(tensors["feature_ids"]) * k * n_patches)
            dense[tensors.pop("top_maps_index").long()] = tensors.pop("top_maps_values")
            tensors["top_maps"] = dense.view(-1, k, n_patches)
        n_features, k = tensors["top_scores"].shape
        if "top_grids" not in tensors:  # saved before grids were kept: every image the square grid
            tensors["top_grids"] = torch.full((n_features, k, 2), int(meta["grid_size"]), dtype=torch.int64)
        if "tokens_seen" not in tensors:
            mined_images = (
                images_processed - len(meta.get("skipped_images", [])) - (meta.get("image_range") or [0])[0]
            )
            tensors["tokens_seen"] = torch.tensor([mined_images * int(meta["n_patches"])], dtype=torch.int64)
        mined = cls(
            **{name: tensors[name] for name in _STATE_TENSORS}, meta=meta, images_processed=images_processed
        )
        mined._mined_dir = Path(out_dir)  # where a folder's listing is, for image()
        if images is not None:
            source = as_image_source(images)
            if source.source_id != mined.source_id:
                source = _folder_as_mined(source, out_dir, mined.source_id) or source
            if source.source_id != mined.source_id:
                raise ValueError(
                    f"The images given are {source.source_id!r}, but the mining ran on {mined.source_id!r}."
                )
            mined.images = source
        return mined


def _atomic_write(target: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the file onto ``target`` (:func:`vis_steer_lens.atomic.atomic_path`)."""
    with atomic_path(target) as tmp:
        write(str(tmp))


def _save_before_failing(mined: MinedActivations, out_dir: str | os.PathLike) -> None:
    """A checkpoint of ``mined`` while an error is on its way up; a failure to write it is logged, not
    raised, so the original error is the one reported."""
    if mined.images_mined == 0:
        return
    try:
        mined.save(out_dir)
    except Exception as err:  # a full disk: the error being raised says so already
        logger.warning("Could not save the mining checkpoint before stopping: %s", err)
    else:
        logger.warning(
            "Stopped after %d images; what was mined is saved in %s and the same command resumes it.",
            mined.images_processed,
            out_dir,
        )


def _write_listing(out_dir: str | os.PathLike, source: FolderImages) -> None:
    frame = pd.DataFrame(source.entries, columns=["name", "size", "mtime_ns"])
    _atomic_write(Path(out_dir) / LISTING_FILE, lambda path: frame.to_parquet(path, index=False))


def _folder_as_mined(source: Any, out_dir: str | os.PathLike, mined_id: str) -> FolderImages | None:
    """``source`` as the folder was listed when mined (from ``LISTING_FILE`` in ``out_dir``), where
    files were only deleted since: their ids are kept and they read as unreadable.

    Returns:
        The folder as listed then, or ``None`` when ``source`` is no folder, no listing was kept, or
        the listing is of another collection.

    Raises:
        ResumeMismatchError: Files of the folder were added or changed since (naming them).
    """
    path = Path(out_dir) / LISTING_FILE
    if not isinstance(source, FolderImages) or not path.is_file():
        return None
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # a truncated or overwritten parquet file: pyarrow's own error types
        raise damaged(path, err, "the image folder's listing when it was mined", _DAMAGED_FIX) from err
    entries = list(zip(table["name"], table["size"], table["mtime_ns"], strict=True))
    listed = FolderImages(source.path, entries=entries)
    if listed.source_id != mined_id:
        return None
    changes = source.changes_since(entries)
    if changes["added"] or changes["changed"]:
        said = "; ".join(
            f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            for what, names in (("changed", changes["changed"]), ("added", changes["added"]))
            if names
        )
        raise ResumeMismatchError(
            f"The image folder {str(source.path)!r} changed since it was mined in {str(out_dir)!r}: {said}. "
            "Its images would no longer be the ones mined; restore them, use another out_dir, or "
            "resume=False to start over."
        )
    return listed


def _read_batch(
    source: ImageSource, indices: range, skipped: list[dict[str, Any]]
) -> tuple[list[int], list[Any]]:
    """The readable images among ``indices``: their ids and items (PIL images decoded and made RGB
    now, one at a time). Each unreadable one is appended to ``skipped`` as ``{"index", "name", "reason"}``."""
    ids: list[int] = []
    items: list[Any] = []
    for index in indices:
        try:
            item = source[index]
            if isinstance(item, Image.Image):
                item = to_rgb(item)
        except UnreadableImageError as err:
            reason = err.reason
        except IMAGE_DECODE_ERRORS as err:
            reason = f"it cannot be decoded ({type(err).__name__}: {err})"
        else:
            ids.append(index)
            items.append(item)
            continue
        skipped.append({"index": index, "name": source.image_name(index), "reason": reason})
        if len(skipped) <= _SKIPS_LOGGED:
            logger.warning("Skipping unreadable image %s: %s", skipped[-1]["name"], reason)
            if len(skipped) == _SKIPS_LOGGED:
                logger.warning("Further unreadable images are counted, not logged (meta['skipped_images']).")
    return ids, items


def _contiguous_runs(ids: list[int], longest: int):
    """``(offset, count)`` of the runs of consecutive ids in ``ids`` (sorted), each at most ``longest``."""
    offset = 0
    while offset < len(ids):
        count = 1
        while count < longest and offset + count < len(ids) and ids[offset + count] == ids[offset] + count:
            count += 1
        yield offset, count
        offset += count


def _mismatches(saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    return description_mismatches(saved, current, keys=[k for k in _RESUME_KEYS if k not in ignore])


def _rebin(counts: torch.Tensor, old_range: torch.Tensor, new_range: torch.Tensor) -> torch.Tensor:
    """Histogram counts ``[F, bins]`` over ``[0, old_range)`` re-binned to ``[0, new_range)`` (both
    powers of two, ``new >= old``): doubling the range ``s`` times merges runs of ``2**s`` bins, exactly."""
    bins = counts.shape[1]
    doublings = torch.where(old_range > 0, torch.round(torch.log2(new_range / old_range.clamp(min=1e-38))), 0)
    doublings = doublings.long().clamp(0, 62)
    target = torch.arange(bins, device=counts.device).unsqueeze(0) >> doublings.unsqueeze(1)  # [F, bins]
    return torch.zeros_like(counts).scatter_add_(1, target, counts)


@torch.no_grad()
def _encode_in_chunks(sae: Any, acts: torch.Tensor) -> torch.Tensor:
    """``sae.encode`` of ``[images, patches, d_in]`` into one preallocated ``[images, patches, d_sae]``,
    a few patches at a time, so the SAE's own temporaries (pre-activations, the scatter of its top
    k) are a chunk's, not the whole block's."""
    images, patches, _ = acts.shape
    d_sae = sae.cfg.d_sae
    codes = torch.empty(images, patches, d_sae, device=sae.W_enc.device, dtype=torch.float32)
    flat_in = acts.reshape(images * patches, -1)
    flat_out = codes.view(images * patches, d_sae)
    step = max(1, ENCODE_CHUNK_ELEMENTS // d_sae)
    for start in range(0, images * patches, step):
        chunk = flat_in[start : start + step].to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
        flat_out[start : start + step] = sae.encode(chunk)
    return codes


def _check_writable(folder: Path) -> None:
    """Fail now, not after hours of mining, if ``folder`` cannot take the results."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {str(folder)!r} is a file; mined results go to a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}"  # one per process: ranks probe at once
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"Cannot write the mined results to {str(folder)!r}: {err.strerror or err}."
        ) from None


def mine_top_activations(
    model: Any,
    sae: Any,
    images: Any,
    *,
    k: int = 5,
    batch_size: int = 32,
    rank_by: str = "max",
    features: Any = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    processor: Any = None,
    hist_bins: int = 50,
    progress: bool = True,
    checkpoint_every: int = 5000,
    world: World | None = None,
) -> MinedActivations:
    """Find each feature's top-``k`` images in one streaming pass.

    Per batch: pixel values → activations at the SAE's hook ``[batch, patches, d_in]`` →
    ``sae.encode`` → ``[batch, patches, d_sae]`` → per-image score (max or mean over patches) →
    merged into the running top-k. Memory holds ``F × k × patches`` maps, never per-image data.

    An image that cannot be read (missing, empty, truncated, not an image) is skipped: it keeps its
    index, enters no top-k and no statistic (frequencies are over the images read), and is named in
    ``meta["skipped_images"]``. PIL images and uint8 ``[3, H, W]`` tensors go through the image
    processor; floating tensors are pixel values already processed
    (:func:`~vis_steer_lens.activations.to_pixel_values`). A folder's listing is kept in ``out_dir``
    (``image_listing.parquet``), so a run resumes after files were deleted (they become skipped
    images); files added or changed since are refused.

    Args:
        model: A HookedViT or HookedVLM.
        sae: A ``sae_lens.SAE`` whose ``cfg.metadata.hook_name`` names a hook of ``model``.
        images: An :class:`~vis_steer_lens.image_sources.ImageSource`, folder path, ``datasets.Dataset``
            or list of PIL images / ``[3, H, W]`` pixel tensors (random access is needed to show
            top images later).
        k: Images kept per feature.
        batch_size: Images per forward pass, or ``"auto"``: the largest batch whose estimated peak
            fits in the free memory of the model's device (:mod:`vis_steer_lens.memory`; recorded
            in ``meta["batch_size"]``).
        rank_by: ``"max"`` or ``"mean"`` of the feature over patches (the paper ranks by mean).
        features: SAE feature ids to mine; ``None`` for all.
        out_dir: Where to checkpoint and save; ``None`` keeps everything in memory.
        resume: Continue from a checkpoint in ``out_dir`` (refused if it is from other settings);
            ``False`` starts over and overwrites it.
        processor: Image processor for PIL images (default: the model's).
        hist_bins: Bins of the per-feature activation histograms.
        progress: Show a tqdm bar over images.
        checkpoint_every: Images between checkpoints (rounded up to whole batches).
        world: The ranks to share the images with (default: from the launcher's environment).
            Under ``torchrun`` / ``accelerate launch`` each rank mines a consecutive block of
            images into ``out_dir/shards/rank-N`` (resumable on its own), and rank 0 merges the
            blocks exactly (:meth:`MinedActivations.merge`) into ``out_dir``; every rank returns
            the merged result.

    Returns:
        The :class:`MinedActivations`, also saved to ``out_dir`` when given.

    Raises:
        ValueError: Bad settings, or a checkpoint in ``out_dir`` from different settings (naming
            each difference).
        NoReadableImageError: Not one image of the source could be read.
        OSError: ``out_dir`` cannot be written (found before any mining).
    """
    settings = dict(
        k=k,
        batch_size=batch_size,
        rank_by=rank_by,
        features=features,
        processor=processor,
        hist_bins=hist_bins,
        checkpoint_every=checkpoint_every,
    )
    world = current_world() if world is None else world
    if not world.distributed:
        crashed = _crashed_launch_size(out_dir) if resume else None
        if crashed is not None:  # a launch died: finish its ranks' blocks here, then merge as it would have
            return _finish_crashed_launch(model, sae, images, Path(out_dir), crashed, progress, settings)
        return _mine_block(model, sae, images, out_dir=out_dir, resume=resume, progress=progress, **settings)
    source = as_image_source(images)
    block = contiguous_shard(len(source), world)
    if out_dir is not None:
        out = Path(out_dir)
        if resume and (out / TOP_FILE).is_file():  # finished before: every rank reads the result
            done = MinedActivations.load(out, images=source)
            if not done.complete or done.meta.get("image_range") is not None:
                raise ResumeMismatchError(
                    f"{str(out)!r} holds an unfinished one-process mining checkpoint; finish it with the same "
                    "one-process command, or pass resume=False to mine it again under the launcher."
                )
            return _finish_merged(done, source, model)
        part_dir = out / SHARDS_DIR / f"rank-{world.rank:05d}"
        _mine_block(
            model,
            sae,
            source,
            out_dir=part_dir,
            resume=resume,
            progress=progress and world.is_main,
            image_range=block,
            **settings,
        )
        barrier(world)
        if world.is_main:
            parts = [MinedActivations.load(out / SHARDS_DIR / f"rank-{r:05d}") for r in range(world.size)]
            merged = MinedActivations.merge(parts)
            merged.save(out)
            if isinstance(source, FolderImages):
                _write_listing(out, source)
            shutil.rmtree(out / SHARDS_DIR)
        barrier(world)
        return _finish_merged(MinedActivations.load(out, images=source), source, model)
    part = _mine_block(
        model,
        sae,
        source,
        out_dir=None,
        resume=resume,
        progress=progress and world.is_main,
        image_range=block,
        **settings,
    )
    part.images = part.model = None  # only the state travels between ranks
    return _finish_merged(MinedActivations.merge(gather_objects(part, world)), source, model)


def _crashed_launch_size(out_dir: str | os.PathLike | None) -> int | None:
    """The number of ranks of a launch that died before merging into ``out_dir``, or ``None``."""
    if out_dir is None or (Path(out_dir) / TOP_FILE).is_file():
        return None
    folder = Path(out_dir) / SHARDS_DIR
    ranks = sorted(p.name for p in folder.glob("rank-*") if p.is_dir()) if folder.is_dir() else []
    if not ranks or ranks != [f"rank-{r:05d}" for r in range(len(ranks))]:
        return None
    return len(ranks)


def _finish_crashed_launch(
    model: Any, sae: Any, images: Any, out: Path, size: int, progress: bool, settings: dict[str, Any]
) -> MinedActivations:
    """One process doing what a relaunch of ``size`` ranks would: each rank's block resumed from its
    checkpoint, then the blocks merged exactly into ``out`` and the shards removed."""
    source = as_image_source(images)
    logger.warning(
        "%s holds the shards of a %d-rank launch that did not finish; resuming each rank's block here.",
        out / SHARDS_DIR,
        size,
    )
    parts = []
    for rank in range(size):
        block = contiguous_shard(len(source), World(rank=rank, size=size))
        part_dir = out / SHARDS_DIR / f"rank-{rank:05d}"
        _mine_block(
            model,
            sae,
            source,
            out_dir=part_dir,
            resume=True,
            progress=progress,
            image_range=block,
            **settings,
        )
        parts.append(MinedActivations.load(part_dir))
    merged = MinedActivations.merge(parts)
    merged.save(out)
    if isinstance(source, FolderImages):
        _write_listing(out, source)
    shutil.rmtree(out / SHARDS_DIR)
    return _finish_merged(MinedActivations.load(out, images=source), source, model)


def _finish_merged(mined: MinedActivations, source: ImageSource, model: Any) -> MinedActivations:
    mined.images, mined.model = source, model
    return mined


def _mine_packed_batch(
    mined: MinedActivations,
    model: Any,
    sae: Any,
    image_processor: Any,
    hook_name: str,
    batch: list[Any],
    ids: list[int],
    feature_index: torch.Tensor | None,
) -> None:
    """Mine one batch on a packed tower: the images (of any sizes) in one sequence, each image's
    codes laid out row-major over its own grid (the geometry) and zero-padded to the state's width."""
    per_image, image_grids = image_patch_activations(model, hook_name, batch, image_processor)
    for offset, count in _contiguous_runs(ids, len(ids)):
        maps, grids = [], []
        width = max(len(acts) for acts in per_image[offset : offset + count])
        for image in range(offset, offset + count):
            acts = per_image[image]  # [h * w, d], row-major over the image's own grid
            codes = _encode_in_chunks(sae, acts.unsqueeze(0))[0]  # [h * w, d_sae]
            if feature_index is not None:
                codes = codes[..., feature_index.to(codes.device)]
            maps.append(torch.nn.functional.pad(codes, (0, 0, 0, width - len(acts))))
            grids.append(image_grids[image])
        mined.update(torch.stack(maps), ids[offset], grids=torch.tensor(grids, dtype=torch.int64))


def _mine_block(
    model: Any,
    sae: Any,
    images: Any,
    *,
    k: int,
    batch_size: int | str,
    rank_by: str,
    features: Any,
    out_dir: str | os.PathLike | None,
    resume: bool,
    processor: Any,
    hist_bins: int,
    progress: bool,
    checkpoint_every: int,
    image_range: range | None = None,
) -> MinedActivations:
    """:func:`mine_top_activations` in one process, over all images or the block ``image_range``
    (one rank's shard: its state covers those ids, and an all-unreadable block is no error)."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    batch_size = check_batch_size(batch_size)
    if hist_bins < 1:
        raise ValueError(f"hist_bins must be >= 1, got {hist_bins}.")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}.")
    source = as_image_source(images)
    if len(source) == 0:
        raise ValueError("The image source holds no image; mining needs at least one.")
    if out_dir is not None:
        _check_writable(Path(out_dir))  # before the mining, not after it
    hook_name = check_sae_fits(sae, model)
    vit = vision_model(model)
    feature_ids = list(range(sae.cfg.d_sae)) if features is None else check_feature_ids(sae, features)
    if not feature_ids:
        raise ValueError("features= is empty: give at least one feature id, or None for all.")
    auto_batch = batch_size == "auto"
    if auto_batch:
        batch_size = auto_batch_size(mining_bytes_per_image(vit, sae), vit.device)
    meta = {
        "version": FORMAT_VERSION,
        "sae_id": sae_identity(sae),
        "hook_name": hook_name,
        "d_sae": int(sae.cfg.d_sae),
        "model_name": vit.cfg.model_name,
        "source_id": source.source_id,
        "image_source": source.describe(),
        "n_images": len(source),
        "k": int(k),
        "rank_by": rank_by,
        # All features given explicitly in order is the same run as features=None.
        "features": None if feature_ids == list(range(sae.cfg.d_sae)) else feature_ids,
        "hist_bins": int(hist_bins),
        "n_patches": int(vit.cfg.n_patches),
        "grid_size": int(vit.cfg.grid_size),
        "packed": bool(vit.cfg.packed),
        "patch_size": int(vit.cfg.patch_size),
        "image_size": int(vit.cfg.image_size),
        "batch_size": int(batch_size),
        "batch_size_auto": auto_batch,
        "image_range": None if image_range is None else [image_range.start, image_range.stop],
    }

    packed = vit.cfg.packed
    if packed:
        # Images of any size: maps are kept row-major over each image's own grid, zero-padded to the
        # largest image seen so far (the width grows with the images, not to the processor's bound).
        meta["n_patches"] = 0
    mined = None
    if out_dir is not None and resume and (Path(out_dir) / TOP_FILE).is_file():
        mined = MinedActivations.load(out_dir)
        if source.source_id != mined.source_id:
            listed = _folder_as_mined(source, out_dir, mined.source_id)
            if listed is not None:  # files deleted since the checkpoint: the ids stay those mined
                gone = source.changes_since(listed.entries)["removed"]
                logger.warning(
                    "%d image(s) of %s were deleted since the checkpoint (%s); unmined ones are skipped.",
                    len(gone),
                    listed.path,
                    ", ".join(gone[:3]) + (", ..." if len(gone) > 3 else ""),
                )
                source = listed
                meta.update(source_id=source.source_id, image_source=source.describe(), n_images=len(source))
        differences = _mismatches(mined.meta, meta, ignore=("n_patches",) if packed else ())
        if differences:
            raise ResumeMismatchError(
                f"The checkpoint in {str(out_dir)!r} was made with other settings, so it cannot be resumed "
                f"({'; '.join(differences)}). Use another out_dir, or resume=False to start over."
            )
        mined.meta.update(batch_size=int(batch_size), batch_size_auto=auto_batch)
    # After resuming, which may swap in the folder as it was listed when the run began.
    block = range(len(source)) if image_range is None else image_range
    if mined is None:
        mined = MinedActivations.empty(feature_ids, k, meta["n_patches"], hist_bins, meta)
        mined.images_processed = block.start
        if out_dir is not None and isinstance(source, FolderImages):
            _write_listing(out_dir, source)
    elif (
        out_dir is not None
        and isinstance(source, FolderImages)
        and not (Path(out_dir) / LISTING_FILE).is_file()
    ):
        _write_listing(out_dir, source)  # a checkpoint from before listings were kept
    skipped = mined.meta.setdefault("skipped_images", [])
    mined.images, mined.model = source, model
    mined.to(sae.device)

    feature_index = None if meta["features"] is None else torch.tensor(feature_ids, dtype=torch.int64)
    image_processor = None
    start = mined.images_processed
    last_checkpoint = start
    bar = tqdm(total=len(block), initial=start - block.start, unit="img", desc="mining", disable=not progress)
    consistent = True  # the state holds whole batches only (false while one is being added)
    try:
        for first in range(start, block.stop, batch_size):
            end = min(first + batch_size, block.stop)
            ids, batch = _read_batch(source, range(first, end), skipped)
            if batch and packed:
                if image_processor is None:
                    image_processor = image_processor_of(model, processor)
                _mine_packed_batch(mined, model, sae, image_processor, hook_name, batch, ids, feature_index)
            elif batch:
                if image_processor is None and needs_image_processor(batch):
                    image_processor = image_processor_of(model, processor)
                pixel_values = to_pixel_values(batch, image_processor).to(device=vit.device, dtype=vit.dtype)
                tower_acts = patch_tokens(hook_activations(model, hook_name, pixel_values, flatten=True), vit)
                # Dense codes [images, patches, d_sae] for a few images at a time, whatever the batch
                # size; a run of consecutive ids at a time, so skipped images leave gaps.
                per_block = max(1, CODE_BLOCK_ELEMENTS // (tower_acts.shape[1] * sae.cfg.d_sae))
                consistent = False
                for offset, count in _contiguous_runs(ids, per_block):
                    codes = _encode_in_chunks(sae, tower_acts[offset : offset + count])
                    if feature_index is not None:
                        codes = codes[..., feature_index.to(codes.device)]
                    mined.update(codes, ids[offset])
                    del codes
            mined.images_processed = end  # read or skipped, every image up to here is done
            consistent = True
            bar.update(end - first)
            due = mined.images_processed - last_checkpoint >= checkpoint_every
            if out_dir is not None and due and mined.images_mined > 0:
                mined.save(out_dir)
                last_checkpoint = mined.images_processed
    except BaseException as err:
        # Keep what is done (whole batches) before failing, so that a rerun resumes from here (not
        # when the failure was writing the checkpoint itself: the disk is full).
        saving_failed = isinstance(err, FileWriteError)
        if (
            out_dir is not None
            and consistent
            and not saving_failed
            and mined.images_processed > last_checkpoint
        ):
            _save_before_failing(mined, out_dir)
        raise
    finally:
        bar.close()
    mined.to("cpu")
    if mined.images_mined == 0 and image_range is None:
        named = "; ".join(f"{item['name']} ({item['reason']})" for item in skipped[:3])
        raise NoReadableImageError(
            f"None of the {len(source)} images of {source.source_id} could be read, so nothing was mined "
            f"(e.g. {named}). Expected image files PIL can decode; check the source."
        )
    if skipped:
        logger.warning(
            "%d of %d images could not be read and were skipped (named in meta['skipped_images']).",
            len(skipped),
            len(source),
        )
    if out_dir is not None:
        mined.save(out_dir)
    return mined
