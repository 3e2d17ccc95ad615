"""GPU memory plan for the released models: weights, per-batch cost and the batch "auto" picks.

For each release the full configuration (its builder's
:meth:`~vis_steer_lens.testing.ModelBuilder.random_config`, full depth and vocabulary) is built
on the ``meta`` device (shapes only, no memory), and
:mod:`vis_steer_lens.memory`'s estimates (the ones ``batch_size="auto"`` uses) give the peak
bytes one item adds: an image for mining (the tower up to the SAE's layer), a feature for
Steering (the blocks after the SAE's layer, then the language model's prompt and answer) and
for Top-k / the hybrid (k top images through the whole tower and a k-image prompt). Printed:
the weights in bfloat16 and, per GPU size, the batch ``"auto"`` takes (60% of what the weights
leave free) and that batch's estimated memory.

    python benchmarks/memory_plan.py [--models gemma-3-4b internvl3-14b] [--gpu-gib 24 40 80 141]
"""

from __future__ import annotations

import argparse

import torch

LAYERS = {"gemma-3-4b": 16, "gemma-3-12b": 16, "gemma-3-27b": 16, "internvl3-14b": 12}


def plan(name: str, layer: int, k: int, new_tokens: int, d_sae: int) -> dict:
    from transformers import AutoModelForImageTextToText

    from vis_steer_lens import HookedVLM
    from vis_steer_lens.memory import (
        TextShape,
        TowerShape,
        explain_bytes,
        image_tokens_per_image,
        mining_bytes,
    )
    from vis_steer_lens.testing import get_builder, released_models

    config, processor = get_builder(released_models()[name]).random_config(name)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    vlm = HookedVLM.from_hf(model, processor=processor, model_name=name)
    tower, text = TowerShape.of(vlm), TextShape.of_config(model.config, torch.bfloat16)
    cut = TowerShape(**{**tower.__dict__, "n_layers": layer + 1})  # mining stops at the SAE's layer
    soft = image_tokens_per_image(vlm)
    return {
        "weights": sum(p.numel() for p in model.parameters()) * 2,
        "sae": 2 * d_sae * tower.d_model * 4,
        "mine": mining_bytes(cut, tower.d_model),
        "steer": explain_bytes(tower, text, soft, 1, new_tokens, from_layer=layer + 1),
        "topk": explain_bytes(tower, text, soft, k, new_tokens),
        "soft": soft,
        "tower": tower,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=["gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "internvl3-14b"]
    )
    parser.add_argument("--gpu-gib", type=float, nargs="+", default=[24, 40, 80, 141])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--d-sae", type=int, default=8192)
    args = parser.parse_args()
    from vis_steer_lens.memory import DEFAULT_BUDGET_FRACTION, MAX_AUTO_BATCH

    gib, mib = 2**30, 2**20
    for name in args.models:
        figures = plan(name, LAYERS.get(name, 12), args.k, args.new_tokens, args.d_sae)
        tower = figures["tower"]
        print(
            f"{name}: weights {figures['weights'] / gib:.1f} GiB (bfloat16), SAE {args.d_sae} x {tower.d_model} "
            f"{figures['sae'] / mib:.0f} MiB; {tower.tokens} vision tokens, {figures['soft']} soft tokens per image"
        )
        print(
            f"  per item: mining {figures['mine'] / mib:.0f} MiB/image, steering {figures['steer'] / mib:.0f} "
            f"MiB/feature, top-k/hybrid (k={args.k}) {figures['topk'] / mib:.0f} MiB/feature"
        )
        for size in args.gpu_gib:
            free = size * gib - figures["weights"] - figures["sae"] - 1 * gib  # 1 GiB for CUDA's context
            if free <= 0:
                print(f"  {size:>5.0f} GiB GPU: the weights do not fit")
                continue
            cells = []
            for key, label in (("mine", "mine"), ("steer", "steering"), ("topk", "top-k")):
                batch = int(max(1, min(MAX_AUTO_BATCH, free * DEFAULT_BUDGET_FRACTION // figures[key])))
                cells.append(f"{label} {batch:>3} ({batch * figures[key] / gib:4.1f} GiB)")
            print(f"  {size:>5.0f} GiB GPU: auto batch " + ", ".join(cells))


if __name__ == "__main__":
    main()
