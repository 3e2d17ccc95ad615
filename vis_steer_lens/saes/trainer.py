"""Train SAELens SAEs on vision activations with SAELens' own ``SAETrainer``.

Vision activations arrive as a stream of ``[n, d_in]`` tensors (the patch tokens of some
images each). :func:`train_sae_on_activations` re-batches and shuffles them into fixed-size
batches, feeds them to ``sae_lens.SAETrainer`` as its ``data_provider``, and returns the
inference SAE that SAELens itself would save, plus a training log.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any
from unittest import mock

import pandas as pd
import torch
from sae_lens import SAE, SAETrainer
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import SAEMetadata, TrainingSAE, TrainStepOutput
from sae_lens.training import sae_trainer as sae_trainer_module
from tqdm.auto import tqdm

from vis_steer_lens.saes.metadata import set_vision_metadata

#: Architectures :func:`train_sae_on_activations` accepts (SAELens training architecture names).
TRAINABLE_ARCHITECTURES: tuple[str, ...] = ("topk", "batchtopk", "standard")


class ActivationStreamError(ValueError):
    """Activations that cannot be used for training (wrong shape, or too few of them)."""


def rebatch_activations(
    activations: Iterable[torch.Tensor],
    d_in: int,
    batch_size: int,
    *,
    shuffle_buffer_batches: int = 4,
    seed: int = 0,
) -> Iterator[torch.Tensor]:
    """Turn a stream of ``[n, d_in]`` tensors into shuffled ``[batch_size, d_in]`` batches.

    Patch tokens of one image are strongly correlated, so rows are shuffled inside a buffer of
    ``shuffle_buffer_batches`` batches before they are cut into batches. Every batch is full;
    rows left over at the end of the stream are dropped.

    Args:
        activations: Iterable of float tensors ``[n, d_in]`` (any ``n``; ``[..., d_in]`` is
            flattened).
        d_in: Expected last dimension.
        batch_size: Rows per output batch.
        shuffle_buffer_batches: Size of the shuffling buffer, in batches (1 = no mixing across
            batches beyond one batch).
        seed: Seed of the shuffling.

    Yields:
        float tensors ``[batch_size, d_in]``.

    Raises:
        ActivationStreamError: If an item's last dimension is not ``d_in``.
    """
    generator = torch.Generator().manual_seed(seed)
    buffer_rows = batch_size * max(1, shuffle_buffer_batches)
    pending: list[torch.Tensor] = []
    n_pending = 0
    for index, item in enumerate(activations):
        item = torch.as_tensor(item)
        if item.shape[-1] != d_in:
            raise ActivationStreamError(
                f"Activation item {index} has shape {tuple(item.shape)}; expected [n, {d_in}] (d_in={d_in})."
            )
        item = item.detach().reshape(-1, d_in).float()
        pending.append(item)
        n_pending += item.shape[0]
        if n_pending >= buffer_rows:
            rows = torch.cat(pending)
            rows = rows[torch.randperm(rows.shape[0], generator=generator)]
            n_full = rows.shape[0] // batch_size * batch_size
            yield from rows[:n_full].split(batch_size)
            pending, n_pending = [rows[n_full:]], rows.shape[0] - n_full
    if n_pending >= batch_size:
        rows = torch.cat(pending)
        rows = rows[torch.randperm(rows.shape[0], generator=generator)]
        yield from rows[: rows.shape[0] // batch_size * batch_size].split(batch_size)


def _data_provider(
    activations: torch.Tensor | Iterable[torch.Tensor],
    d_in: int,
    batch_size: int,
    total_training_samples: int,
    seed: int,
) -> Iterator[torch.Tensor]:
    """Batches for SAETrainer; re-iterable sources are cycled over epochs, one-shot iterators are not."""
    if isinstance(activations, torch.Tensor):
        source: Iterable[torch.Tensor] = [activations.reshape(-1, activations.shape[-1])]
        reiterable = True
    else:
        source = activations
        reiterable = not isinstance(activations, Iterator)
    n_rows = 0
    epoch = 0
    while True:
        produced = 0
        for batch in rebatch_activations(source, d_in, batch_size, seed=seed + epoch):
            produced += batch.shape[0]
            n_rows += batch.shape[0]
            yield batch
        epoch += 1
        if not reiterable or produced == 0:
            raise ActivationStreamError(
                f"The activation stream ran out after {n_rows} rows, but total_training_samples="
                f"{total_training_samples} (batch_size={batch_size}) were asked for. Pass more "
                "activations, a re-iterable source (a list or a tensor, cycled over epochs), or "
                "lower total_training_samples."
            )


class _LoggingSAETrainer(SAETrainer):
    """SAETrainer that records SAELens' own per-step metrics every ``log_every`` steps, without wandb."""

    def __init__(self, *args: Any, log_every: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_every = max(1, log_every)
        self.log_rows: list[dict[str, Any]] = []

    def step(self, batch: torch.Tensor) -> TrainStepOutput:
        output = super().step(batch)
        # `n_training_steps` still counts the steps before this one here.
        step_number = self.n_training_steps + 1
        is_last = self.n_training_samples >= self.cfg.total_training_samples
        if step_number % self.log_every == 0 or step_number == 1 or is_last:
            metrics = self.build_train_step_log_dict(
                output=output, n_training_samples=self.n_training_samples
            )
            self.log_rows.append({"step": step_number, **metrics})
        return output


def train_sae_on_activations(
    activations: torch.Tensor | Iterable[torch.Tensor],
    d_in: int,
    *,
    architecture: str = "topk",
    d_sae: int,
    k: int | float | None = None,
    total_training_samples: int,
    batch_size: int = 4096,
    lr: float = 3e-4,
    seed: int = 0,
    device: str = "cpu",
    metadata: dict[str, Any] | None = None,
    l1_coefficient: float = 5.0,
    log_every: int = 100,
    lr_warm_up_steps: int = 0,
    dead_feature_window: int = 1000,
    feature_sampling_window: int = 2000,
    progress: bool = True,
    **sae_config: Any,
) -> tuple[SAE, pd.DataFrame]:
    """Train an SAE on a stream of vision activations with ``sae_lens.SAETrainer``.

    Args:
        activations: A tensor ``[n, d_in]``, an iterable of tensors ``[n_i, d_in]`` (e.g. the
            patch tokens of a batch of images each), or a one-shot iterator of them. Lists and
            tensors are cycled over epochs until ``total_training_samples`` rows were seen.
        d_in: Width of the activations.
        architecture: ``"topk"`` (per-token top k), ``"batchtopk"`` (k on average over the batch;
            saved by SAELens as a JumpReLU SAE) or ``"standard"`` (ReLU with an L1 penalty).
        d_sae: Number of features.
        k: Active features per token for ``"topk"`` / ``"batchtopk"`` (required for them).
        total_training_samples: Activation rows to train on.
        batch_size: Rows per optimisation step.
        lr: Adam learning rate.
        seed: Seeds the initialisation and the shuffling.
        device: Training device.
        metadata: ``cfg.metadata`` fields for the SAE, e.g. from
            :func:`vis_steer_lens.saes.vision_sae_metadata`.
        l1_coefficient: Sparsity penalty of the ``"standard"`` architecture.
        log_every: Record the training metrics every this many steps (plus first and last).
        lr_warm_up_steps: Linear learning-rate warm-up.
        dead_feature_window: Steps without firing after which SAELens calls a feature dead
            (it drives the TopK auxiliary loss).
        feature_sampling_window: Steps per firing-frequency window.
        progress: Show SAELens' progress bar (callers with a bar of their own turn it off).
        **sae_config: Further fields of the SAELens training config class (e.g.
            ``aux_loss_coefficient``, ``decoder_init_norm``, ``rescale_acts_by_decoder_norm``).

    Returns:
        ``(sae, log)``: the inference ``sae_lens.SAE`` (a ``TopKSAE``, ``JumpReLUSAE`` or
        ``StandardSAE``, converted exactly as SAELens' ``save_inference_model`` does), and a
        DataFrame with one row per logged step (``step``, ``losses/...``,
        ``metrics/explained_variance``, ``metrics/l0``, ``sparsity/dead_features``, ...).

    Raises:
        ValueError: For an unknown architecture or a missing ``k``.
        ActivationStreamError: If the activations have the wrong width or run out.
    """
    if architecture not in TRAINABLE_ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {architecture!r}; expected one of {list(TRAINABLE_ARCHITECTURES)}."
        )
    arch_fields: dict[str, Any] = {}
    if architecture in ("topk", "batchtopk"):
        if k is None:
            raise ValueError(f"architecture={architecture!r} needs k (active features per token).")
        arch_fields["k"] = k if architecture == "batchtopk" else int(k)
    else:
        arch_fields["l1_coefficient"] = l1_coefficient
    if total_training_samples < batch_size:
        raise ValueError(
            f"total_training_samples={total_training_samples} is below batch_size={batch_size}; "
            "no step would run."
        )

    torch.manual_seed(seed)
    training_cls, training_cfg_cls = get_sae_training_class(architecture)
    cfg = training_cfg_cls(
        d_in=d_in,
        d_sae=d_sae,
        device=device,
        metadata=SAEMetadata(**(metadata or {})),
        **arch_fields,
        **sae_config,
    )
    training_sae: TrainingSAE = training_cls(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=total_training_samples,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr,  # the constant schedule ignores it, but SAETrainer requires it set
        lr_warm_up_steps=lr_warm_up_steps,
        device=device,
        dead_feature_window=dead_feature_window,
        feature_sampling_window=feature_sampling_window,
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),  # never touch wandb or the network
    )
    trainer = _LoggingSAETrainer(
        trainer_cfg,
        training_sae,
        _data_provider(activations, d_in, batch_size, total_training_samples, seed),
        log_every=log_every,
    )
    if progress:
        trainer.fit()
    else:
        # SAETrainer.fit always opens a tqdm bar; silence it through the module's own name.
        with mock.patch.object(sae_trainer_module, "tqdm", functools.partial(tqdm, disable=True)):
            trainer.fit()

    sae = to_inference_sae(trainer.sae, device=device)
    if metadata:
        set_vision_metadata(sae, metadata)
    return sae, pd.DataFrame(trainer.log_rows)


