"""The released architectures at their real widths (``random_vlm``), cut in depth and vocabulary.

Gemma-3-4B: SigLIP at full width on 896-px images (4096 patches, 256 soft tokens), 2 vision
blocks, 1 text layer at 2560 wide, 4096 ids. InternVL3-14B: InternViT at full width on 448-px
images (1024 patches and a class token, 256 soft tokens), 2 vision blocks, 1 text layer at 5120
wide, 4096 ids. Both in float32, against Hugging Face, steered and mined with an SAE of the
paper's shape (8192 features, TopK k = 25) at ``blocks.1.hook_resid_post``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vis_steer_lens import HookedViT, HookedVLM, mine_top_activations
from vis_steer_lens.explain import SteeringExplainer
from vis_steer_lens.families import get_adapter
from vis_steer_lens.testing import (
    fit_token_ids,
    get_builder,
    random_hf_vlm,
    random_sae,
    random_vlm,
    released_models,
)

SHAPE = dict(n_vision_layers=2, n_text_layers=1, vocab_size=4096)
HOOK = "blocks.1.hook_resid_post"
FAMILIES = ["gemma-3-4b", "internvl3-14b"]
# The special tokens of each family's processor, and the config fields that must hold their ids.
SPECIAL_FIELDS = {
    "gemma-3-4b": {
        "image_token_id": "<image_soft_token>",
        "boi_token_id": "<start_of_image>",
        "eoi_token_id": "<end_of_image>",
    },
    "internvl3-14b": {"image_token_id": "<IMG_CONTEXT>"},
}


@pytest.fixture(scope="module", params=FAMILIES)
def real(request):
    """``(name, vlm)``: a HookedVLM over the random release, its processor at the real image size."""
    model, processor = random_hf_vlm(request.param, **SHAPE)
    return request.param, HookedVLM.from_hf(model, processor=processor, model_name=f"random-{request.param}")


@pytest.fixture(scope="module")
def sae(real):
    return random_sae(real[1], HOOK)


def _images(size: int) -> list[Image.Image]:
    noise = (torch.rand(size, size, 3, generator=torch.Generator().manual_seed(0)) * 255).byte()
    return [Image.fromarray(noise.numpy()), Image.new("RGB", (size, size), (30, 160, 90))]


@pytest.fixture(scope="module")
def encoded(real):
    """Two images' prompt inputs, the hooked tower's output on them ``[2, tokens, d_vision]`` and
    its activations at the SAE's hook (the same shape)."""
    _, vlm = real
    inputs = vlm.prompt_inputs(_images(vlm.vision.cfg.image_size), "What is in the image?")
    with torch.no_grad():
        out, cache = vlm.vision.run_with_cache(inputs["pixel_values"], names_filter=HOOK)
    return inputs, out, cache[HOOK]


def _assert_released_values(config, released: dict, skip=("num_hidden_layers", "vocab_size")) -> None:
    """Every field of the released configuration, except those cut, is the model's."""
    for key, value in released.items():
        if isinstance(value, dict) and key.endswith("_config"):
            _assert_released_values(getattr(config, key), value, skip)
        elif key not in skip and not key.endswith("token_id") and not key.endswith("token_index"):
            got = getattr(config, key)
            got = list(got) if isinstance(got, tuple) else got
            assert got == value, (key, got, value)


