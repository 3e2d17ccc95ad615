"""Training the toy VLM: the loss falls, resuming is exact, the loss mask, the saved folder loads offline."""

from __future__ import annotations

import random

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from vis_steer_lens.toy.model import build_toy_model, toy_model_config
from vis_steer_lens.toy.tasks import describe_example, highlight_example, topk_example
from vis_steer_lens.toy.tokenizer import build_processor, build_tokenizer, special_token_ids
from vis_steer_lens.toy.training import (
    IGNORE_INDEX,
    ToyTrainingConfig,
    answer_mask,
    collate,
    lr_factor,
    train_toy_model,
)

# 2-layer, 32-wide towers: a few hundredths of a second a step.
TINY = {
    "vision_hidden_size": 32,
    "vision_intermediate_size": 64,
    "vision_num_hidden_layers": 2,
    "vision_num_attention_heads": 2,
    "text_hidden_size": 32,
    "text_intermediate_size": 64,
    "text_num_hidden_layers": 2,
    "text_num_attention_heads": 2,
    "text_num_key_value_heads": 1,
    "text_head_dim": 16,
    "text_query_pre_attn_scalar": 16,
}


def tiny_config(**kwargs) -> ToyTrainingConfig:
    defaults = dict(
        seed=0, steps=30, batch_size=16, lr=3e-3, warmup_steps=5, checkpoint_every=10, model_overrides=TINY
    )
    return ToyTrainingConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-run")
    log = train_toy_model(out, tiny_config(), resume=False, progress=False)
    return out, log


def test_loss_falls(tiny_run):
    _, log = tiny_run
    assert list(log["step"]) == list(range(1, 31))
    assert log["loss"].iloc[-5:].mean() < 0.8 * log["loss"].iloc[:3].mean()


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    config = tiny_config(steps=8, checkpoint_every=3)
    straight = train_toy_model(tmp_path / "straight", config, resume=False, progress=False)
    first = train_toy_model(tmp_path / "split", config, resume=False, progress=False, stop_at=5)
    assert list(first["step"]) == [1, 2, 3, 4, 5]
    resumed = train_toy_model(tmp_path / "split", config, resume=True, progress=False)

    columns = ["step", "loss", "lr", "grad_norm"]
    pd.testing.assert_frame_equal(resumed[columns], straight[columns], rtol=0, atol=1e-6)
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "split" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    log = train_toy_model(tmp_path, tiny_config(steps=2), resume=True, progress=False)
    assert list(log["step"]) == [1, 2]
    assert (tmp_path / "checkpoint" / "training_state.pt").exists()
    assert not (tmp_path / "checkpoint.tmp").exists()


def test_loss_mask_covers_only_the_answer():
    processor = build_processor()
    ids = special_token_ids(processor.tokenizer)
    rng = random.Random(0)
    examples = [describe_example(rng), highlight_example(rng), topk_example(rng), describe_example(rng)]
    batch = collate(examples, processor)
    assert batch["labels"].shape == batch["input_ids"].shape
    assert batch["token_type_ids"].sum() == 16 * sum(len(e.images) for e in examples)
    for row, example in enumerate(examples):
        kept = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        answer = processor.tokenizer(example.target, add_special_tokens=False)["input_ids"]
        assert kept == [*answer, ids["end_of_turn_id"]]
        # The kept tokens are one contiguous span ending at the model turn's <end_of_turn>.
        positions = (batch["labels"][row] != IGNORE_INDEX).nonzero().flatten()
        assert positions[-1] - positions[0] + 1 == len(kept)


def test_answer_mask_rejects_rows_without_answer():
    with pytest.raises(ValueError, match="<end_of_turn>"):
        answer_mask(torch.tensor([[2, 4, 5, 9, 4, 10, 9, 11]]), start_of_turn_id=4, end_of_turn_id=5)


def test_saved_folder_loads_with_plain_transformers(tiny_run):
    from transformers import AutoProcessor, Gemma3ForConditionalGeneration

    out, _ = tiny_run
    model = Gemma3ForConditionalGeneration.from_pretrained(out / "model").eval()
    processor = AutoProcessor.from_pretrained(out / "model")
    example = describe_example(random.Random(3))
    processor.tokenizer.padding_side = "left"
    inputs = processor.apply_chat_template(
        [example.messages], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["pixel_values"].shape == (1, 3, 64, 64)
    tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert tokens.shape[1] > inputs["input_ids"].shape[1]
    # Weights on disk are the trained ones, not a re-initialisation.
    fresh = build_toy_model(toy_model_config(build_tokenizer(), **TINY), seed=0)
    assert not torch.equal(
        fresh.model.multi_modal_projector.mm_input_projection_weight,
        model.model.multi_modal_projector.mm_input_projection_weight,
    )


def test_model_config_matches_tokenizer():
    tokenizer = build_tokenizer()
    ids = special_token_ids(tokenizer)
    config = toy_model_config(tokenizer)
    assert config.image_token_id == ids["image_token_id"]
    assert config.text_config.vocab_size == ids["vocab_size"]
    assert config.vision_config.vision_use_head is False
    assert config.mm_tokens_per_image == 16
    model = build_toy_model(config, seed=0)
    assert model.model.multi_modal_projector.mm_input_projection_weight.abs().sum() > 0
    assert model.model.multi_modal_projector.kernel_size == 1
    with pytest.raises(ValueError, match="Unknown override"):
        toy_model_config(tokenizer, hidden_size=4)


def test_config_validation_and_schedule():
    with pytest.raises(ValueError, match="task_mix"):
        ToyTrainingConfig(task_mix=(1.0, -1.0, 0.0))
    with pytest.raises(ValueError, match="steps"):
        ToyTrainingConfig(steps=0)
    config = ToyTrainingConfig(steps=1000, warmup_steps=100)
    assert lr_factor(0, config) == pytest.approx(0.01)
    assert lr_factor(100, config) == pytest.approx(1.0)
    assert lr_factor(1000, config) == pytest.approx(0.1)


def test_init_from_starts_a_fine_tune_from_saved_weights(tiny_run, tmp_path):
    out, _ = tiny_run
    saved = load_file(out / "model" / "model.safetensors")
    # lr 0: the run's first (and only) steps leave the weights where the saved model had them.
    config = tiny_config(steps=1, lr=1e-12, warmup_steps=0, seed=1, init_from=str(out / "model"))
    train_toy_model(tmp_path / "tuned", config, resume=False, progress=False)
    tuned = load_file(tmp_path / "tuned" / "model" / "model.safetensors")
    assert tuned.keys() == saved.keys()
    for name in saved:
        torch.testing.assert_close(tuned[name], saved[name], rtol=0, atol=1e-6, msg=name)
    wider = {**TINY, "text_hidden_size": 64}
    with pytest.raises(ValueError, match="does not fit"):
        train_toy_model(
            tmp_path / "bad",
            tiny_config(steps=1, model_overrides=wider, init_from=str(out / "model")),
            resume=False,
            progress=False,
        )
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        train_toy_model(tmp_path / "bad2", tiny_config(steps=1, init_from=str(tmp_path)), progress=False)
