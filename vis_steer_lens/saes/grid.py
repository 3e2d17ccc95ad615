"""A grid of SAEs (widths x k) trained in one pass over cached or streamed vision activations.

Every batch of activations is read once and handed to every SAE of the grid by SAELens'
``MultiSAETrainer`` (one ``SAETrainer`` per SAE, each with its own optimiser). The activations
come from an :class:`~vis_steer_lens.saes.cache.ActivationCache` (shards read through memory
maps, shuffled inside a buffer of a few shards, seeded) or straight from the tower.

The first ``n_eval_images`` images are held out: they train no SAE and measure each one
(explained variance, mean L0, dead and dense fractions) and, on a HookedVLM, the language
model's next-token loss on its own greedy descriptions of them with the SAE's reconstruction
spliced in at the hook, against the clean and the zero-ablated activation.

Each SAE is saved as a SAELens folder ``<out_dir>/<architecture>-w<width>-k<k>/``. BatchTopK and
Matryoshka BatchTopK SAEs are saved in SAELens' inference form, a JumpReLU SAE whose threshold is
the trained batch threshold (also recorded as ``cfg.metadata.inference_threshold``).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from sae_lens import SAE
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.training import multi_sae_trainer as multi_sae_trainer_module
from sae_lens.training.multi_sae_trainer import MultiSAETrainer
from tqdm.auto import tqdm

from vis_steer_lens.activations import (
    TOKEN_SELECTIONS,
    batched,
    image_processor_of,
    image_token_activations,
    vision_model,
)
from vis_steer_lens.atomic import atomic_folder, atomic_write_text
from vis_steer_lens.distributed import World, barrier, current_world, shard
from vis_steer_lens.image_sources import as_image_source, open_image_source
from vis_steer_lens.saes.cache import ActivationCache, ActivationCacheError, token_positions
from vis_steer_lens.saes.metadata import set_vision_metadata, tower_sae_metadata
from vis_steer_lens.saes.trainer import ActivationStreamError, sae_quality, to_inference_sae
from vis_steer_lens.store import ResumeMismatchError

#: Grid architectures and their SAELens training architecture names.
GRID_ARCHITECTURES: dict[str, str] = {
    "topk": "topk",
    "batchtopk": "batchtopk",
    "matryoshka": "matryoshka_batchtopk",
}
#: A feature is dense when it fires on more than this fraction of held-out tokens.
DENSE_FIRING_RATE = 0.1
CHECKPOINT_DIR = ".grid-checkpoint"
DESCRIBE_PROMPT = "Describe the image."

logger = logging.getLogger(__name__)


class GridSettingsError(ValueError):
    """Grid settings that cannot train (a width or k that is no positive integer, k above a width)."""


def parse_int_list(text: str | Sequence[int], what: str) -> list[int]:
    """``"256,512"`` (or a list) as positive integers, in the order given, duplicates dropped.

    Raises:
        GridSettingsError: An item that is not an integer >= 1.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    values = []
    for item in items:
        try:
            value = int(str(item).strip())
        except ValueError:
            value = 0
        if value < 1 or str(item).strip() not in (str(value), f"+{value}"):
            raise GridSettingsError(
                f"{what} must be comma-separated integers >= 1 (e.g. 256,512), got {item!r} in {text!r}."
            )
        values.append(value)
    if not values:
        raise GridSettingsError(f"{what} is empty; give at least one integer, e.g. 256.")
    return list(dict.fromkeys(values))


def grid_name(architecture: str, width: int, k: int) -> str:
    """The folder name of one grid point: ``topk-w256-k8``."""
    return f"{architecture}-w{width}-k{k}"


@dataclass
class GridPoint:
    """One SAE of the grid."""

    architecture: str
    width: int
    k: int

    @property
    def name(self) -> str:
        return grid_name(self.architecture, self.width, self.k)


