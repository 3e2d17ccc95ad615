"""Peak memory of top-k mining at real widths: the mining state against the top-k store it keeps.

Each configuration runs in a fresh subprocess (so its peak memory is its own): a tower cut to its
embedding (4096 patches of an 896-px image, as SigLIP at Gemma 3's size; the tower's own memory
is not what is measured), a random TopK SAE (k=25) of ``--d-sae`` features, and
``mine_top_activations`` over the same ``--images`` random images at every batch size. Printed per configuration: the
top-k store (``F x k x patches`` float32 maps plus scores and ids), the peak resident memory's growth during
mining (the store included, the model, SAE and images not), the *width cost* (that growth minus
the same run's with a 32-feature SAE, so the tower's and the images' share cancels out), its
ratio to the store (target <= 1.5), and the width cost's growth from batch 1 to each larger batch
against one batch of the tower's activations at its real width (target: no more than that).

    python benchmarks/mining_memory.py [--d-sae 8192 65536] [--batch 1 8 32] [--k 5]
    python benchmarks/mining_memory.py --model gemma-3-4b --n-vision-layers 2 --d-sae 8192 --batch 1

With ``--model`` the tower is :func:`vis_steer_lens.testing.random_vlm`'s of that release instead
(its real width and image size, ``--n-vision-layers`` blocks, the SAE at the last block's output),
so the tower's own activations are part of what is measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PATCHES = 4096  # 896 px / 14 px patches, squared
REAL_D_MODEL = 1152  # SigLIP's width in Gemma 3: one batch of tower activations is batch x 4096 x 1152


def measure(
    d_sae: int, batch: int, k: int, n_images: int, model: str | None = None, n_vision_layers: int = 2
) -> dict:
    """Run one configuration in this process and return its memory figures (bytes).

    Args:
        d_sae: SAE width.
        batch: Mining batch size.
        k: Top images kept per feature.
        n_images: Random images mined.
        model: ``None`` for a tower cut to its embedding (4096 patches, 64 wide), or a release
            :func:`vis_steer_lens.testing.random_vlm` builds, whose tower is mined.
        n_vision_layers: Blocks of ``model``'s tower.

    Returns:
        ``store`` (the top-k store's bytes), ``growth`` (peak resident memory while mining over
        the resident memory before, after a warm-up run), ``peak``, ``tower_batch`` (one batch of the hook's activations, float32)
        and the configuration.
    """
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    from vis_steer_lens import HookedViT, HookedViTConfig, mine_top_activations
    from vis_steer_lens.image_sources import ListImages
    from vis_steer_lens.memory import peak_rss_bytes
    from vis_steer_lens.saes import set_vision_metadata, vision_sae_metadata

    torch.manual_seed(0)
    if model is None:
        cfg = HookedViTConfig(
            n_layers=0,
            d_model=64,
            n_heads=1,
            d_head=64,
            d_mlp=64,
            image_size=896,
            patch_size=14,
            model_name="bench",
        )
        vit, hook = HookedViT(cfg).eval(), "hook_embed"
    else:
        from vis_steer_lens.testing import random_vlm

        vit = random_vlm(model, n_vision_layers=n_vision_layers, n_text_layers=1, vocab_size=1024).vision
        hook = f"blocks.{n_vision_layers - 1}.hook_resid_post"

    def random_sae(width: int, top: int):
        sae = TopKSAE(TopKSAEConfig(d_in=vit.cfg.d_model, d_sae=width, k=top))
        return set_vision_metadata(sae, vision_sae_metadata(hook, vit.cfg.model_name, vit.cfg.n_layers))

    sae = random_sae(d_sae, 25)
    # The same images at every batch size (the store's pages become resident as features first enter
    # it, so fewer images would touch less of it and look cheaper).
    size = vit.cfg.image_size
    images = ListImages([torch.randn(3, size, size) for _ in range(n_images)], name="noise")
    torch.set_num_threads(2)
    # Warm up kernels on a throw-away run with a tiny SAE (its store must not pre-allocate this one's).
    small = random_sae(32, 4)
    mine_top_activations(
        vit, small, ListImages(images.items[:1], name="w"), k=k, batch_size=1, progress=False
    )
    before = peak_rss_bytes(reset=True)  # what the model, SAE, images and warm-up hold now
    mined = mine_top_activations(vit, sae, images, k=k, batch_size=batch, progress=False)
    peak = peak_rss_bytes()
    store = sum(
        getattr(mined, name).element_size() * getattr(mined, name).numel()
        for name in ("top_maps", "top_scores", "top_image_ids")
    )
    return {
        "d_sae": d_sae,
        "batch": batch,
        "k": k,
        "model": model,
        "store": store,
        "growth": max(peak - before, 0),
        "peak": peak,
        "tower_batch": batch * vit.cfg.n_tokens * vit.cfg.d_model * 4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--d-sae", type=int, nargs="+", default=[8192, 65536])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--narrow", type=int, default=32, help="features of the baseline run that is subtracted"
    )
    parser.add_argument("--images", type=int, default=64, help="images mined in every configuration")
    parser.add_argument("--model", default=None, help="a random_vlm release whose tower is mined")
    parser.add_argument("--n-vision-layers", type=int, default=2, help="blocks of --model's tower")
    parser.add_argument("--one", nargs=4, type=int, help=argparse.SUPPRESS)  # internal: d_sae batch k images
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, model=args.model, n_vision_layers=args.n_vision_layers)))
        return
    gib = 1024**3

    def run(d_sae: int, batch: int) -> dict:
        command = [sys.executable, __file__, "--one", str(d_sae), str(batch), str(args.k), str(args.images)]
        if args.model:
            command += ["--model", args.model, "--n-vision-layers", str(args.n_vision_layers)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    print(
        f"{'d_sae':>6} {'batch':>5} {'store GiB':>10} {'peak growth GiB':>16} {'width cost GiB':>15} "
        f"{'cost/store':>11} {'cost vs batch 1 GiB':>20} {'one batch of tower acts GiB':>28}"
    )
    narrow = {batch: run(args.narrow, batch)["growth"] for batch in args.batch}
    for d_sae in args.d_sae:
        first = None
        for batch in args.batch:
            row = run(d_sae, batch)
            cost = row["growth"] - narrow[batch]
            first = first if first is not None else cost
            tower_batch = row["tower_batch"] if args.model else batch * PATCHES * REAL_D_MODEL * 4
            print(
                f"{d_sae:>6} {batch:>5} {row['store'] / gib:>10.3f} {row['growth'] / gib:>16.3f} "
                f"{cost / gib:>15.3f} {cost / row['store']:>11.2f} {(cost - first) / gib:>20.3f} "
                f"{tower_batch / gib:>28.3f}"
            )


if __name__ == "__main__":
    main()
