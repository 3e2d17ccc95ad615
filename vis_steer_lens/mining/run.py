"""One mining pass over an image collection: batches through the tower and the SAE, folded into a
:class:`~vis_steer_lens.mining.state.MinedActivations`, checkpointed, resumed, and split over ranks."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
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
from vis_steer_lens.atomic import FileWriteError
from vis_steer_lens.distributed import World, barrier, contiguous_shard, current_world, gather_objects
from vis_steer_lens.image_sources import (
    FolderImages,
    ImageSource,
    NoReadableImageError,
    as_image_source,
    read_batch,
)
from vis_steer_lens.memory import auto_batch_size, check_batch_size, mining_bytes_per_image
from vis_steer_lens.mining.persistence import (
    FORMAT_VERSION,
    LISTING_FILE,
    TOP_FILE,
    folder_as_mined,
    write_listing,
)
from vis_steer_lens.mining.state import RANK_BY, MinedActivations, _mismatches
from vis_steer_lens.saes.metadata import sae_identity
from vis_steer_lens.saes.validation import check_feature_ids, check_sae_fits
from vis_steer_lens.store import ResumeMismatchError

#: Under a launcher, each rank's part of the run: ``<out_dir>/shards/rank-00000`` ...
SHARDS_DIR = "shards"
#: Largest block of dense SAE codes (numbers) held at once while mining: 32 MiB in float32 (at
#: least one image: 128 MiB for an 8192-feature SAE over 4096 patches).
CODE_BLOCK_ELEMENTS = 1 << 23
#: Tokens x features encoded by the SAE at once (32 MiB of pre-activations in float32).
ENCODE_CHUNK_ELEMENTS = 1 << 23

logger = logging.getLogger(__name__)


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


def _contiguous_runs(ids: list[int], longest: int):
    """``(offset, count)`` of the runs of consecutive ids in ``ids`` (sorted), each at most ``longest``."""
    offset = 0
    while offset < len(ids):
        count = 1
        while count < longest and offset + count < len(ids) and ids[offset + count] == ids[offset] + count:
            count += 1
        yield offset, count
        offset += count


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
                write_listing(out, source)
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
        write_listing(out, source)
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
    # A tower that fits its positions to any size (DINOv2) sees the image processor's size, not the
    # size it was trained at.
    grid_size, image_size = int(vit.cfg.grid_size), int(vit.cfg.image_size)
    if vit.cfg.interpolate_positions and not vit.variable_grids:
        image_processor = processor if processor is not None else getattr(model, "processor", None)
        image_size = vit.input_image_size(image_processor)
        grid_size = image_size // vit.cfg.patch_size
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
        "n_patches": grid_size**2,
        "grid_size": grid_size,
        # Maps at each image's own grid (native resolution or AnyRes tiles), under its historical name.
        "packed": bool(vit.variable_grids),
        "patch_size": int(vit.cfg.patch_size),
        "image_size": image_size,
        "batch_size": int(batch_size),
        "batch_size_auto": auto_batch,
        "image_range": None if image_range is None else [image_range.start, image_range.stop],
    }

    packed = vit.variable_grids
    if packed:
        # Images of any size: maps are kept row-major over each image's own grid, zero-padded to the
        # largest image seen so far (the width grows with the images, not to the processor's bound).
        meta["n_patches"] = 0
    mined = None
    if out_dir is not None and resume and (Path(out_dir) / TOP_FILE).is_file():
        mined = MinedActivations.load(out_dir)
        if source.source_id != mined.source_id:
            listed = folder_as_mined(source, out_dir, mined.source_id)
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
            write_listing(out_dir, source)
    elif (
        out_dir is not None
        and isinstance(source, FolderImages)
        and not (Path(out_dir) / LISTING_FILE).is_file()
    ):
        write_listing(out_dir, source)  # a checkpoint from before listings were kept
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
            ids, batch = read_batch(source, range(first, end), skipped)
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
