"""Train the toy vision-language model from scratch on examples generated on the fly.

Each step draws its batch from a random stream seeded by (seed, step), so a resumed run sees exactly the
data an uninterrupted run would. Checkpoints hold the weights, optimizer, scheduler, RNG states and loss log
and are swapped in atomically, so a crash at any moment leaves a usable checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import Gemma3ForConditionalGeneration, Gemma3Processor

from vis_steer_lens.toy.model import build_toy_model, toy_model_config
from vis_steer_lens.toy.tasks import Example, sample_example
from vis_steer_lens.toy.tokenizer import build_processor, build_tokenizer, special_token_ids
from vis_steer_lens.toy.world import ToyWorld

IGNORE_INDEX = -100
CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"
_STATE_FILE = "training_state.pt"
_LOG_FILE = "loss_log.csv"
_CONFIG_FILE = "training_config.json"


@dataclass
class ToyTrainingConfig:
    """Hyperparameters of a toy training run (defaults: prototype round 4).

    Attributes:
        seed: Seed of the weight initialisation and of the data stream.
        steps: Optimizer steps in total (the cosine schedule spans them).
        batch_size: Examples per step.
        lr: Peak learning rate of AdamW.
        warmup_steps: Linear warm-up steps from 0 to `lr`.
        min_lr_ratio: The cosine decays to `lr * min_lr_ratio` at `steps`.
        weight_decay: AdamW weight decay.
        grad_clip: Maximum global gradient norm.
        checkpoint_every: Steps between checkpoints (a checkpoint is also written at the end).
        task_mix: Weights of the describe / highlight / top-k tasks.
        model_overrides: Passed to `toy_model_config` (e.g. `{"text_hidden_size": 32}`).
        threads: `torch.set_num_threads` value.
        max_minutes: Wall-time budget of this call; training stops cleanly (checkpointed) once it is
            spent. None for no budget.
        init_from: A toy model folder (``save_pretrained`` layout) whose weights start the run, for
            fine-tuning a trained model on a changed task mix; None starts from random weights.
            Optimizer and schedule start fresh either way.
    """

    seed: int = 0
    steps: int = 2500
    batch_size: int = 64
    lr: float = 1.5e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    task_mix: tuple[float, float, float] = (0.4, 0.35, 0.25)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    threads: int = 2
    max_minutes: float | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        self.task_mix = tuple(float(w) for w in self.task_mix)  # type: ignore[assignment]
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "checkpoint_every": self.checkpoint_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {self.warmup_steps}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}.")
        if len(self.task_mix) != 3 or min(self.task_mix) < 0 or sum(self.task_mix) <= 0:
            raise ValueError(
                f"task_mix must be 3 non-negative weights with a positive sum, got {self.task_mix}."
            )
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the config."""
        data = dataclasses.asdict(self)
        data["task_mix"] = list(self.task_mix)
        return data


