"""Mining images/s against its floor: a plain Hugging Face vision forward plus the SAE's encode.

Both sides get the same processed pixel tensors and the same SAE at the last vision block's output
(``blocks.{n-1}.hook_resid_post``, so both run every block): the floor calls the HF tower with
``output_hidden_states`` and encodes that block's patch tokens with ``sae.encode``, nothing
kept; ``mine_top_activations`` does the same work through HookedViT and also keeps each
feature's top-k images, maps, counts and histograms. Printed side by side in one run, alternating
repeats: images/s of each and their ratio (target >= 0.9).

    python benchmarks/mining_throughput.py                                   # the toy world's model
    python benchmarks/mining_throughput.py --model gemma-3-4b --n-vision-layers 2 --d-sae 8192 --images 8 --batch 4
    python benchmarks/mining_throughput.py --model gemma-3-4b --device cuda --dtype bfloat16 --images 256 --batch 32

``--model`` builds :func:`vis_steer_lens.testing.random_hf_vlm` of that release (its real width
and image size; ``--n-vision-layers`` blocks, the full depth by default) with a random TopK SAE
(k = 25) of ``--d-sae`` features.
"""

from __future__ import annotations

import argparse
import time

import torch


def build(args):
    from vis_steer_lens import HookedVLM
    from vis_steer_lens.testing import random_hf_vlm, random_sae

    dtype = getattr(torch, args.dtype)
    if args.model is None:
        from vis_steer_lens import toy

        vlm = toy.load(device=args.device).vlm.to(dtype)
        model = vlm.hf_model
    else:
        model, processor = random_hf_vlm(
            args.model,
            n_vision_layers=args.n_vision_layers,
            n_text_layers=1,
            vocab_size=1024,
            dtype=dtype,
            device=args.device,
        )
        vlm = HookedVLM.from_hf(model, processor=processor, model_name=f"random-{args.model}")
    n_layers = vlm.vision.cfg.n_layers
    sae = random_sae(vlm, f"blocks.{n_layers - 1}.hook_resid_post", d_sae=args.d_sae, k=25).to(args.device)
    size = vlm.vision.cfg.image_size
    gen = torch.Generator().manual_seed(0)
    pixels = [torch.randn(3, size, size, generator=gen).to(dtype) for _ in range(args.images)]
    return vlm, model, sae, pixels


@torch.no_grad()
def floor(vlm, model, sae, pixels, batch: int) -> float:
    """Seconds for the HF tower + ``sae.encode`` over ``pixels``."""
    tower = vlm.adapter.tower(model)
    n_layers = vlm.vision.cfg.n_layers
    prefix = vlm.vision.cfg.n_prefix_tokens
    _sync(vlm.device)
    start = time.perf_counter()
    for first in range(0, len(pixels), batch):
        chunk = torch.stack(pixels[first : first + batch]).to(vlm.device)
        hidden = tower(pixel_values=chunk, output_hidden_states=True).hidden_states[n_layers]
        codes = sae.encode(hidden[:, prefix:].reshape(-1, hidden.shape[-1]).to(sae.W_enc.dtype))
        del codes
    _sync(vlm.device)
    return time.perf_counter() - start


def ours(vlm, sae, pixels, batch: int, k: int) -> float:
    from vis_steer_lens import mine_top_activations

    _sync(vlm.device)
    start = time.perf_counter()
    mine_top_activations(vlm, sae, pixels, k=k, batch_size=batch, progress=False)
    _sync(vlm.device)
    return time.perf_counter() - start


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="a release for random_hf_vlm (default: the toy model)")
    parser.add_argument("--n-vision-layers", type=int, default=None)
    parser.add_argument("--d-sae", type=int, default=8192)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    vlm, model, sae, pixels = build(args)
    floor(vlm, model, sae, pixels[: args.batch], args.batch)  # warm-up
    ours(vlm, sae, pixels[: args.batch], args.batch, args.k)
    times = {"floor": [], "mining": []}
    for _ in range(args.repeats):  # alternate, so drift in the machine's speed hits both
        times["floor"].append(floor(vlm, model, sae, pixels, args.batch))
        times["mining"].append(ours(vlm, sae, pixels, args.batch, args.k))
    best = {name: min(values) for name, values in times.items()}
    cfg = vlm.vision.cfg
    print(
        f"{args.model or 'toy'}: {cfg.n_layers} vision blocks, {cfg.n_patches} patches, d_model {cfg.d_model}, "
        f"SAE {sae.cfg.d_sae} features, {args.images} images at batch {args.batch}, {args.dtype} on {args.device}"
    )
    for name, seconds in best.items():
        print(f"  {name:<8} {args.images / seconds:8.2f} images/s  (best of {args.repeats}: {seconds:.2f} s)")
    print(f"  mining / floor = {best['floor'] / best['mining']:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
