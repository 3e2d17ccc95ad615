"""Probes for what the toy vision tower encodes where: is shape in one patch, or spread over a window?

Single-object scenes; the probe reads the activation at a hook on the object's own patch, or on
the 3x3 window of patches around it (zero-padded at the border), and predicts the object's
shape (or any other category). Linear (softmax regression) and MLP probes, trained on one set
of scenes and scored on another.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from vis_steer_lens.activations import hook_activations, to_pixel_values
from vis_steer_lens.toy.world import CATEGORIES, GRID_SIZE, ToyWorld, render


def _single_object_data(vlm: Any, hook_name: str, n: int, seed: int, category: str, batch_size: int = 256):
    world = ToyWorld(seed)
    rng = random.Random(seed)
    labels, own, window = [], [], []
    values = CATEGORIES[category]
    image_processor = vlm.processor.image_processor
    for start in range(0, n, batch_size):
        scenes = [world.sample_scene(num_objects=1, rng=rng) for _ in range(min(batch_size, n - start))]
        acts = hook_activations(vlm, hook_name, to_pixel_values([render(s) for s in scenes], image_processor))
        acts = acts.flatten(2) if acts.ndim == 4 else acts  # [batch, patches, d]
        grid = acts.reshape(acts.shape[0], GRID_SIZE, GRID_SIZE, -1)
        padded = F.pad(grid.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)  # zero border
        for i, scene in enumerate(scenes):
            obj = scene.objects[0]
            row, col = obj.row_col
            own.append(grid[i, row, col])
            window.append(padded[i, row : row + 3, col : col + 3].reshape(-1))
            attribute = obj.attributes()[category] if category != "background" else scene.background
            labels.append(values.index(attribute))
    return torch.stack(own).float(), torch.stack(window).float(), torch.tensor(labels)


def _fit_probe(
    x_train, y_train, x_test, y_test, n_classes: int, hidden: int | None, seed: int, epochs: int = 300
):
    torch.manual_seed(seed)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    layers: list[torch.nn.Module] = (
        [torch.nn.Linear(x_train.shape[1], n_classes)]
        if hidden is None
        else [torch.nn.Linear(x_train.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, n_classes)]
    )
    probe = torch.nn.Sequential(*layers)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=3e-3, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(epochs):
            optimizer.zero_grad()
            F.cross_entropy(probe(x_train), y_train).backward()
            optimizer.step()
    with torch.no_grad():
        return float((probe(x_test).argmax(-1) == y_test).float().mean())


def probe_accuracy(
    vlm: Any,
    hook_name: str,
    category: str = "shape",
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 0,
    mlp_hidden: int = 256,
) -> pd.DataFrame:
    """Test accuracy of probes predicting one object's ``category`` from a hook's activations.

    Args:
        vlm: A HookedVLM (or HookedViT with a ``processor``) on the toy world.
        hook_name: Vision hook to read.
        category: ``"shape"``, ``"color"``, ``"texture"``, ``"size"``, ...
        n_train: Training scenes (one object each).
        n_test: Held-out scenes.
        seed: Seeds scenes and probes.
        mlp_hidden: Hidden width of the MLP probe.

    Returns:
        Rows for (own patch, 3x3 window) x (linear, MLP): ``hook``, ``category``, ``input``,
        ``probe``, ``accuracy``, ``chance``.
    """
    if category not in CATEGORIES:
        raise ValueError(f"Unknown category {category!r}; expected one of {sorted(CATEGORIES)}.")
    if min(n_train, n_test) < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}.")
    n_classes = len(CATEGORIES[category])
    own_tr, win_tr, y_tr = _single_object_data(vlm, hook_name, n_train, seed, category)
    own_te, win_te, y_te = _single_object_data(vlm, hook_name, n_test, seed + 1, category)
    rows = []
    for name, x_tr, x_te in (("own patch", own_tr, own_te), ("3x3 window", win_tr, win_te)):
        for probe, hidden in (("linear", None), ("mlp", mlp_hidden)):
            accuracy = _fit_probe(x_tr, y_tr, x_te, y_te, n_classes, hidden, seed)
            rows.append(
                {
                    "hook": hook_name,
                    "category": category,
                    "input": name,
                    "probe": probe,
                    "accuracy": accuracy,
                    "chance": float(np.bincount(y_te.numpy(), minlength=n_classes).max() / len(y_te)),
                }
            )
    return pd.DataFrame(rows)