def test_released_configuration_and_processor(real):
    name, vlm = real
    builder = get_builder(vlm.adapter.name)
    config = vlm.hf_model.config
    released = builder.released_config(name)
    _assert_released_values(config, released)
    assert config.vision_config.num_hidden_layers == 2 and config.text_config.num_hidden_layers == 1
    assert config.text_config.vocab_size == 4096
    # The special tokens moved into the 4096 ids together, in the tokenizer and the config alike.
    tokenizer = vlm.processor.tokenizer
    ids = fit_token_ids(builder.released_token_ids, 4096)
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in ids} == ids
    for field, token in SPECIAL_FIELDS[name].items():
        assert getattr(config, field) == ids[token] == tokenizer.convert_tokens_to_ids(token)
    assert len(tokenizer) == 4096
    # One image at the real size: 256 soft tokens (Gemma: 4096 patches pooled 4x4; InternVL: one
    # 448-px tile, 1024 patches pixel-shuffled 2x2), in the family's chat structure.
    size = vlm.vision.cfg.image_size
    inputs = vlm.prompt_inputs([Image.new("RGB", (size, size))], "What is in the image?")
    assert inputs["pixel_values"].shape == (1, 3, size, size)
    assert int((inputs["input_ids"] == vlm.image_token_id).sum()) == 256
    text = tokenizer.decode(inputs["input_ids"][0])
    if name.startswith("gemma"):
        assert text.startswith("<bos> <start_of_turn> user")
        assert "<start_of_image> <image_soft_token>" in text and "<image_soft_token> <end_of_image>" in text
        assert text.endswith("<end_of_turn> \n <start_of_turn> model \n")
    else:
        assert text.startswith("<|im_start|> user \n <img> <IMG_CONTEXT>")
        assert "<IMG_CONTEXT> </img>" in text
        assert text.endswith("<|im_end|> \n <|im_start|> assistant \n")


def test_hooked_vit_equals_hugging_face_at_real_width(real, encoded):
    name, vlm = real
    inputs, ours, _ = encoded
    with torch.no_grad():
        theirs = vlm.adapter.tower(vlm.hf_model)(pixel_values=inputs["pixel_values"]).last_hidden_state
    diff = float((ours - theirs).abs().max())
    print(f"{name}: HookedViT vs transformers, max abs diff {diff:.3g} over {tuple(ours.shape)}")
    assert ours.shape == (2, vlm.vision.cfg.n_tokens, vlm.vision.cfg.d_model)
    assert diff <= 1e-4


def test_greedy_answers_depend_on_the_image(real, encoded):
    _, vlm = real
    inputs, vision_out, _ = encoded
    text_inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
    with torch.no_grad():
        features = vlm.projector(vision_out)
        tokens = vlm.generate(**text_inputs, image_features=features, max_new_tokens=3)
    answers = tokens[:, text_inputs["input_ids"].shape[1] :]
    assert not torch.equal(answers[0], answers[1]), answers  # a model that ignores the image answers alike


def test_steered_answers_differ_across_features(real, sae):
    _, vlm = real
    explainer = SteeringExplainer(
        vlm, sae, coefficient=100.0, max_new_tokens=3, batch_size=3, stop_at_sentence_end=False
    )
    frame = explainer.explain([0, 1, 2], progress=False)
    assert len(frame) == 3
    # A model that ignores the image (or a steering edit that does not reach the answer) fails this.
    assert frame["raw_generation"].nunique() == 3, frame["raw_generation"].tolist()


def test_mining_an_8192_feature_sae_at_real_width(real, sae, encoded):
    _, vlm = real
    inputs, _, acts = encoded
    images = list(inputs["pixel_values"])  # [3, H, W] pixel tensors, mined as they are
    mined = mine_top_activations(vlm, sae, images, k=2, batch_size=2, rank_by="mean", progress=False)
    n_patches = vlm.vision.cfg.n_patches
    assert mined.top_maps.shape == (8192, 2, n_patches) and mined.images_processed == 2
    # A feature's kept maps are its SAE activations on those images (mean over patches as score).
    with torch.no_grad():
        codes = sae.encode(acts[:, vlm.vision.cfg.n_prefix_tokens :])  # [2, patches, 8192]
    both = ((codes > 0).any(dim=1).all(dim=0)).nonzero().flatten()
    for feature in [int(mined.fire_images.argmax()), *both[:2].tolist()]:
        kept = mined.top_images(feature)
        assert len(kept) == 2
        for image_id, score, activation_map in kept:
            assert torch.allclose(activation_map.flatten(), codes[image_id, :, feature], atol=1e-4)
            assert score == pytest.approx(float(codes[image_id, :, feature].mean()), abs=1e-5)


