"""Load time of the static dashboard's index page for a large SAE, in headless Chromium.

Builds a synthetic results folder (no model: random mined tensors over toy-world images, a tenth
of the features dead, three explanation methods with scores and ground truth, some answers
flagged) with 8192 features by default, exports it with ``export_dashboard``, then opens
``index.html`` from ``file://`` in Debian's chromium (via Playwright) and times navigation start →
the first table page (live features) rendered. Also times a search, a sort over all rows, and the
dead-feature toggle. Target: index load < 3 s.

    python benchmarks/dashboard_index.py [--features 8192] [--repeats 3] [--keep DIR]

Measured (2 shared CPU cores, Debian chromium): see the README's benchmark list.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no ``playwright install``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from vis_steer_lens.dashboard import dashboard_size, export_dashboard
from vis_steer_lens.explain.base import RESULT_COLUMNS
from vis_steer_lens.mining import FORMAT_VERSION, MinedActivations
from vis_steer_lens.toy import ToyImages

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
METHODS = ("steering", "topk", "hybrid")
WORDS = "red green blue yellow circle square triangle cross star stripes dots background edge corner".split()


def synthetic_results(root: Path, n_features: int, k: int = 5, n_images: int = 256, seed: int = 0) -> Path:
    """A results folder shaped like the demo's, with random contents."""
    gen = torch.Generator().manual_seed(seed)
    images = ToyImages(seed=seed, n=n_images)
    grid, patch, bins = 4, 16, 50
    meta = {
        "version": FORMAT_VERSION,
        "sae_id": f"synthetic/blocks.3.hook_resid_post/d{n_features}",
        "hook_name": "blocks.3.hook_resid_post",
        "d_sae": n_features,
        "model_name": "synthetic",
        "source_id": images.source_id,
        "image_source": images.describe(),
        "n_images": n_images,
        "k": k,
        "rank_by": "max",
        "features": None,
        "hist_bins": bins,
        "n_patches": grid * grid,
        "grid_size": grid,
        "patch_size": patch,
        "image_size": grid * patch,
        "batch_size": 64,
    }
    mined = MinedActivations.empty(list(range(n_features)), k, grid * grid, bins, meta)
    maps = torch.relu(torch.randn(n_features, k, grid * grid, generator=gen)) * 3
    scores = maps.amax(dim=-1).sort(dim=1, descending=True)
    mined.top_scores = scores.values
    mined.top_maps = maps.gather(1, scores.indices.unsqueeze(-1).expand(-1, -1, grid * grid))
    mined.top_image_ids = torch.randint(0, n_images, (n_features, k), generator=gen)
    mined.fire_images = torch.randint(1, n_images, (n_features,), generator=gen)
    dead = torch.arange(n_features) % 10 == 9  # a tenth never fired
    mined.fire_images[dead] = 0
    maps[dead] = 0
    scores = maps.amax(dim=-1).sort(dim=1, descending=True)
    mined.top_scores = scores.values
    mined.top_maps = maps.gather(1, scores.indices.unsqueeze(-1).expand(-1, -1, grid * grid))
    mined.fire_patches = mined.fire_images * 3
    mined.act_sum = mined.fire_patches.double() * 1.5
    mined.max_act = mined.top_scores[:, 0].clone()
    mined.hist_range = torch.exp2(torch.ceil(torch.log2(mined.max_act.clamp(min=1e-3))) + 1)
    mined.hist_counts = torch.randint(0, 100, (n_features, bins), generator=gen)
    mined.images_processed = n_images
    mined.save(root / "mined")

    words = torch.randint(0, len(WORDS), (len(METHODS), n_features, 3), generator=gen).tolist()
    rows, score_rows = [], []
    for m, method in enumerate(METHODS):
        for feature in range(n_features):
            text = " ".join(WORDS[w] for w in words[m][feature])
            rows.append(
                {
                    "sae_id": meta["sae_id"],
                    "feature": feature,
                    "method": method,
                    "direction": "sae",
                    "direction_feature": feature,
                    "explanation": text,
                    "raw_generation": f"It shows {text}.",
                    "flag": "repetition" if feature % 17 == 3 else None,
                    "coefficient": None if method == "topk" else 8.0,
                    "prompt_id": "toy",
                    "model_name": "synthetic",
                }
            )
            score_rows.append(
                {
                    "feature": feature,
                    "method": method,
                    "direction": "sae",
                    "auroc_mean": 0.5,
                    "auroc_max": 0.6,
                }
            )
    pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS).to_parquet(root / "explanations.parquet", index=False)
    pd.DataFrame(score_rows).to_csv(root / "scores.csv", index=False)
    pd.DataFrame(
        {"feature": range(n_features), "best_concept": [WORDS[f % len(WORDS)] for f in range(n_features)]}
    ).to_csv(root / "feature_concepts.csv", index=False)
    return root


def measure(index: Path, repeats: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"load": [], "search": [], "sort": [], "dead toggle": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        for _ in range(repeats):
            # A fresh context each time: no cached scripts or images from the previous load.
            context = browser.new_context()
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            page.goto(index.as_uri(), wait_until="commit")
            page.wait_for_function("window.VSL_READY === true", timeout=60_000)
            times["load"].append(page.evaluate("performance.now()") / 1000)
            if errors:
                raise RuntimeError(f"Errors on the index page: {errors}")
            start = time.perf_counter()
            page.fill("#search", "circle")
            page.locator("#count").inner_text()
            times["search"].append(time.perf_counter() - start)
            start = time.perf_counter()
            page.locator("#header th").nth(4).click()  # max act
            page.locator("#count").inner_text()
            times["sort"].append(time.perf_counter() - start)
            start = time.perf_counter()
            page.locator("#show-dead").check()
            page.locator("#count").inner_text()
            times["dead toggle"].append(time.perf_counter() - start)
            context.close()
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    synthetic_results(root / "results", args.features)
    built = time.perf_counter()
    index = export_dashboard(root / "results", root / "dashboard")
    exported = time.perf_counter()
    size = (root / "dashboard" / "data" / "index.js").stat().st_size
    print(f"synthetic results: {built - start:.1f} s; export_dashboard: {exported - built:.1f} s")
    print(f"{args.features} features; data/index.js {size / 1e6:.2f} MB")
    print(f"dashboard: {dashboard_size(root / 'dashboard', args.features).describe()}")
    times = measure(index, args.repeats)
    load = statistics.median(times["load"])
    print(f"index load (navigation start -> first page rendered), median of {args.repeats}: {load:.3f} s")
    print(f"  all loads: {', '.join(f'{t:.3f}' for t in times['load'])} s")
    print(
        f"search over all rows: {statistics.median(times['search']):.3f} s; sort: {statistics.median(times['sort']):.3f} s;"
        f" dead toggle: {statistics.median(times['dead toggle']):.3f} s"
    )
    print(f"target < 3 s: {'met' if load < 3 else 'NOT met'}")
    if args.keep is None:
        print(f"(files in {root})")


if __name__ == "__main__":
    main()
