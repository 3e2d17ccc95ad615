"""Tiny random Gemma 3 models built in memory; nothing here touches the network."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---- Tests never install anything. transformer-lens 3.9's TransformerBridge runs
# `pip install torchvision` when a checkpoint's processor cannot load, which would swap the
# venv's CPU torch for a CUDA build mid-run. Installs are refused, and the run fails if the
# installed packages changed anyway.
def _installed_packages() -> dict[str, str]:
    from importlib.metadata import distributions

    return {d.metadata["Name"].lower(): d.version for d in distributions() if d.metadata["Name"]}


def _refuse_installs() -> None:
    import subprocess

    def guard(real):
        def call(args, *rest, **kwargs):
            argv = [str(a) for a in (args if isinstance(args, (list, tuple)) else str(args).split())]
            if "pip" in " ".join(argv) and "install" in argv:
                raise RuntimeError(f"tests must not install packages (refused: {' '.join(argv)})")
            return real(args, *rest, **kwargs)

        return call

    for name in ("check_call", "check_output", "run", "call"):
        setattr(subprocess, name, guard(getattr(subprocess, name)))


_PACKAGES_AT_START = _installed_packages()
_refuse_installs()


def pytest_sessionfinish(session, exitstatus):
    changed = {
        name: (_PACKAGES_AT_START.get(name), version)
        for name, version in _installed_packages().items()
        if _PACKAGES_AT_START.get(name) != version
    }
    removed = sorted(set(_PACKAGES_AT_START) - set(_installed_packages()))
    if changed or removed:
        print(f"\nThe test run changed the installed packages: {changed}, removed {removed}.")
        session.exitstatus = 1


IMAGE_TOKEN_ID, BOI_TOKEN_ID, EOI_TOKEN_ID = 299, 297, 298


def tiny_gemma3_config(vision_layers: int = 2, image_size: int = 32, patch_size: int = 8, mm_tokens: int = 4):
    """A Gemma 3 config of the real architecture at toy size (SigLIP 32-wide, Gemma 3 text 32-wide)."""
    from transformers import Gemma3Config

    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,
    )
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=300,
        max_position_embeddings=256,
        sliding_window=64,
    )
    return Gemma3Config(
        vision_config=vision,
        text_config=text,
        mm_tokens_per_image=mm_tokens,
        image_token_index=IMAGE_TOKEN_ID,
        boi_token_index=BOI_TOKEN_ID,
        eoi_token_index=EOI_TOKEN_ID,
    )


def build_tiny_gemma3(seed: int = 0, **config_kwargs):
    """A random tiny ``Gemma3ForConditionalGeneration`` in eval mode, float32."""
    from transformers import Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(tiny_gemma3_config(**config_kwargs)).eval()
    # The projector weight is initialised to zeros, which would hide every vision edit.
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.3)
    return model


def image_prompt_ids(
    batch: int, mm_tokens: int = 4, text: tuple[int, ...] = (10, 11, 12)
) -> dict[str, torch.Tensor]:
    """Hand-built Gemma 3 inputs: ``<bos> <boi> <image>*mm_tokens <eoi> text``, one image per row."""
    row = [2, BOI_TOKEN_ID] + [IMAGE_TOKEN_ID] * mm_tokens + [EOI_TOKEN_ID, *text]
    input_ids = torch.tensor([row] * batch)
    input_ids[:, -1] += torch.arange(batch)  # rows differ in their text too
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": (input_ids == IMAGE_TOKEN_ID).long(),
    }


@pytest.fixture
def tiny_model():
    return build_tiny_gemma3()


@pytest.fixture
def pixels():
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny Gemma 3 saved with ``save_pretrained`` (safetensors) in a temp folder."""
    folder = tmp_path_factory.mktemp("tiny-gemma3")
    build_tiny_gemma3(seed=3).save_pretrained(folder)
    return str(folder)


def build_tiny_toy_vlm(seed: int = 0, vision_layers: int = 2):
    """A random tiny Gemma 3 with the toy world's processor (64x64 images, 16-px patches, word tokenizer).

    Untrained, so its answers are arbitrary but deterministic: enough to test the machinery.
    """
    from vis_steer_lens import HookedVLM
    from vis_steer_lens.toy import build_processor, build_tokenizer
    from vis_steer_lens.toy.model import build_toy_model, toy_model_config

    tokenizer = build_tokenizer()
    config = toy_model_config(
        tokenizer,
        vision_hidden_size=32,
        vision_intermediate_size=64,
        vision_num_hidden_layers=vision_layers,
        text_hidden_size=32,
        text_intermediate_size=64,
        text_num_hidden_layers=1,
        text_head_dim=8,
        text_query_pre_attn_scalar=8,
    )
    model = build_toy_model(config, seed=seed)
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.5)
    return HookedVLM.from_hf(model, processor=build_processor(tokenizer), model_name="tiny-toy")


def random_sae(
    d_in: int, d_sae: int, hook_name: str, k: int = 4, seed: int = 0, model_name: str = "tiny-toy"
):
    """A random SAELens TopK SAE with vision metadata (unit-norm decoder rows)."""
    from sae_lens import TopKSAE, TopKSAEConfig

    from vis_steer_lens.saes import vision_sae_metadata

    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    with torch.no_grad():
        for param in sae.parameters():
            param.normal_(std=0.3)
        sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
    for key, value in vision_sae_metadata(hook_name, model_name).items():
        sae.cfg.metadata[key] = value
    return sae