@pytest.mark.parametrize("name", ["gemma-3-12b", "gemma-3-27b"])
def test_larger_gemmas_build_with_the_released_widths(name):
    vlm = random_vlm(name, n_vision_layers=1, n_text_layers=1, vocab_size=1024, dtype=torch.bfloat16)
    config = vlm.hf_model.config
    released = get_builder(vlm.adapter.name).released_config(name)
    _assert_released_values(config, released)
    text = released["text_config"]
    layer = vlm.hf_model.model.language_model.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (
        text["num_attention_heads"] * text["head_dim"],
        text["hidden_size"],
    )
    assert layer.self_attn.k_proj.weight.shape[0] == text["num_key_value_heads"] * text["head_dim"]
    assert layer.mlp.gate_proj.weight.shape == (text["intermediate_size"], text["hidden_size"])
    assert layer.self_attn.scaling == text["query_pre_attn_scalar"] ** -0.5
    assert {p.dtype for p in vlm.hf_model.parameters()} == {torch.bfloat16}
    assert vlm.vision.cfg.d_model == 1152 and vlm.vision.cfg.n_patches == 4096


def test_released_models_and_token_fitting():
    assert released_models() == {
        "gemma-3-4b": "gemma3",
        "gemma-3-12b": "gemma3",
        "gemma-3-27b": "gemma3",
        "internvl3-14b": "internvl3",
        "qwen2.5-vl-3b": "qwen2_5_vl",
        "qwen2.5-vl-7b": "qwen2_5_vl",
        "llava-1.5-7b": "llava",
        "paligemma2-3b-448": "paligemma",
        "llava-v1.6-mistral-7b": "llava_next",
        "llava-onevision-7b": "llava_onevision",
    }
    gemma = {"<pad>": 0, "<start_of_turn>": 105, "<start_of_image>": 255_999, "<image_soft_token>": 262_144}
    assert fit_token_ids(gemma, 262_208) == gemma
    assert fit_token_ids(gemma, 4096) == {
        "<pad>": 0,
        "<start_of_turn>": 105,
        "<start_of_image>": 4094,
        "<image_soft_token>": 4095,
    }
    # Ids that stay are never taken by ones that move.
    assert fit_token_ids({"a": 7, "b": 9, "c": 20}, 8) == {"a": 7, "b": 5, "c": 6}
    with pytest.raises(ValueError, match="random_vlm builds"):
        random_vlm("gemma-3-1b")


def _shards_read(monkeypatch) -> set[str]:
    """Record the safetensors files the checkpoint reader opens."""
    from vis_steer_lens.adapters import checkpoints

    opened: set[str] = set()
    real_open = checkpoints.safe_open

    def recording(path, *args, **kwargs):
        opened.add(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "safe_open", recording)
    return opened


