"""Caching vision activations and training a grid on them: throughput, one pass for many SAEs, memory.

Three figures on the toy world's VLM (its ``blocks.2.hook_resid_post``, 16 patches of 128 wide):

1. **Cache throughput against a plain tower forward.** ``cache_activations`` over the same
   pre-rendered images as a loop of ``image_token_activations`` over the same batches (the tower
   run to the hook and the tokens picked, nothing written). Printed: images/s of each and their
   ratio (target >= 0.9).
2. **Training samples/s, 1 vs 4 SAEs per pass.** ``train_sae_grid`` over the cache with one
   SAE at each k = 8, 16, 24, 32 (the "one SAE" figure is their mean), then with the four in one
   pass, the same training tokens (best of two each). Printed: samples/s, the time ratio (target:
   four cost <= 2x one), the ratio to the four separate passes, and the rate of reading
   the shuffled batches alone, the work the four SAEs share. The loss is left out
   (``n_loss_images=0``) so the pass itself is timed. On a CPU and the toy's 128-wide hook, each
   SAE's own steps dominate, so the ratio approaches 4; the shared reading is what one pass saves.
   The same two runs streamed from the tower (no cache), where the forward the SAEs share is part
   of every step, give the second ratio.
3. **Peak memory of caching at N and 4N images**, each in a fresh subprocess: the peak resident
   memory's growth over the process's memory after loading the model (target: flat in N). It is
   bounded by one shard (256 images here), so N is above that.

    python benchmarks/activation_cache.py --small     # about a minute of CPU time
    python benchmarks/activation_cache.py             # N = 2000 images
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOOK = "blocks.2.hook_resid_post"
#: The k of the four SAEs of one width; the single-SAE figure is their mean.
KS = [8, 16, 24, 32]


def cache_throughput(n_images: int, batch_size: int, repeats: int) -> dict:
    """Images/s of caching and of the plain forward over the same images (best of ``repeats``)."""
    import torch

    from vis_steer_lens import toy
    from vis_steer_lens.activations import batched, image_processor_of, image_token_activations
    from vis_steer_lens.image_sources import ListImages
    from vis_steer_lens.saes.cache import cache_activations
    from vis_steer_lens.toy import ToyImages

    vlm = toy.load().vlm
    rendered = ToyImages(seed=7, n=n_images)
    images = ListImages([rendered[i] for i in range(n_images)], name=f"toy-{n_images}")
    processor = image_processor_of(vlm)
    plain, cached = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            for ids in batched(range(n_images), batch_size):
                rows, _ = image_token_activations(vlm, HOOK, [images[i] for i in ids], processor, "patches")
                torch.cat(rows).float().cpu()
        plain.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            cache_activations(
                vlm, [HOOK], images, Path(tmp) / "activations", batch_size=batch_size, progress=False
            )
            cached.append(time.perf_counter() - start)
    return {
        "plain_images_per_s": n_images / min(plain),
        "cache_images_per_s": n_images / min(cached),
        "ratio": min(plain) / min(cached),
    }


def training_throughput(
    n_images: int, training_tokens: int, width: int, batch_size: int, repeats: int
) -> dict:
    """Samples/s of one SAE and of four SAEs trained in one pass over the same cache (best of
    ``repeats``), and of reading the batches alone (the part the four share)."""
    from vis_steer_lens import toy
    from vis_steer_lens.saes.cache import cache_activations
    from vis_steer_lens.saes.grid import CachedBatches, train_sae_grid
    from vis_steer_lens.toy import ToyImages

    vlm = toy.load().vlm
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_activations(
            vlm, [HOOK], ToyImages(seed=8, n=n_images), Path(tmp) / "act", progress=False
        )
        start = time.perf_counter()
        batches = iter(CachedBatches(cache, HOOK, batch_size, held_out_images=1))
        for _ in range(training_tokens // batch_size):
            next(batches)
        figures["reading"] = {"seconds": time.perf_counter() - start}
        runs = {f"k={k}": [k] for k in KS} | {"4 SAEs": KS}
        for label, ks in runs.items():
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                train_sae_grid(
                    vlm,
                    HOOK,
                    Path(tmp) / label.replace(" ", "-"),
                    widths=[width],
                    ks=ks,
                    training_tokens=training_tokens,
                    batch_size=batch_size,
                    cache=cache,
                    n_eval_images=1,
                    n_loss_images=0,
                    resume=False,
                    progress=False,
                )
                times.append(time.perf_counter() - start)
            figures[label] = {"seconds": min(times), "samples_per_s": training_tokens / min(times)}
    singles = [figures[f"k={k}"]["seconds"] for k in KS]
    figures["1 SAE"] = {"seconds": sum(singles) / len(singles)}
    figures["1 SAE"]["samples_per_s"] = training_tokens / figures["1 SAE"]["seconds"]
    figures["separate_ratio"] = figures["4 SAEs"]["seconds"] / sum(singles)
    figures["reading"]["samples_per_s"] = training_tokens / figures["reading"]["seconds"]
    figures["time_ratio"] = figures["4 SAEs"]["seconds"] / figures["1 SAE"]["seconds"]
    return figures


def streamed_training(n_images: int, training_tokens: int, width: int, batch_size: int) -> dict:
    """Seconds of one SAE (k = 16) and of the four in one pass, streamed from the tower (no cache):
    there the tower's forward, which the four share, is part of every step."""
    from vis_steer_lens import toy
    from vis_steer_lens.image_sources import ListImages
    from vis_steer_lens.saes.grid import train_sae_grid
    from vis_steer_lens.toy import ToyImages

    vlm = toy.load().vlm
    rendered = ToyImages(seed=10, n=n_images)
    images = ListImages([rendered[i] for i in range(n_images)], name=f"toy-stream-{n_images}")
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, ks in (("1 SAE", [16]), ("4 SAEs", KS)):
            start = time.perf_counter()
            train_sae_grid(
                vlm,
                HOOK,
                Path(tmp) / label.replace(" ", "-"),
                widths=[width],
                ks=ks,
                training_tokens=training_tokens,
                batch_size=batch_size,
                images=images,
                n_eval_images=1,
                n_loss_images=0,
                resume=False,
                progress=False,
            )
            seconds[label] = time.perf_counter() - start
    return {**seconds, "time_ratio": seconds["4 SAEs"] / seconds["1 SAE"]}


