"""Shared fixtures of the SAE tests: tiny dictionary_learning folders and their reference math."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch


def write_dictionary_learning_folder(
    folder: Path,
    d_in: int = 12,
    d_sae: int = 48,
    k: int = 5,
    layer: int = 16,
    seed: int = 0,
    dict_class: str = "AutoEncoderTopK",
    submodule_name: str | None = None,
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    decoder = torch.randn(d_in, d_sae, generator=generator)
    decoder /= decoder.norm(dim=0, keepdim=True)  # unit-norm columns, as dictionary_learning keeps them
    state = {
        "encoder.weight": torch.randn(d_sae, d_in, generator=generator) * 0.5,
        "encoder.bias": torch.randn(d_sae, generator=generator) * 0.1,
        "decoder.weight": decoder,
        "b_dec": torch.randn(d_in, generator=generator) * 0.3,
        "k": torch.tensor(k, dtype=torch.int64),
        "threshold": torch.tensor(-1.0),
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "ae.pt")
    config = {
        "trainer": {
            "trainer_class": "TopKTrainer",
            "dict_class": dict_class,
            "activation_dim": d_in,
            "dict_size": d_sae,
            "k": k,
            "layer": layer,
            "lm_name": "google/gemma-3-4b-it",
            "submodule_name": submodule_name or f"enc_res_out_layer_{layer}",
        },
        "buffer": {"d_submodule": d_in},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return state


def reference_encode(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """dictionary_learning AutoEncoderTopK.encode: topk(relu(encoder(x - b_dec)), k), scattered back."""
    pre = torch.relu((x - state["b_dec"]) @ state["encoder.weight"].T + state["encoder.bias"])
    values, indices = pre.topk(int(state["k"]), dim=-1)
    return torch.zeros_like(pre).scatter_(-1, indices, values)


def reference_decode(state: dict[str, torch.Tensor], f: torch.Tensor) -> torch.Tensor:
    return f @ state["decoder.weight"].T + state["b_dec"]


@pytest.fixture
def write_dl_folder():
    """Function writing a random dictionary_learning SAE folder; returns its state dict."""
    return write_dictionary_learning_folder


@pytest.fixture
def dl_reference():
    """The dictionary_learning AutoEncoderTopK math: ``.encode(state, x)`` and ``.decode(state, f)``."""
    return SimpleNamespace(encode=reference_encode, decode=reference_decode)
