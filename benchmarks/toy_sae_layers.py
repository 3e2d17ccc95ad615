"""Which vision hook gives the toy world an SAE whose features can be explained? Measured side by side.

For each hook (and each SAE width and k asked for), one TopK SAE is trained with the shipped recipe
(``train_toy_sae`` defaults but the hook, width and k), and the script prints:

* ``clear``: live features whose best object concept reaches AUROC >= 0.9 in the feature's
  background context (``feature_concepts``), and ``clear_all``: the same over all scenes;
* ``steer``: share of the clear features whose steering explanation (coefficient ``"auto"``,
  white empty image, every patch) names that concept, and ``random``: the same with a random
  direction of equal norm;
* for the MLP hidden hooks, ``neurons``: how many single MLP neurons are clear over all scenes
  (the privileged basis, as a yardstick for the SAE);
* under each row, the clear features' concepts with their counts.

    python benchmarks/toy_sae_layers.py                    # four hooks, ~2-3 min each on 2 cores
    python benchmarks/toy_sae_layers.py --hooks blocks.0.hook_resid_post --tokens 400000
    python benchmarks/toy_sae_layers.py --hooks blocks.0.hook_resid_post --d-sae 512 1024 --k 16 32

The shipped SAE's hook (``vis_steer_lens.toy.sae.DEFAULT_HOOK``) was chosen from this table
(README, "The toy world").
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from vis_steer_lens import toy
from vis_steer_lens.activations import hook_activations, image_processor_of, to_pixel_values
from vis_steer_lens.evaluate import ground_truth_accuracy
from vis_steer_lens.evaluate.metrics import auroc_matrix
from vis_steer_lens.explain import SteeringExplainer
from vis_steer_lens.toy import feature_concepts, summarize_feature_concepts, toy_ground_truth
from vis_steer_lens.toy.sae import DEFAULT_D_SAE, DEFAULT_K, train_toy_sae
from vis_steer_lens.toy.world import CATEGORIES, CONCEPT_CATEGORY, ToyWorld

DEFAULT_HOOKS = (
    "blocks.0.hook_resid_post",
    "blocks.2.hook_resid_post",
    "blocks.0.mlp.hook_post",
    "blocks.1.mlp.hook_post",
)


def clear_neurons(vlm, hook: str, n_images: int = 1000, seed: int = 303) -> int:
    """Single units of ``hook`` whose max over patches predicts an object concept at AUROC >= 0.9."""
    concepts = [c for cs in CATEGORIES.values() for c in cs]
    objects = [i for i, c in enumerate(concepts) if CONCEPT_CATEGORY[c] != "background"]
    samples = ToyWorld(seed).sample(n_images)
    processor = image_processor_of(vlm)
    acts = torch.cat(
        [
            hook_activations(vlm, hook, to_pixel_values([im for im, _ in samples[i : i + 250]], processor))
            for i in range(0, n_images, 250)
        ]
    ).numpy()  # [n, patches, units]
    labels = np.array([[c in scene.concepts() for c in concepts] for _, scene in samples])
    best = np.nanmax(auroc_matrix(acts.max(axis=1), labels)[objects], axis=0)
    return int((best >= 0.9).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hooks", nargs="+", default=list(DEFAULT_HOOKS))
    parser.add_argument("--tokens", type=int, default=800_000, help="training tokens per SAE")
    parser.add_argument("--d-sae", type=int, nargs="+", default=[DEFAULT_D_SAE], help="SAE widths to try")
    parser.add_argument("--k", type=int, nargs="+", default=[DEFAULT_K], help="TopK k values to try")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = toy.load()
    print(
        f"{'hook':<28}{'d_sae':>6}{'k':>4}{'EV':>8}{'live':>6}{'clear':>7}{'clear_all':>11}{'steer':>7}{'random':>8}{'neurons':>9}{'s':>6}"
    )
    for hook, d_sae, k in itertools.product(args.hooks, args.d_sae, args.k):
        start = time.perf_counter()
        sae, _ = train_toy_sae(
            bundle.vlm, hook, d_sae=d_sae, k=k, total_training_samples=args.tokens, progress=False
        )
        summary = summarize_feature_concepts(feature_concepts(bundle.vlm, sae, n_images=1000, seed=303))
        clear = sorted(int(f) for f in summary.loc[summary["clear"], "feature"])
        accuracy = {}
        coefficient = "auto"
        for direction in ("sae", "random_norm_matched"):
            explainer = SteeringExplainer(
                bundle.vlm, sae, coefficient=coefficient, prompt="toy", max_new_tokens=24, direction=direction
            )
            if coefficient == "auto":
                explainer.calibrate()
                coefficient = explainer.coefficient = explainer.chosen_coefficient
            frame = explainer.explain(clear, progress=False)
            table = ground_truth_accuracy(frame, toy_ground_truth(summary))
            accuracy[direction] = float(table["accuracy"].iloc[0]) if len(table) else float("nan")
        neurons = str(clear_neurons(bundle.vlm, hook)) if ".mlp.hook_post" in hook else "-"
        print(
            f"{hook:<28}{d_sae:>6}{k:>4}{sae.cfg.metadata.training_report['explained_variance']:>8.4f}{len(summary):>6}"
            f"{len(clear):>7}{int((summary['best_object_pooled_auroc'] >= 0.9).sum()):>11}"
            f"{accuracy['sae']:>7.2f}{accuracy['random_norm_matched']:>8.2f}{neurons:>9}"
            f"{time.perf_counter() - start:>6.0f}",
            flush=True,
        )
        counts = summary.loc[summary["clear"], "best_object_concept"].value_counts()
        print(f"{'':<4}clear concepts: " + ", ".join(f"{c} {n}" for c, n in counts.items()), flush=True)


if __name__ == "__main__":
    main()
