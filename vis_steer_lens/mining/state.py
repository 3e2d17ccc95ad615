"""The state of a mining pass: each feature's top images with their maps, and running statistics.

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

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vis_steer_lens.image_sources import ImageSource, as_image_source, open_image_source
from vis_steer_lens.mining.persistence import folder_as_mined, read_state, write_state
from vis_steer_lens.saes.validation import check_feature_ids
from vis_steer_lens.store import description_mismatches

RANK_BY = ("max", "mean")
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
                source = folder_as_mined(source, mined_dir, self.source_id) or source
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
        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in _STATE_TENSORS}
        return write_state(out_dir, tensors, self._full_meta(), self.stats)

    @classmethod
    def load(cls, out_dir: str | os.PathLike, images: Any = None) -> MinedActivations:
        """Read results saved by :meth:`save` (or a checkpoint of an unfinished run).

        Args:
            out_dir: The folder.
            images: The image source mined, when it cannot be reopened from its description (an
                in-memory list); checked against the recorded ``source_id``.
        """
        tensors, meta, images_processed = read_state(out_dir)
        mined = cls(
            **{name: tensors[name] for name in _STATE_TENSORS}, meta=meta, images_processed=images_processed
        )
        mined._mined_dir = Path(out_dir)  # where a folder's listing is, for image()
        if images is not None:
            source = as_image_source(images)
            if source.source_id != mined.source_id:
                source = folder_as_mined(source, out_dir, mined.source_id) or source
            if source.source_id != mined.source_id:
                raise ValueError(
                    f"The images given are {source.source_id!r}, but the mining ran on {mined.source_id!r}."
                )
            mined.images = source
        return mined


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
