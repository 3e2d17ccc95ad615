"""Peak memory of explaining 8k vs 64k features: what grows besides the results?

Each size runs in a fresh subprocess on a tiny random Gemma 3 with a 65,536-feature TopK SAE
(:mod:`vis_steer_lens.testing`): ``SteeringExplainer.explain(range(N), out=FILE)`` with a fixed
coefficient and 2 new tokens, the peak RSS measured from after the setup. Printed per size: the
peak growth, the returned DataFrame's own size (the results), and the growth per feature with and
without the results. The target: the state beyond the results does not grow with the features
explained (its per-feature bytes fall as N grows, so that only the results scale).

    python benchmarks/explain_memory.py [--features 8192 65536] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

D_SAE = 65536


def measure(n_features: int, batch_size: int, out: str) -> dict:
    """Explain ``n_features`` features in this process; memory figures in bytes."""
    import torch

    from vis_steer_lens import SteeringExplainer
    from vis_steer_lens.memory import peak_rss_bytes
    from vis_steer_lens.testing import tiny_sae, tiny_vlm

    torch.set_num_threads(1)
    vlm = tiny_vlm("gemma3", seed=0)
    sae = tiny_sae(vlm, "blocks.0.hook_resid_post", d_sae=D_SAE, k=8)
    explainer = SteeringExplainer(vlm, sae, coefficient=20.0, max_new_tokens=2, batch_size=batch_size)
    explainer.explain(range(batch_size), progress=False)  # warm-up: kernels, caches, allocator pools
    start = peak_rss_bytes(reset=True)
    frame = explainer.explain(range(n_features), out=out, progress=False)
    peak = peak_rss_bytes()
    row = frame.iloc[0].to_dict()
    return {
        "features": n_features,
        "growth": peak - start,
        "results": int(frame.memory_usage(deep=True).sum()),
        "row_objects": n_features * _deep_size(row),
        "rows": len(frame),
    }


def _deep_size(value) -> int:
    """Bytes of a row as Python objects (the dict, its keys and values), as the store holds it."""
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(_deep_size(k) + _deep_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sys.getsizeof(value) + sum(_deep_size(v) for v in value)
    return sys.getsizeof(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, nargs="+", default=[8192, 65536])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--one", nargs=3, metavar=("FEATURES", "BATCH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), int(args.one[1]), args.one[2])))
        return
    import tempfile

    mib = 2**20
    print(
        f"{'features':>9} {'peak growth':>12} {'DataFrame':>10} {'row dicts':>10} {'growth/feature':>15} "
        f"{'beyond results/feature':>23}"
    )
    rows = []
    for n in args.features:
        with tempfile.TemporaryDirectory() as tmp:
            command = [
                sys.executable,
                __file__,
                "--one",
                str(n),
                str(args.batch_size),
                f"{tmp}/explanations.jsonl",
            ]
            row = json.loads(
                subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
            )
        rows.append(row)
        beyond = (row["growth"] - row["results"] - row["row_objects"]) / n
        print(
            f"{n:>9} {row['growth'] / mib:>8.1f} MiB {row['results'] / mib:>6.1f} MiB "
            f"{row['row_objects'] / mib:>6.1f} MiB {row['growth'] / n:>13.0f} B {beyond:>21.0f} B"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        span = last["features"] - first["features"]
        extra = (last["growth"] - first["growth"]) / span
        results = (last["results"] + last["row_objects"] - first["results"] - first["row_objects"]) / span
        print(
            f"\nEach further feature costs {extra:.0f} B of peak memory; its result (the row dict the store "
            f"keeps plus its DataFrame row) {results:.0f} B: {extra / results:.2f}x the results."
        )


if __name__ == "__main__":
    main()