def grid_points(architecture: str, widths: Sequence[int], ks: Sequence[int]) -> list[GridPoint]:
    """Every (width, k) pair, checked.

    Raises:
        GridSettingsError: Unknown architecture, or a k above a width (Matryoshka also needs
            widths of at least 4: its levels are a quarter, a half and the whole dictionary).
    """
    if architecture not in GRID_ARCHITECTURES:
        raise GridSettingsError(
            f"architecture must be one of {', '.join(GRID_ARCHITECTURES)}, got {architecture!r}."
        )
    points = []
    for width, k in itertools.product(widths, ks):
        if k > width:
            raise GridSettingsError(
                f"k={k} is above width={width}: an SAE cannot keep more active features than it has. "
                "Pass --k values no larger than the smallest of --widths."
            )
        if architecture == "matryoshka" and width < 4:
            raise GridSettingsError(
                f"A Matryoshka SAE needs width >= 4 (its levels are w/4, w/2, w), got {width}."
            )
        points.append(GridPoint(architecture, int(width), int(k)))
    return points


@dataclass
class CachedBatches:
    """Training batches ``{hook: [batch_size, d]}`` from a cache: shards in a seeded order per epoch,
    rows shuffled inside a buffer of ``buffer_shards`` shards; the held-out images' rows left out.

    ``rows_read`` and ``shard_reads`` count what was read (every row once per epoch).
    """

    cache: ActivationCache
    hook: str
    batch_size: int
    held_out_images: int
    buffer_shards: int = 4
    seed: int = 0
    device: str = "cpu"
    rows_read: int = 0
    shard_reads: int = 0
    _shards: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._shards = [entry for entry in self.cache.shards if entry["images"][1] > self.held_out_images]
        if self.training_rows() < self.batch_size:
            raise ActivationCacheError(
                f"The cache holds {self.training_rows()} training rows of {self.hook} after the "
                f"{self.held_out_images} held-out images, fewer than one batch ({self.batch_size}); cache "
                "more images (--n-images) or lower the batch size."
            )

    def _rows(self, entry: dict[str, Any]) -> np.ndarray:
        rows = self.cache.rows(self.hook, entry["shard"])
        if entry["images"][0] < self.held_out_images:
            start = int(np.searchsorted(self.cache.index(entry["shard"])[:, 0], self.held_out_images))
            rows = rows[start:]
        return rows

    def training_rows(self) -> int:
        return sum(self._rows(entry).shape[0] for entry in self._shards)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        pending = torch.zeros(0, self.cache.d_model(self.hook))
        for epoch in itertools.count():
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(len(self._shards), generator=generator).tolist()
            for group in batched(order, self.buffer_shards):
                blocks = [pending]
                for position in group:
                    rows = torch.from_numpy(np.array(self._rows(self._shards[position]), dtype=np.float32))
                    self.rows_read += rows.shape[0]
                    self.shard_reads += 1
                    blocks.append(rows)
                rows = torch.cat(blocks)
                rows = rows[torch.randperm(rows.shape[0], generator=generator)]
                n_full = rows.shape[0] // self.batch_size * self.batch_size
                for batch in rows[:n_full].split(self.batch_size):
                    yield {self.hook: batch.to(self.device)}
                pending = rows[n_full:]


def _streamed_batches(
    model: Any,
    hook: str,
    source: Any,
    start: int,
    tokens: str,
    batch_size: int,
    image_batch_size: int,
    image_processor: Any,
    seed: int,
    device: str,
    counter: dict[str, int],
) -> Iterator[dict[str, torch.Tensor]]:
    """Training batches straight from the tower, images ``start..`` read once, in order."""
    from vis_steer_lens.saes.trainer import rebatch_activations

    def activations() -> Iterator[torch.Tensor]:
        for ids in batched(range(start, len(source)), image_batch_size):
            items = [source[i] for i in ids]
            counter["images"] += len(items)
            rows, _ = image_token_activations(model, hook, items, image_processor, tokens)
            yield torch.cat(rows).float().cpu()

    d_in = vision_model(model).hook_width(hook)
    for batch in rebatch_activations(activations(), d_in, batch_size, seed=seed):
        yield {hook: batch.to(device)}
    raise ActivationStreamError(
        f"The images ran out after {counter['images']} training images; pass more images or lower "
        "--training-tokens."
    )


