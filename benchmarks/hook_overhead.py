"""Forward-time ratio HookedViT / Hugging Face vision tower, measured side by side.

Builds a random mid-size tower (12 layers, d_model 768, 256 patches by default) of one family
(``--family gemma3``: SigLIP; ``--family internvl3``: InternViT with a class token and layer
scale, ``--norm-type`` layer_norm or rms_norm; ``--family qwen2_5_vl``: Qwen2.5-VL's tower, the
batch's images packed into one sequence, 2-D rotary positions, SwiGLU, RMSNorm, attention in
112-pixel windows with whole-image attention every fourth block; ``--family qwen2_vl``: Qwen2-VL's,
LayerNorm and quick-GELU, whole-image attention), runs the Hugging Face tower and HookedViT over
the same weights in alternation, and prints the median time of each and their ratio: with no
hooks, and with a cache of every ``hook_resid_post``. Target: ratio <= 1.05 with no hooks.

    python benchmarks/hook_overhead.py [--family gemma3] [--layers 12] [--d-model 768] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import InternVLVisionConfig, InternVLVisionModel, SiglipVisionConfig, SiglipVisionModel

from vis_steer_lens import HookedViT


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def qwen_tower(args: argparse.Namespace, dtype: torch.dtype):
    """A random Qwen2-VL / Qwen2.5-VL tower and ``--batch`` packed images of ``--image-size`` pixels."""
    import transformers

    merge, patch = 2, args.patch_size
    common = dict(
        depth=args.layers,
        num_heads=args.heads,
        patch_size=patch,
        spatial_merge_size=merge,
        temporal_patch_size=2,
        in_channels=3,
    )
    if args.family == "qwen2_5_vl":
        config = transformers.Qwen2_5_VLVisionConfig(
            hidden_size=args.d_model,
            intermediate_size=4 * args.d_model,
            out_hidden_size=args.d_model,
            window_size=112,
            fullatt_block_indexes=list(range(3, args.layers, 4)),
            hidden_act="silu",
            **common,
        )
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VisionTransformerPretrainedModel,
        )

        tower_class = Qwen2_5_VisionTransformerPretrainedModel
    else:
        config = transformers.Qwen2VLVisionConfig(
            embed_dim=args.d_model, hidden_size=args.d_model, mlp_ratio=4, hidden_act="quick_gelu", **common
        )
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

        tower_class = Qwen2VisionTransformerPretrainedModel
    config._attn_implementation = "sdpa"
    tower = tower_class._from_config(config)
    side = args.image_size // patch
    grid = torch.tensor([[1, side, side]] * args.batch, device=args.device)
    pixels = torch.randn(args.batch * side * side, 3 * 2 * patch * patch, device=args.device, dtype=dtype)
    return tower, pixels, {"image_grid_thw": grid}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--family", default="gemma3", choices=["gemma3", "internvl3", "qwen2_vl", "qwen2_5_vl"]
    )
    parser.add_argument(
        "--norm-type", default="layer_norm", choices=["layer_norm", "rms_norm"], help="internvl3"
    )
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=256, help="with --patch-size 16: 256 patches")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    shape = dict(
        hidden_size=args.d_model,
        intermediate_size=4 * args.d_model,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        image_size=args.image_size,
        patch_size=args.patch_size,
        attn_implementation="sdpa",
    )
    tower_inputs: dict[str, torch.Tensor] = {}
    if args.family.startswith("qwen"):
        hf_tower, pixels, tower_inputs = qwen_tower(args, dtype)
    elif args.family == "gemma3":
        hf_tower = SiglipVisionModel(SiglipVisionConfig(vision_use_head=False, **shape))
    else:
        hf_tower = InternVLVisionModel(InternVLVisionConfig(norm_type=args.norm_type, **shape))
    hf_tower = hf_tower.to(args.device, dtype).eval()
    vit = HookedViT.from_hf(hf_tower)
    if not args.family.startswith("qwen"):
        pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, device=args.device, dtype=dtype)
        hf_call = lambda: hf_tower(pixel_values=pixels).last_hidden_state  # noqa: E731
    else:
        # The blocks' output (before the merger), the same tensor HookedViT's last block gives.
        hf_call = lambda: hf_tower(pixels, grid_thw=tower_inputs["image_grid_thw"]).last_hidden_state  # noqa: E731
    resid_post = [f"blocks.{i}.hook_resid_post" for i in range(args.layers)]

    runs = {
        "hf": hf_call,
        "hooked": lambda: vit(pixels, **tower_inputs),
        "hooked+cache": lambda: vit.run_with_cache(pixels, names_filter=resid_post, **tower_inputs),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for fn in runs.values():  # warm up
            fn()
        for _ in range(args.repeats):  # alternate so drifts in machine load hit all three alike
            for name, fn in runs.items():
                times[name].append(timed(fn, args.device))
        hooked = runs["hooked"]()
        if args.family.startswith("qwen"):  # both hold the packed tokens in the tower's (window) order
            hooked = hooked[0]
        diff = (hooked - runs["hf"]()).abs().max().item()

    median = {name: statistics.median(values) for name, values in times.items()}
    tokens = pixels.shape[0] // args.batch if args.family.startswith("qwen") else vit.cfg.n_tokens
    print(
        f"{args.family} tower: {args.layers} layers, d_model {args.d_model}, {tokens} tokens, batch {args.batch}, "
        f"{args.dtype} on {args.device}, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    print(f"max |HookedViT - HF| = {diff:.2e}")
    for name, value in median.items():
        print(f"  {name:<14} median {value * 1000:8.1f} ms")
    print(
        f"ratio HookedViT / HF, no hooks:              {median['hooked'] / median['hf']:.3f}  (target <= 1.05)"
    )
    print(
        f"ratio HookedViT / HF, caching resid_post x{args.layers}: {median['hooked+cache'] / median['hf']:.3f}"
    )


if __name__ == "__main__":
    main()
