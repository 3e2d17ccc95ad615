import random

import pytest
import torch

from vis_steer_lens.toy.tasks import sample_example
from vis_steer_lens.toy.tokenizer import (
    BOI_TOKEN,
    EOI_TOKEN,
    IMAGE_TOKEN,
    SPECIAL_TOKENS,
    build_processor,
    build_tokenizer,
    special_token_ids,
)
from vis_steer_lens.toy.world import ToyWorld

MM_TOKENS = 16


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return build_processor(tokenizer, image_size=64, mm_tokens_per_image=MM_TOKENS)


def test_special_token_ids(tokenizer):
    ids = special_token_ids(tokenizer)
    assert ids["pad_token_id"] == 0
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert ids["image_token_id"] == tokenizer.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert ids["boi_token_id"] == tokenizer.boi_token_id == tokenizer.convert_tokens_to_ids(BOI_TOKEN)
    assert ids["eoi_token_id"] == tokenizer.convert_tokens_to_ids(EOI_TOKEN)
    assert tokenizer.convert_ids_to_tokens(ids["newline_id"]) == "\n"
    assert ids["vocab_size"] == len(tokenizer)
    assert len(set(ids.values())) == len(ids)


def test_round_trip_and_no_unk_for_world_texts(tokenizer):
    unk = tokenizer.unk_token_id
    rng = random.Random(0)
    world = ToyWorld(0)
    for _, scene in world.sample(200):
        ids = tokenizer(scene.caption(), add_special_tokens=False).input_ids
        assert unk not in ids
        assert tokenizer.decode(ids) == scene.caption()
    for _ in range(300):
        example = sample_example(rng)
        for message in example.conversation():
            for item in message["content"]:
                if item["type"] == "text":
                    ids = tokenizer(item["text"], add_special_tokens=False).input_ids
                    assert unk not in ids, item["text"]
                    assert tokenizer.decode(ids) == item["text"]
    assert tokenizer("zebra").input_ids[-1] == unk


def test_tokenizer_splits_newlines_punctuation_and_case(tokenizer):
    assert tokenizer.tokenize("Describe the image.\nuser top-left") == [
        "Describe",
        "the",
        "image",
        ".",
        "\n",
        "user",
        "top",
        "-",
        "left",
    ]
    assert tokenizer("a red circle").input_ids[0] == tokenizer.bos_token_id


def _count(ids, token_id):
    return int((ids == token_id).sum())


def test_chat_template_and_processor_outputs(processor, tokenizer):
    example = sample_example(random.Random(1), mix=(0, 0, 1))  # top-k: several images
    n_images = len(example.images)
    out = processor.apply_chat_template(
        example.messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    ids = out["input_ids"][0]
    assert out["pixel_values"].shape == (n_images, 3, 64, 64)
    assert out["pixel_values"].min() >= -1 and out["pixel_values"].max() <= 1
    assert _count(ids, tokenizer.image_token_id) == MM_TOKENS * n_images
    assert _count(ids, tokenizer.boi_token_id) == n_images
    assert _count(ids, tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert torch.equal(out["token_type_ids"][0], (ids == tokenizer.image_token_id).long())
    text = tokenizer.decode(ids)
    assert text.startswith("<bos> <start_of_turn> user")
    assert text.endswith("<end_of_turn> \n <start_of_turn> model \n")

    prompt = processor.apply_chat_template(example.conversation(), tokenize=False)
    assert prompt.startswith("<bos><start_of_turn>user\n<start_of_image>")
    assert prompt.endswith(f"<end_of_turn>\n<start_of_turn>model\n{example.target}<end_of_turn>\n")
    # The templated prompt already starts with <bos>, so the plain call must not add another.
    plain = processor(
        text=[prompt, prompt],
        images=[example.images, example.images],
        add_special_tokens=False,
        return_tensors="pt",
    )
    assert plain["pixel_values"].shape == (2 * n_images, 3, 64, 64)
    assert plain["input_ids"].shape[0] == 2
    assert (plain["input_ids"] == tokenizer.image_token_id).sum(dim=1).tolist() == [MM_TOKENS * n_images] * 2
    assert _count(plain["input_ids"][0], tokenizer.bos_token_id) == 1
    # A plain prompt without the template gets Gemma's leading <bos> from the tokenizer.
    bare = processor(
        text="<start_of_image>Describe the image.", images=[example.images[0]], return_tensors="pt"
    )
    assert bare["input_ids"][0, 0] == tokenizer.bos_token_id
    assert _count(bare["input_ids"][0], tokenizer.image_token_id) == MM_TOKENS
    assert bare["token_type_ids"].sum() == MM_TOKENS


def test_processor_save_load_round_trip_offline(processor, tmp_path, monkeypatch):
    from transformers import AutoProcessor, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "Gemma3Processor"
    assert loaded.image_seq_length == MM_TOKENS
    assert special_token_ids(loaded.tokenizer) == special_token_ids(processor.tokenizer)
    example = sample_example(random.Random(2), mix=(1, 0, 0))
    kwargs = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    before = processor.apply_chat_template(example.messages, **kwargs)
    after = loaded.apply_chat_template(example.messages, **kwargs)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    caption = "a large red striped circle at the top left on a black background"
    assert (
        AutoTokenizer.from_pretrained(tmp_path)(caption).input_ids == processor.tokenizer(caption).input_ids
    )


def test_processor_feeds_a_tiny_gemma3(processor, tokenizer):
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    ids = special_token_ids(tokenizer)
    config = Gemma3Config(
        text_config=Gemma3TextConfig(
            vocab_size=ids["vocab_size"],
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        ),
        vision_config=SiglipVisionConfig(
            image_size=64,
            patch_size=16,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vision_use_head=False,
        ),
        mm_tokens_per_image=MM_TOKENS,
        image_token_id=ids["image_token_id"],
        boi_token_id=ids["boi_token_id"],
        eoi_token_id=ids["eoi_token_id"],
    )
    model = Gemma3ForConditionalGeneration(config).eval()
    example = sample_example(random.Random(4), mix=(0, 0, 1))
    inputs = processor.apply_chat_template(
        example.messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, ids["vocab_size"])
    assert torch.isfinite(logits).all()


def test_build_processor_rejects_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="mm_tokens_per_image"):
        build_processor(tokenizer, mm_tokens_per_image=0)
