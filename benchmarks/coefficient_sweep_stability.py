"""How the steering coefficient sweep's choice varies with its feature sample, on the toy world.

Every live feature of the shipped toy SAE is steered once at every multiple of the sweep (the
rows a sweep of any sample would produce), then samples of several sizes and seeds are drawn
from three pools (the live features in ``0:64``, in ``0:256``, and all live features) and the
sweep's rule (:func:`vis_steer_lens.explain.sweep.sweep_table`) picks a multiple from each
sample's rows. Printed: the chosen multiple per (pool, size, seed) and how often each size agrees
with the whole pool's choice; and, with the toy world's ground truth, the share of clear features
whose steered answer names their concept at each multiple (what the rule should pick).

    python benchmarks/coefficient_sweep_stability.py [--sizes 8 16 32 64 128] [--seeds 20]
"""

from __future__ import annotations

import argparse
import collections
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--mine-images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    from vis_steer_lens import SteeringExplainer, mine_top_activations, toy
    from vis_steer_lens.explain.sweep import DEFAULT_MULTIPLES, sample_features, sweep_table
    from vis_steer_lens.toy import ToyImages, feature_concepts, summarize_feature_concepts, toy_ground_truth

    torch.manual_seed(0)
    start = time.perf_counter()
    bundle = toy.load()
    vlm, sae = bundle.vlm, bundle.sae
    mined = mine_top_activations(vlm, sae, ToyImages(seed=1, n=args.mine_images), k=5, progress=False)
    live = mined.live_features()
    explainer = SteeringExplainer(
        vlm, sae, coefficient="auto", prompt="toy", max_new_tokens=40, batch_size=args.batch_size
    )
    norm = explainer.patch_norm()
    null = explainer._generate(live[:1], live[:1], [0.0])[0]["explanation"]  # the unsteered answer
    rows: dict[tuple[float, int], dict] = {}
    for multiple in DEFAULT_MULTIPLES:
        for begin in range(0, len(live), args.batch_size):
            chunk = live[begin : begin + args.batch_size]
            for row in explainer._generate(chunk, chunk, [multiple * norm] * len(chunk)):
                rows[(multiple, row["feature"])] = row
    print(
        f"{len(live)} live features of {sae.cfg.d_sae}, steered at {list(DEFAULT_MULTIPLES)} x the mean "
        f"patch norm ({norm:.1f}) in {time.perf_counter() - start:.0f} s; unsteered answer {null!r}"
    )

    def choice(sample: list[int]) -> float:
        table = sweep_table({m: [rows[(m, f)] for f in sample] for m in DEFAULT_MULTIPLES}, norm, null)
        return float(table.loc[table["chosen"], "multiple"].iloc[0])

    pools = {
        "0:64": [f for f in live if f < 64],
        "0:256": [f for f in live if f < 256],
        "all live": list(live),
    }
    print(f"\nwhole pool's choice: {', '.join(f'{n} ({len(p)}): {choice(p):g}x' for n, p in pools.items())}")
    whole = choice(pools["all live"])
    print(f"\nchosen multiple per sample ({args.seeds} seeds); 'agree' = share equal to {whole:g}x")
    for name, pool in pools.items():
        for size in args.sizes:
            if size > len(pool):
                continue
            picks = [choice(sample_features(pool, size, seed)) for seed in range(args.seeds)]
            counts = collections.Counter(picks)
            agree = counts.get(whole, 0) / len(picks)
            spread = ", ".join(f"{m:g}x: {c}" for m, c in sorted(counts.items()))
            print(f"  pool {name:<9} sample {size:>4}: agree {agree:.0%}  ({spread})")

    summary = summarize_feature_concepts(feature_concepts(vlm, sae, n_images=2000, seed=303))
    truth = toy_ground_truth(summary)
    clear = truth.clear_concepts()
    print(f"\nground truth: share of the {len(clear)} clear features whose steered answer names the concept")
    table = sweep_table({m: [rows[(m, f)] for f in live] for m in DEFAULT_MULTIPLES}, norm, null)
    for multiple, score, working, chosen in zip(
        table["multiple"], table["score"], table["working"], table["chosen"], strict=True
    ):
        correct = [
            truth.is_correct(rows[(multiple, f)]["explanation"], concept)
            for f, concept in clear.items()
            if (multiple, f) in rows
        ]
        mark = "  <- chosen" if chosen else "  (working range)" if working else ""
        print(
            f"  {multiple:>5g}x: accuracy {sum(correct) / len(correct):.2f}   sweep score {score:.3f}{mark}"
        )


if __name__ == "__main__":
    main()
