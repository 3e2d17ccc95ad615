"""Vision activations cached on disk once, read many times: shards of fixed-size rows.

Training a grid of SAEs reads the same activations once per SAE unless they are kept. This
module runs the tower once over an image source and writes the tokens of one or more hooks as
memory-mappable ``.npy`` shards::

    RUN/activations/
      manifest.json                      settings, tower fingerprint, one entry per shard
      index/shard-00000.npy              [rows, 2] int64: (image id, token position in its selection)
      <hook>/shard-00000.npy             [rows, d_hook] (float32 or float16), one folder per hook

Shard ``s`` holds the selected tokens of images ``[s * images_per_shard, (s + 1) * images_per_shard)``
in image order, each image's tokens in the tower's order. Its contents therefore depend on the
images and the settings only, never on how many processes wrote it, which shards a killed run had
finished, or the order shards were written in: under ``torchrun`` rank ``r`` writes shards
``r, r + world, ...``, and a rerun writes the shards that are missing. Each file is written
through a temporary name and renamed (:mod:`vis_steer_lens.atomic`); a shard is done when its
index file exists, which is written after its hook files. The manifest is rewritten after each
shard in one process, and by rank 0 after the ranks meet under a launcher.

>>> cache = cache_activations(vlm, ["blocks.2.hook_resid_post"], images, "run/activations")  # doctest: +SKIP
>>> cache.rows("blocks.2.hook_resid_post", 0).shape  # memory-mapped  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vis_steer_lens.activations import (
    TOKEN_SELECTIONS,
    batched,
    image_processor_of,
    tower_inputs,
    vision_model,
)
from vis_steer_lens.atomic import atomic_path, atomic_write_text
from vis_steer_lens.distributed import World, barrier, current_world
from vis_steer_lens.image_sources import NoReadableImageError, as_image_source
from vis_steer_lens.store import ResumeMismatchError

CACHE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
INDEX_DIR = "index"
#: Dtypes a cache may store (numpy has no bfloat16; float16 halves the disk of float32).
CACHE_DTYPES = ("float32", "float16")

logger = logging.getLogger(__name__)


class ActivationCacheError(ValueError):
    """A cache that cannot be written or read as asked (bad settings, missing or empty cache)."""


def shard_name(shard: int) -> str:
    """The file name of shard ``shard``: ``shard-00012.npy``."""
    return f"shard-{shard:05d}.npy"


def _save_npy(target: Path, array: np.ndarray) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)


@dataclass
class ActivationCache:
    """A cache folder written by :func:`cache_activations`, read through memory maps.

    Attributes:
        root: The folder (``RUN/activations``).
        manifest: The parsed ``manifest.json``.
    """

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> ActivationCache:
        """Open a cache folder.

        Raises:
            ActivationCacheError: No manifest there, or a cache with no rows.
        """
        root = Path(root)
        path = root / MANIFEST_FILE
        if not path.is_file():
            raise ActivationCacheError(
                f"No activation cache in {str(root)!r} (no {MANIFEST_FILE}); run `vis-steer-lens cache` first."
            )
        manifest = json.loads(path.read_text())
        if manifest.get("version") != CACHE_FORMAT_VERSION:
            raise ActivationCacheError(
                f"{path} has cache format {manifest.get('version')}; this library reads {CACHE_FORMAT_VERSION}."
            )
        if not manifest.get("complete", True):
            # Being written (another rank, a run that stopped): the shards finished so far.
            settings = {key: value for key, value in manifest.items() if key not in ("shards", "complete")}
            manifest = _manifest_from_disk(root, settings, {})
        cache = cls(root, manifest)
        if cache.n_rows == 0:
            raise ActivationCacheError(
                f"The activation cache in {str(root)!r} holds no rows (no finished shard); run "
                "`vis-steer-lens cache` again to fill it."
            )
        return cache

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def shards(self) -> list[dict[str, Any]]:
        """One ``{"shard", "rows", "images": [first, stop]}`` per finished shard, in order."""
        return list(self.manifest["shards"])

    @property
    def n_rows(self) -> int:
        return sum(int(entry["rows"]) for entry in self.manifest["shards"])

    def d_model(self, hook: str) -> int:
        return int(self.manifest["d_model"][self.check_hook(hook)])

    def check_hook(self, hook: str) -> str:
        """The hook as cached, or an error listing the cached ones."""
        if hook not in self.manifest["hooks"]:
            raise ActivationCacheError(
                f"Hook {hook!r} is not in the activation cache {str(self.root)!r} (cached: "
                f"{', '.join(self.manifest['hooks'])}); pass one of those, or cache it with "
                "`vis-steer-lens cache --hooks ...`."
            )
        return hook

    def rows(self, hook: str, shard: int) -> np.ndarray:
        """Shard ``shard`` of ``hook``, memory-mapped: ``[rows, d_model]``."""
        return np.load(self.root / self.check_hook(hook) / shard_name(shard), mmap_mode="r")

    def index(self, shard: int) -> np.ndarray:
        """Shard ``shard``'s ``[rows, 2]`` (image id, token position) table, memory-mapped."""
        return np.load(self.root / INDEX_DIR / shard_name(shard), mmap_mode="r")

    def iter_rows(self, hook: str, image_stop: int | None = None) -> Iterator[np.ndarray]:
        """Every shard of ``hook`` in order, cut before the first row of image ``image_stop``."""
        for entry in self.shards:
            first, _ = entry["images"]
            if image_stop is not None and first >= image_stop:
                return
            rows = self.rows(hook, entry["shard"])
            if image_stop is not None and entry["images"][1] > image_stop:
                keep = int(np.searchsorted(self.index(entry["shard"])[:, 0], image_stop))
                rows = rows[:keep]
            yield rows