def cache_memory(n_images: int) -> dict:
    """Peak resident memory growth of caching ``n_images`` toy images (run in its own process)."""
    from vis_steer_lens import toy
    from vis_steer_lens.memory import peak_rss_bytes
    from vis_steer_lens.saes.cache import cache_activations
    from vis_steer_lens.toy import ToyImages

    vlm = toy.load().vlm
    with tempfile.TemporaryDirectory() as tmp:
        # A warm-up over a few images, so that lazily built kernels and buffers are counted before.
        cache_activations(vlm, [HOOK], ToyImages(seed=9, n=64), Path(tmp) / "warm", progress=False)
        before = peak_rss_bytes(reset=True)
        cache_activations(vlm, [HOOK], ToyImages(seed=9, n=n_images), Path(tmp) / "act", progress=False)
        peak = peak_rss_bytes()
    return {"n_images": n_images, "growth_mb": (peak - before) / 2**20}


def _in_subprocess(n_images: int) -> dict:
    command = [sys.executable, __file__, "--memory-one", str(n_images)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--memory-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_one is not None:
        print(json.dumps(cache_memory(args.memory_one)))
        return
    n = 500 if args.small else 2000
    speed = cache_throughput(2 * n, batch_size=64, repeats=3)
    print(
        f"cache vs plain forward over {2 * n} images: {speed['cache_images_per_s']:.0f} vs "
        f"{speed['plain_images_per_s']:.0f} images/s, ratio {speed['ratio']:.2f} (target >= 0.9)"
    )
    tokens = 10_240 if args.small else 204_800
    train = training_throughput(n // 2, tokens, width=256 if args.small else 512, batch_size=512, repeats=2)
    print(
        f"training {tokens} samples: 1 SAE {train['1 SAE']['samples_per_s']:.0f} samples/s, 4 SAEs in one pass "
        f"{train['4 SAEs']['samples_per_s']:.0f} samples/s (each SAE sees every one); 4 SAEs cost "
        f"{train['time_ratio']:.2f}x one (target <= 2) and {train['separate_ratio']:.2f}x four separate passes; "
        f"reading the batches alone {train['reading']['samples_per_s']:.0f} samples/s"
    )
    # Enough images for the training tokens at the toy's 16 patches each, plus the held-out one.
    streamed = streamed_training(tokens // 16 + 8, tokens, width=256 if args.small else 512, batch_size=512)
    print(
        f"streamed from the tower (no cache), {tokens} samples: 4 SAEs in one pass cost "
        f"{streamed['time_ratio']:.2f}x one ({streamed['4 SAEs']:.1f} s vs {streamed['1 SAE']:.1f} s)"
    )
    small, large = _in_subprocess(n), _in_subprocess(4 * n)
    print(
        f"peak memory growth while caching: {small['growth_mb']:.1f} MiB at {n} images, "
        f"{large['growth_mb']:.1f} MiB at {4 * n} images (target: flat)"
    )


if __name__ == "__main__":
    main()
