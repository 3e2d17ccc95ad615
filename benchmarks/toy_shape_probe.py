"""Where does the toy vision tower keep an object's shape? Probes, measured side by side.

Single-object scenes; for each hook, linear and MLP probes read the object's own patch or the
3x3 window around it and predict the object's shape (and, as a yardstick, its colour) on held-out
scenes (``vis_steer_lens.toy.probes.probe_accuracy``). Shape that only an MLP probe or only the
window can read is shape that a residual-stream SAE feature (one linear direction per token)
cannot name.

    python benchmarks/toy_shape_probe.py                       # 5 hooks x 2 categories, ~2 min
    python benchmarks/toy_shape_probe.py --hooks blocks.0.hook_resid_post --categories shape
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from vis_steer_lens import toy
from vis_steer_lens.toy.probes import probe_accuracy

DEFAULT_HOOKS = (
    "blocks.0.hook_resid_post",
    "blocks.1.hook_resid_post",
    "blocks.2.hook_resid_post",
    "blocks.3.hook_resid_post",
    "blocks.0.mlp.hook_post",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hooks", nargs="+", default=list(DEFAULT_HOOKS))
    parser.add_argument("--categories", nargs="+", default=["shape", "color"])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vlm = toy.load().vlm
    start = time.perf_counter()
    table = pd.concat(
        [
            probe_accuracy(vlm, hook, category, n_train=args.n_train, n_test=args.n_test)
            for hook in args.hooks
            for category in args.categories
        ]
    )
    wide = table.pivot_table(
        index=["hook", "category"], columns=["input", "probe"], values="accuracy", sort=False
    )
    wide[("chance", "")] = table.groupby(["hook", "category"], sort=False)["chance"].first()
    print(wide.round(3).to_string())
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