def lr_factor(step: int, config: ToyTrainingConfig) -> float:
    """Learning-rate multiplier at `step`: linear warm-up, then cosine from 1 to `min_lr_ratio`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def step_rng(seed: int, step: int) -> random.Random:
    """The data stream of one step, a function of (seed, step) only."""
    return random.Random(seed * 1_000_003 + step)


def step_examples(config: ToyTrainingConfig, step: int, world: ToyWorld | None = None) -> list[Example]:
    """The `config.batch_size` examples of training step `step`."""
    rng = step_rng(config.seed, step)
    world = world or ToyWorld(config.seed)
    return [sample_example(rng, config.task_mix, world) for _ in range(config.batch_size)]


def answer_mask(input_ids: torch.Tensor, start_of_turn_id: int, end_of_turn_id: int) -> torch.Tensor:
    """Boolean mask of the answer tokens and the `<end_of_turn>` that closes them.

    Rows are chat-templated conversations ending with one model turn, right-padded:
    `... <start_of_turn> model \\n ANSWER <end_of_turn> \\n <pad>...`. The answer starts three tokens after
    the row's last `<start_of_turn>`; the newline after `<end_of_turn>` and the padding are left out.

    Args:
        input_ids: [batch, seq] token ids.
        start_of_turn_id: Id of `<start_of_turn>`.
        end_of_turn_id: Id of `<end_of_turn>`.

    Returns:
        [batch, seq] bool.

    Raises:
        ValueError: If a row lacks a model turn closed by `<end_of_turn>`.
    """
    batch, seq = input_ids.shape
    positions = torch.arange(seq).expand(batch, seq)
    is_start = input_ids == start_of_turn_id
    if not bool(is_start.any(dim=1).all()):
        raise ValueError("Every row needs a <start_of_turn> opening the model's answer.")
    last_start = torch.where(is_start, positions, -1).max(dim=1).values
    answer_start = last_start + 3
    is_end = (input_ids == end_of_turn_id) & (positions >= answer_start[:, None])
    if not bool(is_end.any(dim=1).all()):
        raise ValueError("Every answer must be closed by <end_of_turn>.")
    answer_end = torch.where(is_end, positions, seq).min(dim=1).values
    return (positions >= answer_start[:, None]) & (positions <= answer_end[:, None])


def collate(examples: Sequence[Example], processor: Gemma3Processor) -> dict[str, torch.Tensor]:
    """Tokenise conversations (prompt + answer) into a right-padded training batch.

    Returns:
        `input_ids`, `attention_mask`, `token_type_ids` (1 on image soft tokens), `labels` ([batch, seq],
        -100 outside the answer) and `pixel_values` [n_images, 3, 64, 64].
    """
    processor.tokenizer.padding_side = "right"
    batch = processor.apply_chat_template(
        [example.conversation() for example in examples],
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        padding=True,
    )
    ids = special_token_ids(processor.tokenizer)
    mask = answer_mask(batch["input_ids"], ids["start_of_turn_id"], ids["end_of_turn_id"])
    labels = torch.where(mask, batch["input_ids"], IGNORE_INDEX)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "token_type_ids": batch["token_type_ids"],
        "pixel_values": batch["pixel_values"],
        "labels": labels,
    }


def batch_loss(model: Gemma3ForConditionalGeneration, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens of a batch from `collate`."""
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        pixel_values=batch["pixel_values"],
    ).logits
    # Position t predicts token t + 1.
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def _save_checkpoint(
    out_dir: Path,
    model: Gemma3ForConditionalGeneration,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    log: list[dict[str, float]],
    config: ToyTrainingConfig,
) -> None:
    """Write `out_dir/checkpoint/` atomically: build it aside, then swap it in with renames."""
    final = out_dir / CHECKPOINT_DIR
    tmp = out_dir / f"{CHECKPOINT_DIR}.tmp"
    old = out_dir / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
        },
        tmp / _STATE_FILE,
    )
    pd.DataFrame(log, columns=_LOG_COLUMNS).to_csv(tmp / _LOG_FILE, index=False, float_format="%.9g")
    (tmp / _CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _find_checkpoint(out_dir: Path) -> Path | None:
    # A crash between the two renames leaves only the `.old` copy, which is complete.
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        folder = out_dir / name
        if (folder / _STATE_FILE).exists():
            return folder
    return None


_LOG_COLUMNS = ["step", "loss", "lr", "grad_norm", "seconds"]


def _load_weights(model: Gemma3ForConditionalGeneration, folder: str | Path) -> None:
    """Copy a saved toy model's weights (a checkpoint or an ``init_from`` folder) into ``model``;
    the two must have the same architecture."""
    if not (Path(folder) / "config.json").exists():
        raise FileNotFoundError(f"{str(folder)!r} is not a model folder (no config.json).")
    # from_pretrained maps the saved (checkpoint-format) names back onto the module tree.
    saved = Gemma3ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    ours, theirs = model.state_dict(), saved.state_dict()
    mismatched = sorted(name for name in ours if name not in theirs or theirs[name].shape != ours[name].shape)
    if mismatched:
        raise ValueError(
            f"{str(folder)!r} does not fit this run's model ({len(mismatched)} weights differ, "
            f"e.g. {mismatched[:3]}); use a folder written by the same toy configuration."
        )
    model.load_state_dict(theirs)


def save_model_folder(
    folder: str | Path, model: Gemma3ForConditionalGeneration, processor: Gemma3Processor
) -> Path:
    """Save model (safetensors) and processor in one folder, loadable by `from_pretrained` offline."""
    from vis_steer_lens.atomic import atomic_folder

    folder = Path(folder)
    with atomic_folder(folder) as tmp:  # written whole, then moved in: a kill leaves the last model
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return folder


def train_toy_model(
    out_dir: str | Path,
    config: ToyTrainingConfig | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
) -> pd.DataFrame:
    """Train the toy model; write checkpoints to `out_dir/checkpoint/` and the result to `out_dir/model/`.

    Args:
        out_dir: Run folder.
        config: Hyperparameters; `ToyTrainingConfig()` if None.
        resume: Continue from `out_dir/checkpoint/` if one exists (same weights, optimizer, scheduler and
            data stream as an uninterrupted run). A larger `config.steps` than the checkpoint's extends
            the run (the cosine schedule is recomputed for the new length).
        progress: Show a tqdm bar with the loss.
        stop_at: Stop (checkpointed) once this step is reached, as if interrupted there; a later call
            with `resume=True` continues the same run. None runs to `config.steps`.

    Returns:
        Loss log with columns step, loss, lr, grad_norm, seconds (wall time of the step), one row per step
        done so far (resumed steps included).
    """
    config = config or ToyTrainingConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model_config = toy_model_config(tokenizer, **config.model_overrides)
    model = build_toy_model(model_config, seed=config.seed)
    world = ToyWorld(config.seed)

    # No weight decay on norms and biases, as usual for transformers.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))

    start_step = 0
    log: list[dict[str, float]] = []
    checkpoint = _find_checkpoint(out_dir) if resume else None
    if checkpoint is None and config.init_from is not None:
        _load_weights(model, config.init_from)
    if checkpoint is not None:
        _load_weights(model, checkpoint)
        state = torch.load(checkpoint / _STATE_FILE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_step = int(state["step"])
        log = pd.read_csv(checkpoint / _LOG_FILE).to_dict("records")
        if start_step > config.steps:
            raise ValueError(f"Checkpoint is at step {start_step}, beyond config.steps={config.steps}.")
        # The scheduler's lambda is the new config's, so reset the lr to this step's value.
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base * lr_factor(start_step, config)

    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start_step, desc="toy VLM", dynamic_ncols=True)
    began = time.monotonic()
    step = start_step
    last_saved = start_step
    end = config.steps if stop_at is None else min(config.steps, stop_at)
    while step < end:
        if config.max_minutes is not None and time.monotonic() - began > 60 * config.max_minutes:
            break
        tick = time.perf_counter()
        batch = collate(step_examples(config, step, world), processor)
        loss = batch_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        log.append(
            {
                "step": step,
                "loss": float(loss.detach()),
                "lr": lr,
                "grad_norm": float(grad_norm),
                "seconds": time.perf_counter() - tick,
            }
        )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{log[-1]['loss']:.4f}", lr=f"{lr:.2e}")
        if step % config.checkpoint_every == 0:
            _save_checkpoint(out_dir, model, optimizer, scheduler, step, log, config)
            last_saved = step
    if bar is not None:
        bar.close()
    if last_saved != step or _find_checkpoint(out_dir) is None:
        _save_checkpoint(out_dir, model, optimizer, scheduler, step, log, config)
    save_model_folder(out_dir / MODEL_DIR, model.eval(), processor)
    return pd.DataFrame(log, columns=_LOG_COLUMNS)


__all__ = [
    "IGNORE_INDEX",
    "ToyTrainingConfig",
    "answer_mask",
    "batch_loss",
    "collate",
    "lr_factor",
    "save_model_folder",
    "step_examples",
    "step_rng",
    "train_toy_model",
]