class _CheckpointingTrainer(MultiSAETrainer):
    """MultiSAETrainer that checkpoints every SAE (weights, optimiser, counters) every ``every`` steps
    into ``folder/step-N`` (written under a temporary name, then renamed)."""

    def __init__(self, *args: Any, folder: Path, every: int, settings: dict[str, Any], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.folder, self.every, self.settings = folder, max(1, every), settings

    def _checkpoint_if_needed(self) -> None:
        steps_done = self.n_training_steps + 1  # the coordinator counts this step after the call
        if steps_done % self.every or self.n_training_samples >= self.cfg.total_training_samples:
            return
        tmp = self.folder / f".step-{steps_done}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, trainer in self.trainers.items():
            trainer.save_checkpoint(checkpoint_name=name, base_path=tmp)
        (tmp / "state.json").write_text(json.dumps({"steps": steps_done, "settings": self.settings}))
        tmp.rename(self.folder / f"step-{steps_done}")
        for old in self.folder.glob("step-*"):
            if old.name != f"step-{steps_done}":
                shutil.rmtree(old, ignore_errors=True)

    def resume(self) -> int:
        """Load the latest checkpoint, if any: the steps it had done (0 without one).

        Raises:
            ResumeMismatchError: A checkpoint of other settings.
        """
        found = sorted(self.folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        if not found:
            return 0
        state = json.loads((found[-1] / "state.json").read_text())
        if state["settings"] != self.settings:
            differences = [
                f"{key}: {state['settings'].get(key)!r} then, {value!r} now"
                for key, value in self.settings.items()
                if state["settings"].get(key) != value
            ]
            raise ResumeMismatchError(
                f"The training checkpoint in {str(self.folder)!r} is of other settings ({'; '.join(differences)}); "
                "pass the same settings to resume, or delete it to start over."
            )
        self.load_checkpoint(found[-1])
        steps = int(state["steps"])
        for trainer in self.trainers.values():
            trainer.n_training_steps = steps
        self.n_training_steps = steps
        return steps


@dataclass
class Descriptions:
    """A VLM's greedy descriptions of some images, ready to be scored again under other hooks.

    Attributes:
        inputs: The prompt with the description appended (``input_ids`` ``[batch, prompt + new]``,
            its masks extended), and the images' tower inputs.
        new_tokens: ``[batch, new]`` description tokens.
        counted: ``[batch, new]`` bool: tokens up to and including the first end of the answer.
        prompt_length: Tokens of the prompt.
        geometry: The images' :class:`~vis_steer_lens.geometry.ImageGeometry`.
    """

    inputs: dict[str, torch.Tensor]
    new_tokens: torch.Tensor
    counted: torch.Tensor
    prompt_length: int
    geometry: Any


@torch.no_grad()
def describe_images(
    vlm: Any, images: list[Any], *, max_new_tokens: int = 24, prompt: str = DESCRIBE_PROMPT
) -> Descriptions:
    """The model's own greedy descriptions of ``images`` (clean: no hook active from here)."""
    vit = vision_model(vlm)
    inputs = vlm.prompt_inputs(images, prompt)
    generated = vlm.generate(**inputs, max_new_tokens=max_new_tokens)
    prompt_length = inputs["input_ids"].shape[1]
    new = generated[:, prompt_length:]
    ends = torch.isin(new, torch.tensor(vlm.end_of_answer_ids(), device=new.device))
    # A token counts up to and including the first end of the answer; later ones are padding. An
    # image placeholder the model wrote (a random test model may) ends it too, before that token:
    # a placeholder in the text would ask for an image that is not there.
    placeholders = new == vlm.image_token_id
    counted = ~((ends.cumsum(1) - ends.long()) > 0) & ~(placeholders.cumsum(1) > 0)
    pad_id = vlm.tokenizer.pad_token_id
    new = new.masked_fill(~counted, pad_id if pad_id is not None else vlm.end_of_answer_ids()[0])
    generated = torch.cat([generated[:, :prompt_length], new], dim=1)
    extra_keys = {key: inputs[key] for key in vit.tower_input_keys if key in inputs}
    geometry = vit.image_geometry(inputs["pixel_values"], **extra_keys)
    full = dict(inputs)
    full["input_ids"] = generated
    if "attention_mask" in inputs:
        full["attention_mask"] = torch.cat([inputs["attention_mask"], counted.long()], dim=1)
    for key, value in inputs.items():
        # Per-token type ids (Gemma 3's token_type_ids, Qwen's mm_token_type_ids): 0, text, for the
        # description's tokens.
        if (
            key not in ("input_ids", "attention_mask")
            and torch.is_tensor(value)
            and value.shape
            == (
                new.shape[0],
                prompt_length,
            )
        ):
            full[key] = torch.cat([value, torch.zeros_like(new, dtype=value.dtype)], dim=1)
    return Descriptions(full, new, counted, prompt_length, geometry)


@torch.no_grad()
def loss_recovered(
    vlm: Any,
    sae: SAE,
    hook: str,
    images: list[Any] | Descriptions,
    *,
    tokens: str = "patches",
    max_new_tokens: int = 24,
    prompt: str = DESCRIBE_PROMPT,
) -> dict[str, float]:
    """The language model's next-token loss on its own descriptions, with the SAE spliced in.

    The model describes each image greedily (clean); then the mean cross-entropy of those
    description tokens (up to and including the end of the answer) is measured with the hook's
    selected tokens left as they are (clean), replaced by the SAE's reconstruction (spliced), and
    set to zero (zero-ablated).

    Args:
        vlm: A HookedVLM.
        sae: An SAE reading ``hook``.
        hook: The vision hook.
        images: Held-out images, or their :func:`describe_images` (described once for a grid).
        tokens: The token selection the SAE was trained on; only those tokens are replaced.
        max_new_tokens: Length cap of the descriptions.
        prompt: The instruction.

    Returns:
        ``loss_clean``, ``loss_spliced``, ``loss_zero_ablated``, ``loss_recovered``
        (``(zero - spliced) / (zero - clean)``), ``n_loss_images``, ``n_loss_tokens``.
    """
    hook_name = vision_model(vlm).parse_hook_name(hook)
    described = (
        images
        if isinstance(images, Descriptions)
        else describe_images(vlm, images, max_new_tokens=max_new_tokens, prompt=prompt)
    )
    full, new, counted = described.inputs, described.new_tokens, described.counted
    prompt_length, geometry = described.prompt_length, described.geometry

    def replace(kind: str):
        def edit(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            x = hook_name.flatten(activation)
            flat = x.reshape(-1, x.shape[-1]).clone()
            positions = torch.cat(token_positions(geometry, tokens, flat.device))
            if kind == "zero":
                flat[positions] = 0
            else:
                chosen = flat[positions].to(device=sae.device, dtype=sae.dtype)
                flat[positions] = sae.decode(sae.encode(chosen)).to(flat.dtype).to(flat.device)
            return hook_name.unflatten(flat.reshape(x.shape), activation)

        return edit

    def loss(fwd_hooks: list) -> float:
        with vlm.hooks(fwd_hooks=fwd_hooks):
            logits = vlm(**full)
        predicted = logits[:, prompt_length - 1 : -1].float()
        nll = torch.nn.functional.cross_entropy(predicted.transpose(1, 2), new, reduction="none")
        return float((nll * counted).sum() / counted.sum())

    clean = loss([])
    spliced = loss([(hook_name.name, replace("sae"))])
    zero = loss([(hook_name.name, replace("zero"))])
    gap = zero - clean
    return {
        "loss_clean": clean,
        "loss_spliced": spliced,
        "loss_zero_ablated": zero,
        "loss_recovered": (zero - spliced) / gap if abs(gap) > 1e-12 else float("nan"),
        "n_loss_images": int(new.shape[0]),
        "n_loss_tokens": int(counted.sum()),
    }


@torch.no_grad()
def held_out_report(sae: SAE, activations: torch.Tensor) -> dict[str, float]:
    """:func:`~vis_steer_lens.saes.trainer.sae_quality` plus ``dense_fraction``: the share of
    features firing on more than :data:`DENSE_FIRING_RATE` of the rows."""
    report = sae_quality(sae, activations)
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    for x in activations.split(8192):
        fired += (sae.encode(x.to(device=sae.device, dtype=sae.dtype)) != 0).sum(0).double().cpu()
    report["dense_fraction"] = float(
        (fired / max(1, activations.shape[0]) > DENSE_FIRING_RATE).double().mean()
    )
    return report


def _eval_rows_from_cache(cache: ActivationCache, hook: str, held_out: int) -> torch.Tensor:
    blocks = []
    for entry in cache.shards:
        if entry["images"][0] >= held_out:
            break
        index = cache.index(entry["shard"])
        stop = int(np.searchsorted(index[:, 0], held_out))
        blocks.append(torch.from_numpy(np.array(cache.rows(hook, entry["shard"])[:stop], dtype=np.float32)))
    return torch.cat(blocks) if blocks else torch.zeros(0, cache.d_model(hook))


def train_sae_grid(
    model: Any,
    hook: str,
    out_dir: str | Path,
    *,
    widths: Sequence[int],
    ks: Sequence[int],
    architecture: str = "topk",
    training_tokens: int,
    cache: ActivationCache | str | Path | None = None,
    images: Any = None,
    tokens: str = "patches",
    batch_size: int = 4096,
    image_batch_size: int = 32,
    buffer_shards: int = 4,
    lr: float = 3e-4,
    seed: int = 0,
    n_eval_images: int = 64,
    n_loss_images: int = 8,
    checkpoint_every: int = 200,
    resume: bool = True,
    device: str | None = None,
    processor: Any = None,
    progress: bool = True,
    world: World | None = None,
    stats: dict[str, Any] | None = None,
    **sae_config: Any,
) -> dict[str, SAE]:
    """Train every (width, k) SAE of a grid in one pass and save each as a SAELens folder.

    Args:
        model: The HookedViT / HookedVLM the activations are from (its tower must be the cache's).
        hook: The vision hook (any naming convention).
        out_dir: Where the SAE folders go (``RUN/saes``).
        widths: Dictionary sizes.
        ks: Active features per token (on average over a batch for BatchTopK and Matryoshka).
        architecture: ``"topk"``, ``"batchtopk"`` or ``"matryoshka"`` (Matryoshka BatchTopK with
            levels at a quarter, a half and the whole width).
        training_tokens: Rows each SAE trains on.
        cache: An activation cache (or its folder); ``None`` streams from the tower over ``images``.
        images: The image source when streaming; with a cache, the held-out images for the loss
            (default: the cache's source, reopened from its manifest).
        tokens: Token selection when streaming (a cache has its own).
        batch_size: Rows per optimisation step.
        image_batch_size: Images per tower forward when streaming.
        buffer_shards: Shards shuffled together.
        lr: Adam learning rate.
        seed: Seeds initialisation, shard order and shuffling.
        n_eval_images: The first images of the source, held out for the report.
        n_loss_images: Held-out images whose descriptions measure the loss (HookedVLM only; 0: skip).
        checkpoint_every: Steps between checkpoints of every SAE (``out_dir/.grid-checkpoint``).
        resume: Continue from a checkpoint, and keep SAE folders already written.
        device: Training device (default: the model's).
        processor: Image processor for PIL images (default: the model's).
        progress: Show SAELens' progress bar.
        stats: A dict to fill with what was read: ``"provider"`` (the :class:`CachedBatches`, with
            ``rows_read`` and ``shard_reads``) or ``"counter"`` (``{"images": n}`` when streaming).
        world: Ranks (default: the launcher's). Under a launcher, the ranks split the grid: rank
            ``r`` trains grid points ``r, r + world, ...``, each rank reading the activations itself.
        **sae_config: Further fields of SAELens' training config.

    Returns:
        ``{name: inference SAE}`` for the grid points this rank trained (or found written).

    Raises:
        GridSettingsError: Bad widths, k, or architecture.
        ActivationCacheError: A cache of another model, without the hook, or with too few rows.
    """
    points = grid_points(architecture, list(widths), list(ks))
    if training_tokens < batch_size:
        raise GridSettingsError(
            f"training_tokens={training_tokens} is below the batch size {batch_size}; no step would run."
        )
    world = current_world() if world is None else world
    vit = vision_model(model)
    hook = vit.resolve_hook_name(hook)
    device = device or str(vit.device)
    out = Path(out_dir)
    if isinstance(cache, (str, Path)):
        cache = ActivationCache.open(cache)
    if cache is not None:
        cache.check_hook(hook)
        if cache.manifest["tower_fingerprint"] != vit.tower_fingerprint():
            raise ActivationCacheError(
                f"The activation cache {str(cache.root)!r} was written by another tower "
                f"({cache.manifest['model_name']}, fingerprint {cache.manifest['tower_fingerprint']}) than this "
                f"model's ({vit.cfg.model_name}, {vit.tower_fingerprint()}); cache with this model first."
            )
        tokens = cache.manifest["token_selection"]
    elif tokens not in TOKEN_SELECTIONS:
        raise GridSettingsError(f"tokens must be one of {TOKEN_SELECTIONS}, got {tokens!r}.")
    try:
        image_processor = image_processor_of(model, processor)
    except ValueError:
        image_processor = None

    mine = shard(points, world)
    todo = [p for p in mine if not (resume and (out / p.name / "cfg.json").is_file())]
    source = None
    if images is not None:
        source = as_image_source(images)
    elif cache is not None and n_loss_images and hasattr(model, "generate"):
        try:
            source = open_image_source(cache.manifest["image_source"])
        except ValueError as err:
            logger.warning("The cache's images cannot be reopened (%s); the loss is not measured.", err)
    if cache is None and source is None:
        raise GridSettingsError("Training without a cache streams images: pass images= (or cache first).")

    # Held-out activations: the first n_eval_images images.
    if cache is not None:
        eval_rows = _eval_rows_from_cache(cache, hook, n_eval_images)
        dataset = cache.manifest["source_id"]
    else:
        eval_rows_list = []
        for ids in batched(range(min(n_eval_images, len(source))), image_batch_size):
            rows, _ = image_token_activations(model, hook, [source[i] for i in ids], image_processor, tokens)
            eval_rows_list.append(torch.cat(rows).float().cpu())
        eval_rows = torch.cat(eval_rows_list) if eval_rows_list else torch.zeros(0, vit.hook_width(hook))
        dataset = source.source_id

    settings = {
        "hook": hook,
        "architecture": architecture,
        "names": [p.name for p in todo],
        "training_tokens": int(training_tokens),
        "batch_size": int(batch_size),
        "lr": lr,
        "seed": int(seed),
        "n_eval_images": int(n_eval_images),
        "tower_fingerprint": vit.tower_fingerprint(),
        "data": cache.manifest["source_id"] if cache is not None else source.source_id,
    }
    reads: dict[str, Any] = stats if stats is not None else {}
    if todo:
        training_cls, cfg_cls = get_sae_training_class(GRID_ARCHITECTURES[architecture])
        d_in = vit.hook_width(hook)
        saes = {}
        for point in todo:
            fields: dict[str, Any] = {"k": point.k if architecture != "topk" else int(point.k)}
            if architecture == "matryoshka":
                fields["matryoshka_widths"] = sorted({point.width // 4, point.width // 2}) + [point.width]
            cfg = cfg_cls(d_in=d_in, d_sae=point.width, device=device, **fields, **sae_config)
            # Each SAE's initialisation from the seed alone, whichever others share its pass or rank.
            torch.manual_seed(seed)
            saes[point.name] = training_cls(cfg)
        trainer_cfg = SAETrainerConfig(
            total_training_samples=int(training_tokens),
            train_batch_size_samples=int(batch_size),
            lr=lr,
            lr_end=lr,
            lr_warm_up_steps=0,
            device=device,
            dead_feature_window=1000,
            feature_sampling_window=2000,
            n_checkpoints=0,
            checkpoint_path=None,
            save_final_checkpoint=False,
            logger=LoggingConfig(log_to_wandb=False),
        )
        if cache is not None:
            batches = CachedBatches(cache, hook, batch_size, n_eval_images, buffer_shards, seed, device)
            reads["provider"] = batches
            stream: Iterator[dict[str, torch.Tensor]] = iter(batches)
            if training_tokens > batches.training_rows():
                logger.warning(
                    "training_tokens=%d is more than the cache's %d training rows: the rows are read %.1f times.",
                    training_tokens,
                    batches.training_rows(),
                    training_tokens / batches.training_rows(),
                )
        else:
            counter = {"images": 0}
            reads["counter"] = counter
            stream = _streamed_batches(
                model,
                hook,
                source,
                n_eval_images,
                tokens,
                batch_size,
                image_batch_size,
                image_processor,
                seed,
                device,
                counter,
            )
        folder = out / CHECKPOINT_DIR / (f"rank-{world.rank}" if world.distributed else "all")
        if not resume:
            shutil.rmtree(folder, ignore_errors=True)
        trainer = _CheckpointingTrainer(
            trainer_cfg,
            saes,
            {name: hook for name in saes},
            stream,
            folder=folder,
            every=checkpoint_every,
            settings=settings,
        )
        steps_done = trainer.resume()
        for _ in range(steps_done):  # the same seeded stream, replayed up to the checkpoint
            next(stream)
        if progress:
            trainer.fit()
        else:
            with mock.patch.object(multi_sae_trainer_module, "tqdm", functools.partial(tqdm, disable=True)):
                trainer.fit()

        metadata_base = tower_sae_metadata(vit, hook, dataset_path=dataset, token_selection=tokens)
        loss_images = None
        if source is not None and hasattr(model, "generate") and n_loss_images:
            count = min(n_loss_images, n_eval_images, len(source))
            loss_images = describe_images(model, [source[i] for i in range(count)])
        for point in todo:
            training_sae = trainer.saes[point.name]
            metadata = dict(metadata_base)
            metadata["training_settings"] = {
                "architecture": architecture,
                "width": point.width,
                "k": point.k,
                "training_tokens": int(training_tokens),
                "batch_size": int(batch_size),
                "lr": lr,
                "seed": int(seed),
            }
            if hasattr(training_sae, "topk_threshold"):
                # Saved as a JumpReLU SAE whose threshold is this batch threshold, for every feature.
                metadata["inference_threshold"] = float(training_sae.topk_threshold)
                metadata["inference_form"] = "jumprelu"
            sae = to_inference_sae(training_sae, device=device)
            set_vision_metadata(sae, metadata)
            report: dict[str, Any] = held_out_report(sae, eval_rows) if len(eval_rows) else {}
            report["n_eval_images"] = int(n_eval_images)
            if loss_images is not None:
                report.update(loss_recovered(model, sae, hook, loss_images, tokens=tokens))
            else:
                report["loss_recovered"] = None
                report["loss_skipped"] = (
                    "the model has no language model"
                    if not hasattr(model, "generate")
                    else "no held-out images"
                )
            sae.cfg.metadata.training_report = report
            with atomic_folder(out / point.name) as tmp:
                sae.save_model(str(tmp))
        shutil.rmtree(folder, ignore_errors=True)
    barrier(world)
    if world.is_main:
        summary = {}
        for point in points:
            path = out / point.name / "cfg.json"
            if path.is_file():
                summary[point.name] = json.loads(path.read_text())["metadata"].get("training_report")
        atomic_write_text(out / "grid.json", json.dumps(summary, indent=2))
    trained = {p.name: SAE.load_from_disk(str(out / p.name), device=device) for p in mine}
    return trained


__all__ = [
    "DENSE_FIRING_RATE",
    "GRID_ARCHITECTURES",
    "CachedBatches",
    "GridSettingsError",
    "grid_name",
    "grid_points",
    "held_out_report",
    "Descriptions",
    "describe_images",
    "loss_recovered",
    "parse_int_list",
    "train_sae_grid",
]