def _settings_of(
    model: Any, hooks: list[str], source: Any, tokens: str, dtype: str, images_per_shard: int, batch_size: int
) -> dict[str, Any]:
    vit = vision_model(model)
    return {
        "version": CACHE_FORMAT_VERSION,
        "model_name": vit.cfg.model_name,
        "family": vit.cfg.family,
        "tower_fingerprint": vit.tower_fingerprint(),
        "hooks": hooks,
        "d_model": {hook: int(vit.hook_width(hook)) for hook in hooks},
        "token_selection": tokens,
        "dtype": dtype,
        "source_id": source.source_id,
        "image_source": source.describe(),
        "n_images": len(source),
        "images_per_shard": int(images_per_shard),
        "batch_size": int(batch_size),
    }


#: Settings that must match for a cache to be resumed. The batch size changes no value in principle,
#: but batched matrix products may round differently, and resumed shards must equal unresumed ones.
_RESUME_KEYS = (
    "model_name",
    "tower_fingerprint",
    "hooks",
    "token_selection",
    "dtype",
    "source_id",
    "n_images",
    "images_per_shard",
    "batch_size",
)


def _finished_shards(root: Path, hooks: list[str], n_shards: int) -> list[int]:
    """Shards whose index file exists (written last) and whose hook files all exist."""
    done = []
    for shard in range(n_shards):
        name = shard_name(shard)
        if (root / INDEX_DIR / name).is_file() and all((root / hook / name).is_file() for hook in hooks):
            done.append(shard)
    return done