@pytest.mark.parametrize("name", ["gemma-3-4b", pytest.param("internvl3-14b", marks=pytest.mark.slow)])
def test_saved_random_release_loads_everywhere(name, tmp_path, monkeypatch):
    from transformers import AutoModelForImageTextToText

    shape = dict(n_vision_layers=2, n_text_layers=1, vocab_size=1024)
    model, processor = random_hf_vlm(
        name, **shape, dtype=torch.bfloat16, save_to=tmp_path, max_shard_size="20MB"
    )
    weight_map = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    adapter = get_adapter(released_models()[name])
    vision_shards = {shard for key, shard in weight_map.items() if key.startswith(adapter.vision_prefixes)}
    text_shards = set(weight_map.values()) - vision_shards
    assert len(vision_shards) >= 2 and len(text_shards) >= 2  # several shards of each

    opened = _shards_read(monkeypatch)
    vit = HookedViT.from_pretrained(str(tmp_path))
    assert opened == vision_shards  # only the shards that hold vision weights are read
    expected = dict(adapter.tower(model).state_dict())
    assert all(torch.equal(value, expected[key]) for key, value in vit.hf_tower.state_dict().items())

    vlm = HookedVLM.from_pretrained(str(tmp_path))
    size = vlm.vision.cfg.image_size
    inputs = vlm.prompt_inputs([Image.new("RGB", (size, size))], "What is in the image?")
    assert int((inputs["input_ids"] == vlm.image_token_id).sum()) == 256
    assert vlm.dtype == torch.bfloat16

    plain = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(plain) is type(model)
    state = model.state_dict()
    assert all(torch.equal(value, state[key].to(value.dtype)) for key, value in plain.state_dict().items())


@pytest.mark.slow
def test_building_in_bfloat16_holds_one_bfloat16_copy():
    """Gemma 3 4B's full-vocabulary embedding (262,208 x 2560) and two text layers, built in bfloat16:
    the peak memory of building is one bfloat16 copy of the weights plus one embedding-sized
    transient (transformers makes the output layer before tying it to the embedding) and the
    262,208-word tokenizer; a float32 build first would add 2x the weights."""
    code = (
        "import json, torch\n"
        "from vis_steer_lens.memory import peak_rss_bytes\n"
        "from vis_steer_lens.testing import random_hf_vlm\n"
        "before = peak_rss_bytes(reset=True)\n"
        "model, _ = random_hf_vlm('gemma-3-4b', n_vision_layers=1, n_text_layers=2, dtype=torch.bfloat16)\n"
        "weights = sum(p.numel() * p.element_size() for p in model.parameters())\n"
        "embedding = model.get_input_embeddings().weight\n"
        "embedding = embedding.numel() * embedding.element_size()\n"
        "print(json.dumps({'growth': peak_rss_bytes() - before, 'weights': weights, 'embedding': embedding}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    gib = 2**30
    print(
        f"building: peak growth {row['growth'] / gib:.2f} GiB, weights {row['weights'] / gib:.2f} GiB, "
        f"of which the embedding {row['embedding'] / gib:.2f} GiB"
    )
    assert row["weights"] > 1.5 * gib
    assert row["growth"] <= row["weights"] + row["embedding"] + 0.5 * gib


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_mining_memory_at_real_shape(name):
    """Mining an 8192-feature SAE at the last block of the real-width tower (batch 1, top 5): what
    the SAE's width adds to the peak memory (the same run with a 32-feature SAE subtracted) is at
    most 1.5x the top-k store it keeps plus a few of the SAE's encoding chunks (the fixed working
    memory of one image's codes, which weighs more beside InternVL's 1024-patch store)."""
    from vis_steer_lens.mining import ENCODE_CHUNK_ELEMENTS

    # The benchmark's own measurement, one configuration per fresh process.
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "mining_memory.py"

    def probe(d_sae: int) -> dict:
        command = [sys.executable, str(script), "--one", str(d_sae), "1", "5", "2", "--model", name]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    wide, narrow = probe(8192), probe(32)
    cost, store = wide["growth"] - narrow["growth"], wide["store"]
    allowance = 4 * ENCODE_CHUNK_ELEMENTS * 4
    print(
        f"{name}: mining peak growth {wide['growth'] / 2**20:.0f} MiB, width cost {cost / 2**20:.0f} MiB, "
        f"store {store / 2**20:.0f} MiB ({cost / store:.2f}x), bound {(1.5 * store + allowance) / 2**20:.0f} MiB"
    )
    patches = 4096 if name.startswith("gemma") else 1024
    assert store == 8192 * 5 * patches * 4 + 8192 * 5 * (4 + 8)
    assert cost <= 1.5 * store + allowance