def to_inference_sae(training_sae: TrainingSAE, device: str = "cpu") -> SAE:
    """Convert a SAELens ``TrainingSAE`` to its inference ``SAE``, as SAELens saves it.

    Goes through ``TrainingSAE.save_inference_model`` and ``SAE.load_from_disk`` so that
    every architecture-specific step (decoder-norm folding for TopK, the JumpReLU threshold of
    BatchTopK) is SAELens' own.
    """
    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp, device=device)


@torch.no_grad()
def sae_quality(sae: SAE, activations: torch.Tensor, *, batch_size: int = 8192) -> dict[str, float]:
    """Reconstruction and sparsity of an SAE on a set of activations.

    Args:
        sae: Any SAELens SAE.
        activations: ``[n, d_in]`` (``[..., d_in]`` is flattened).
        batch_size: Rows per forward pass.

    Returns:
        ``explained_variance`` (``1 - ||x - x_hat||^2 / ||x - mean(x)||^2`` over all rows),
        ``mse`` (mean squared error per row, summed over ``d_in``), ``mean_l0`` (active
        features per row), ``dead_fraction`` and ``n_dead`` (features that never fire on these
        activations), ``n_rows``.
    """
    x_all = activations.reshape(-1, activations.shape[-1])
    mean = x_all.double().mean(0)
    squared_error = 0.0
    total_variance = 0.0
    l0_sum = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for x in x_all.split(batch_size):
        x = x.to(device=sae.device, dtype=sae.dtype)
        feature_acts = sae.encode(x)
        x_hat = sae.decode(feature_acts)
        squared_error += (x_hat.double() - x.double()).pow(2).sum().item()
        total_variance += (x.double() - mean.to(x.device)).pow(2).sum().item()
        active = feature_acts != 0
        l0_sum += active.sum().item()
        fired |= active.any(0).cpu()
    n_rows = x_all.shape[0]
    n_dead = int((~fired).sum())
    return {
        "explained_variance": 1.0 - squared_error / total_variance if total_variance > 0 else float("nan"),
        "mse": squared_error / n_rows,
        "mean_l0": l0_sum / n_rows,
        "dead_fraction": n_dead / sae.cfg.d_sae,
        "n_dead": n_dead,
        "n_rows": n_rows,
    }
