"""Tiny random Gemma 3 models built in memory; nothing here touches the network."""

from __future__ import annotations

import functools
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


#: Every block's hook names in firing order, pinned for every family (TransformerLens semantics).
PINNED_BLOCK_HOOKS = [
    "hook_resid_pre",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
]


def tiny_gemma3_ids() -> dict[str, int]:
    """Token ids of the tiny Gemma 3 of :func:`vis_steer_lens.testing.tiny_hf_vlm`: image, boi, eoi, bos."""
    return dict(_tiny_gemma3_ids())


@functools.cache
def _tiny_gemma3_ids() -> tuple[tuple[str, int], ...]:
    from vis_steer_lens.testing import tiny_hf_vlm

    config = tiny_hf_vlm("gemma3")[0].config
    ids = {
        "image": config.image_token_id,
        "boi": config.boi_token_index,
        "eoi": config.eoi_token_index,
        "bos": config.text_config.bos_token_id,
    }
    return tuple(ids.items())


def build_tiny_gemma3(seed: int = 0, vision_layers: int = 2):
    """A random tiny ``Gemma3ForConditionalGeneration`` (``vis_steer_lens.testing``), eval mode, float32."""
    from vis_steer_lens.testing import tiny_hf_vlm

    return tiny_hf_vlm("gemma3", seed=seed, vision_layers=vision_layers)[0]


def image_prompt_ids(
    batch: int, mm_tokens: int = 4, text: tuple[int, ...] = (10, 11, 12)
) -> dict[str, torch.Tensor]:
    """Hand-built Gemma 3 inputs: ``<bos> <boi> <image>*mm_tokens <eoi> text``, one image per row."""
    ids = tiny_gemma3_ids()
    row = [ids["bos"], ids["boi"]] + [ids["image"]] * mm_tokens + [ids["eoi"], *text]
    input_ids = torch.tensor([row] * batch)
    input_ids[:, -1] += torch.arange(batch)  # rows differ in their text too
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": (input_ids == ids["image"]).long(),
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


#: Hook of the shared tiny toy VLM + random SAE + mining fixture.
TOY_MINED_HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="session")
def toy_mined():
    """One tiny random toy VLM, a random 10-feature SAE at ``blocks.1.hook_resid_post`` and its
    mined top images (40 toy images, k=4): shared by the explainer, factory and comparison tests."""
    from vis_steer_lens.mining import mine_top_activations
    from vis_steer_lens.toy import ToyImages

    vlm = build_tiny_toy_vlm()
    sae = random_sae(d_in=32, d_sae=10, hook_name=TOY_MINED_HOOK, k=2)
    mined = mine_top_activations(vlm, sae, ToyImages(seed=3, n=40), k=4, batch_size=20, progress=False)
    return vlm, sae, mined


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The main job (`vis-steer-lens demo`) on the shipped toy world, run once per test session."""
    from vis_steer_lens.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["--quiet", "demo", "--out", str(out)]) == 0
    return out