def _manifest_from_disk(root: Path, settings: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The manifest of the shards on disk (the disk is the truth; the manifest follows it)."""
    n_shards = -(-settings["n_images"] // settings["images_per_shard"])
    entries = []
    per_shard = settings["images_per_shard"]
    for shard in _finished_shards(root, settings["hooks"], n_shards):
        n_rows = np.load(root / INDEX_DIR / shard_name(shard), mmap_mode="r").shape[0]
        first = shard * per_shard
        entries.append(
            {
                "shard": shard,
                "rows": int(n_rows),
                "images": [first, min(first + per_shard, settings["n_images"])],
            }
        )
    return {
        **settings,
        "n_shards": n_shards,
        "shards": entries,
        "images_done": sum(entry["images"][1] - entry["images"][0] for entry in entries),
        "rows_done": sum(entry["rows"] for entry in entries),
        "complete": len(entries) == n_shards,
        **extra,
    }


def _write_manifest(root: Path, settings: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    manifest = _manifest_from_disk(root, settings, extra)
    atomic_write_text(root / MANIFEST_FILE, json.dumps(manifest, indent=2))
    return manifest


def token_positions(geometry: Any, tokens: str, device: Any) -> list[torch.Tensor]:
    """Each image's selected token positions in the batch's flattened tokens (the geometry's).

    ``"patches"``: row-major over the image's own grid; ``"prefix"``: its class and register
    tokens; ``"all"``: every token of the image in the tower's order (as
    :func:`~vis_steer_lens.activations.image_token_activations` selects them).
    """
    geometry = geometry.to(device)
    positions = []
    for image in range(geometry.n_images):
        if tokens == "patches":
            positions.append(geometry.patch_positions(image))
        else:
            span = geometry.image_positions(image)
            chosen = torch.arange(span.start, span.stop, device=device)
            positions.append(chosen[geometry.is_prefix[span]] if tokens == "prefix" else chosen)
    return positions


@torch.no_grad()
def batch_token_activations(
    model: Any, hooks: list[str], images: list[Any], image_processor: Any, tokens: str
) -> dict[str, list[torch.Tensor]]:
    """Each image's selected tokens at every hook, from one forward run as far as the deepest hook.

    Returns:
        ``{hook: [per image [n_i, d_hook]]}``.
    """
    vit = vision_model(model)
    pixel_values, extra = tower_inputs(model, images, image_processor)
    geometry = vit.image_geometry(pixel_values, **extra)
    parsed = {hook: vit.parse_hook_name(hook) for hook in hooks}
    captured: dict[str, torch.Tensor] = {}

    def capture(name: str):
        def keep(activation: torch.Tensor, hook: Any) -> None:  # TransformerLens passes `hook=`
            captured[name] = activation.detach()

        return keep

    stops = [name.stop_at_layer for name in parsed.values()]
    stop = None if any(layer is None for layer in stops) else max(stops)
    vit.run_with_hooks(
        pixel_values,
        fwd_hooks=[(parsed[hook].name, capture(hook)) for hook in hooks],
        stop_at_layer=stop,
        **extra,
    )
    out = {}
    for hook in hooks:
        acts = parsed[hook].flatten(captured[hook])
        flat = acts.reshape(-1, acts.shape[-1])
        out[hook] = [flat[positions] for positions in token_positions(geometry, tokens, flat.device)]
    return out


def _shard_activations(
    model: Any,
    hooks: list[str],
    source: Any,
    images: range,
    tokens: str,
    batch_size: int,
    image_processor: Any,
    skipped: list[dict[str, Any]],
) -> tuple[dict[str, list[torch.Tensor]], list[np.ndarray]]:
    """One shard's rows per hook and its index blocks, batch by batch (batches aligned to the shard)."""
    from vis_steer_lens.image_sources import read_batch

    per_hook: dict[str, list[torch.Tensor]] = {hook: [] for hook in hooks}
    index: list[np.ndarray] = []
    for batch_ids in batched(images, batch_size):
        ids, items = read_batch(source, range(batch_ids[0], batch_ids[-1] + 1), skipped)
        if not items:
            continue
        rows = batch_token_activations(model, hooks, items, image_processor, tokens)
        for hook in hooks:
            per_hook[hook].append(torch.cat(rows[hook]).float().cpu())
        for image_id, image_rows in zip(ids, rows[hooks[0]], strict=True):
            n = image_rows.shape[0]
            index.append(np.stack([np.full(n, image_id), np.arange(n)], axis=1).astype(np.int64))
    return per_hook, index


def cache_activations(
    model: Any,
    hooks: Sequence[str],
    images: Any,
    out_dir: str | Path,
    *,
    tokens: str = "patches",
    dtype: str = "float32",
    images_per_shard: int = 256,
    batch_size: int = 32,
    processor: Any = None,
    resume: bool = True,
    progress: bool = True,
    world: World | None = None,
) -> ActivationCache:
    """Run the tower once over ``images`` and write the chosen tokens of ``hooks`` as shards.

    Memory holds one shard per hook (``images_per_shard`` images' tokens) and one batch of the
    tower, whatever the number of images.

    Args:
        model: A HookedViT or HookedVLM (any family; the geometry picks the tokens).
        hooks: Vision hook names in any convention; stored under their HookedViT names.
        images: An image source, folder, dataset or list (see
            :func:`~vis_steer_lens.image_sources.as_image_source`).
        out_dir: The cache folder (``RUN/activations``).
        tokens: ``"patches"``, ``"prefix"`` (class and register tokens) or ``"all"``.
        dtype: ``"float32"`` or ``"float16"`` on disk.
        images_per_shard: Images per shard (the unit of resuming and of splitting over ranks).
        batch_size: Images per forward pass (batches never cross a shard's edge).
        processor: Image processor for PIL images (default: the model's).
        resume: Keep finished shards of an earlier run with the same settings (refused if they
            differ); ``False`` starts over.
        progress: Show a bar over images.
        world: Ranks to split the shards over (default: the launcher's environment).

    Returns:
        The finished :class:`ActivationCache` (on every rank).

    Raises:
        ActivationCacheError: Bad settings (no hooks, an unknown token selection or dtype).
        vis_steer_lens.hook_names.UnknownHookNameError: A hook the tower does not have.
        ResumeMismatchError: A cache in ``out_dir`` written with other settings.
    """
    if not hooks:
        raise ActivationCacheError("No hook to cache: pass at least one, e.g. blocks.2.hook_resid_post.")
    if tokens not in TOKEN_SELECTIONS:
        raise ActivationCacheError(f"tokens must be one of {TOKEN_SELECTIONS}, got {tokens!r}.")
    if dtype not in CACHE_DTYPES:
        raise ActivationCacheError(f"dtype must be one of {CACHE_DTYPES}, got {dtype!r}.")
    if images_per_shard < 1 or batch_size < 1:
        raise ActivationCacheError(
            f"images_per_shard and batch_size must be >= 1, got {images_per_shard} and {batch_size}."
        )
    world = current_world() if world is None else world
    vit = vision_model(model)
    resolved = list(dict.fromkeys(vit.resolve_hook_name(hook) for hook in hooks))
    source = as_image_source(images)
    if len(source) == 0:
        raise ActivationCacheError("The image source holds no image; caching needs at least one.")
    root = Path(out_dir)
    settings = _settings_of(model, resolved, source, tokens, dtype, images_per_shard, batch_size)
    n_shards = -(-len(source) // images_per_shard)

    manifest_path = root / MANIFEST_FILE
    if manifest_path.is_file():
        before = json.loads(manifest_path.read_text())
        differences = [
            f"{key}: {before.get(key)!r} then, {settings[key]!r} now"
            for key in _RESUME_KEYS
            if before.get(key) != settings[key]
        ]
        if differences and resume:
            raise ResumeMismatchError(
                f"The activation cache in {str(root)!r} was written with other settings "
                f"({'; '.join(differences)}). Use another run folder, or start over (resume=False)."
            )
        if not resume and world.is_main:
            import shutil

            shutil.rmtree(root)
    barrier(world)
    if world.is_main:
        root.mkdir(parents=True, exist_ok=True)
        _write_manifest(root, settings, {})
    barrier(world)

    done = set(_finished_shards(root, resolved, n_shards))
    mine = [shard for shard in range(world.rank, n_shards, world.size) if shard not in done]
    try:
        image_processor = image_processor_of(model, processor)
    except ValueError:
        image_processor = None  # fine for pixel tensors; PIL images then fail with a clear message
    skipped: list[dict[str, Any]] = []
    n_images = sum(min(images_per_shard, len(source) - s * images_per_shard) for s in mine)
    bar = tqdm(total=n_images, unit="img", desc="caching", disable=not (progress and world.is_main))
    start, rows_written = time.perf_counter(), 0
    for shard in mine:
        first = shard * images_per_shard
        block = range(first, min(first + images_per_shard, len(source)))
        per_hook, index = _shard_activations(
            model, resolved, source, block, tokens, batch_size, image_processor, skipped
        )
        np_dtype = np.dtype(dtype)
        for hook in resolved:
            d = settings["d_model"][hook]
            rows = torch.cat(per_hook[hook]).numpy() if per_hook[hook] else np.zeros((0, d), np.float32)
            _save_npy(root / hook / shard_name(shard), rows.astype(np_dtype, copy=False))
        # The index is written last: its presence says the shard is whole.
        index_rows = np.concatenate(index) if index else np.zeros((0, 2), np.int64)
        _save_npy(root / INDEX_DIR / shard_name(shard), index_rows)
        rows_written += index_rows.shape[0]
        del per_hook, index
        if not world.distributed:
            _write_manifest(root, settings, {})
        bar.update(len(block))
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(img_s=f"{bar.n / elapsed:.1f}", rows_s=f"{rows_written / elapsed:.0f}")
    bar.close()
    elapsed = time.perf_counter() - start
    throughput = {
        "images_per_s": n_images / elapsed if elapsed > 0 and n_images else None,
        "rows_per_s": rows_written / elapsed if elapsed > 0 and rows_written else None,
        "seconds": elapsed,
        "images_this_run": n_images,
    }
    if skipped:
        logger.warning("%d image(s) could not be read and were skipped.", len(skipped))
    barrier(world)
    if world.is_main:
        manifest = _write_manifest(
            root, settings, {"throughput": throughput, "skipped_images": skipped[:100]}
        )
        if manifest["rows_done"] == 0:
            raise NoReadableImageError(
                f"No rows were cached from {source.source_id}: none of its images could be read."
            )
    barrier(world)
    return ActivationCache.open(root)


__all__ = [
    "CACHE_DTYPES",
    "ActivationCache",
    "ActivationCacheError",
    "batch_token_activations",
    "cache_activations",
    "shard_name",
    "token_positions",
]
