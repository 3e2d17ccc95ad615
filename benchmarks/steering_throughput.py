"""Features explained per second: SteeringExplainer against the paper's procedure, side by side.

(a) ``SteeringExplainer`` as built: the empty image's activations below the hook reused, one
    ``generate`` per batch, each row stopping at its sentence end.
(b) The authors' procedure, reimplemented as the baseline: batches of 8 features, the whole
    model rerun for each batch with a plain PyTorch forward hook on the vision encoder layer's
    output adding each row's direction, ``max_new_tokens`` fixed: a batch decodes until every
    row has emitted EOS or the cap is reached (no stop at the end of a sentence).
(c) A floor: plain unsteered batched ``generate`` of (a)'s batch size, as many new tokens as (a)
    produced on average (rounded up).
(d) The floor of the same work: the tower's blocks after the hook on the cached empty image
    (unsteered), the projector, and a plain batched ``generate`` from those image tokens with the
    prefill and the same number of decode steps (no sentence-end stop, no rows retired).
(b') With ``--paper-tokens N`` (the authors used 200), the paper's procedure once more at N new
    tokens: what the authors' own setting costs against (a).

Both (a) and (b) explain the same features; the script checks that their explanations (first
sentence) agree and that the steered answers differ across features (a model whose answer
ignores the image, or a steering edit that does not reach the answer, fails it), exits non-zero
if either check fails, and prints the ratios (a)/(b) (target >= 3x) and (a)/(c) (target >= 0.9).
Each of (a), (b), (c) runs ``--repeats`` times, interleaved (a, b, c, a, b, c, ...) so that a busy
spell of the machine hits all three alike; the median time of each is reported.

    python benchmarks/steering_throughput.py                       # the shipped toy VLM and SAE (Gemma 3)
    python benchmarks/steering_throughput.py --family internvl3    # a tiny random InternVL3 (class token, layer scale)
    python benchmarks/steering_throughput.py --family qwen2_5_vl   # a tiny random Qwen2.5-VL (packed images, windows)
    python benchmarks/steering_throughput.py --family llava        # a tiny random LLaVA-1.5 (CLIP, class token dropped)
    python benchmarks/steering_throughput.py --family paligemma    # a tiny random PaliGemma 2 (prefix-LM, no chat template)
    python benchmarks/steering_throughput.py --family llava_next   # a tiny random LLaVA-NeXT (AnyRes: base crop + tiles)
    python benchmarks/steering_throughput.py --family llava_onevision  # a tiny random LLaVA-OneVision (SigLIP, AnyRes)
    python benchmarks/steering_throughput.py --random-weights gemma-3-4b --n-vision-layers 4 --features 8 --fixed-tokens 8
    python benchmarks/steering_throughput.py --random-weights gemma-3-4b --full-depth --device cuda --features 64

``--random-weights NAME`` builds a released architecture (Gemma 3 4B/12B/27B, InternVL3-14B) with
random weights (:func:`vis_steer_lens.testing.random_vlm`: the released widths, no download) in
``--dtype`` (bfloat16 by default) and a random SAE of the paper's shape (8192 features, k = 25) at
vision layer ``--sae-layer`` (16 by default, the paper's; half the depth of a shallower tower). On
a CPU the depth is cut (``--n-text-layers``, 2 by default; ``--n-vision-layers``, the full 27 or
24 by default) and ``--vocab-size`` can shrink the vocabulary; ``--full-depth`` is the released
depth and vocabulary (the GPU mode). Both sides then decode a fixed number of tokens
(``--fixed-tokens``), since random text has no sentence ends. ``--family internvl3`` builds
:func:`vis_steer_lens.testing.tiny_vlm`'s InternVL3 with ``--vision-layers`` blocks and a random
SAE at the middle block's output, with a fixed length too; ``--family qwen2_vl`` and
``--family qwen2_5_vl`` build theirs the same way (the batch's empty images packed into one
sequence on both sides), and ``--family llava`` and ``--family paligemma`` too (the SAE's middle
block is before LLaVA's feature layer, the penultimate), and ``--family llava_next`` and
``--family llava_onevision`` (each empty image is a base crop and its tiles, batch rows of the tower on
both sides). For InternVL the baseline steers the
patches only, as (a) does (the class token is left alone).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from vis_steer_lens.explain import SteeringExplainer
from vis_steer_lens.explain.text import explanation_and_flag
from vis_steer_lens.testing import TINY_FAMILIES


def toy_setup(device: str):
    from vis_steer_lens import toy

    bundle = toy.load(device=device)
    return bundle.vlm, bundle.sae, "toy"


def random_release(
    name: str,
    device: str,
    dtype: torch.dtype,
    n_vision_layers: int | None,
    n_text_layers: int | None,
    vocab_size: int | None,
    sae_layer: int | None,
):
    """A released architecture with random weights (``random_vlm``) and a random SAE of the paper's
    shape at vision layer ``sae_layer`` (default 16, or half the depth of a shallower tower)."""
    from vis_steer_lens.testing import random_sae, random_vlm

    vlm = random_vlm(
        name,
        n_vision_layers=n_vision_layers,
        n_text_layers=n_text_layers,
        vocab_size=vocab_size,
        dtype=dtype,
        device=device,
    )
    depth = vlm.vision.cfg.n_layers
    layer = sae_layer if sae_layer is not None else (16 if depth > 16 else depth // 2)
    # The SAE in the model's dtype, so that both sides round the steering direction alike.
    sae = random_sae(vlm, f"blocks.{layer}.hook_resid_post", dtype=dtype)
    return vlm, sae, "default"


def random_family(family: str, vision_layers: int):
    """A tiny random VLM of a family (InternVL3: a class token and layer scale; Qwen2-VL / Qwen2.5-VL:
    packed native-resolution images, windows; LLaVA-1.5: CLIP; PaliGemma 2: prefix-LM) and a random SAE
    mid-tower."""
    from vis_steer_lens.testing import tiny_sae, tiny_vlm

    vlm = tiny_vlm(family, vision_layers=vision_layers, seed=1)
    sae = tiny_sae(vlm, f"blocks.{vision_layers // 2}.hook_resid_post", d_sae=512, k=8)
    return vlm, sae, "default"


def paper_baseline(vlm, sae, features, coefficient, prompt, max_new_tokens, image_inputs, batch_size=8):
    """The authors' loop: full model per batch, HF forward hook on the encoder layer, fixed length.

    ``image_inputs(n)`` gives the tower inputs of ``n`` copies of the empty image (``pixel_values``,
    and ``image_grid_thw`` for packed towers, whose encoder layers output ``[tokens, d]`` for the
    whole batch, each copy's tokens one contiguous span)."""
    explainer = SteeringExplainer(
        vlm, sae, coefficient=coefficient, prompt=prompt, max_new_tokens=max_new_tokens
    )
    # The Hugging Face module whose output is the SAE's hook (the encoder layer's output).
    layer = vlm.hf_model.get_submodule(vlm.vision.equivalent_names(explainer.hook_name).hf_module)
    n_prefix = vlm.vision.cfg.n_prefix_tokens
    packed = vlm.vision.cfg.packed
    crop_tokens = explainer.geometry.crop_tokens  # AnyRes: each copy is several crops (batch rows)
    inputs = {k: v for k, v in explainer._inputs.items()}
    tokenizer = explainer._tokenizer
    prefix = explainer.prompt.prefix("steering")
    texts = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        delta = coefficient * sae.W_dec.detach()[chunk].to(vlm.device, vlm.dtype).unsqueeze(1)
        if packed:  # [n * tokens, d]: each copy's span gets its row's direction
            delta = delta.squeeze(1).repeat_interleave(explainer.geometry.n_positions, dim=0)
        elif n_prefix:  # steer the patches only, as SteeringExplainer does by default
            delta = delta.expand(-1, vlm.vision.cfg.n_tokens, -1).clone()
            delta[:, :n_prefix] = 0
        if crop_tokens:  # [n * crops, tokens, d]: every crop of copy i gets row i's direction
            delta = delta.repeat_interleave(explainer.geometry.n_positions // crop_tokens, dim=0)

        def add(module, args, output, delta=delta):
            return output + delta

        # First among the layer's hooks: transformers collects hidden_states (what LLaVA's projector
        # reads) by hooks of its own, registered on the first call; after them ours would go unseen.
        handle = layer.register_forward_hook(add, prepend=True)
        try:
            with torch.no_grad():
                batch = {k: v.expand(len(chunk), -1) for k, v in inputs.items()}
                tokens = vlm.hf_model.generate(
                    **{**batch, **image_inputs(len(chunk))},
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
        finally:
            handle.remove()
        prompt_length = batch["input_ids"].shape[1]
        for row in tokens[:, prompt_length:]:
            raw = tokenizer.decode(row, skip_special_tokens=True)
            # The library's own reading of an answer (repetitions collapsed), so both sides compare alike.
            texts.append(explanation_and_flag(raw, prefix, explainer.prompt.strip, True)[0])
    return texts


def timed(fn, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--max-new-tokens", type=int, default=40, help="the baseline decodes this many tokens"
    )
    parser.add_argument(
        "--coefficient", type=float, default=None, help="default: 2x the hook's mean patch norm"
    )
    parser.add_argument(
        "--random-weights",
        choices=["gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "internvl3-14b"],
        default=None,
        help="a released architecture with random weights",
    )
    parser.add_argument(
        "--n-text-layers",
        type=int,
        default=2,
        help="with --random-weights: language model layers (CPU-sized)",
    )
    parser.add_argument(
        "--n-vision-layers",
        type=int,
        default=None,
        help="with --random-weights (default: the released depth)",
    )
    parser.add_argument(
        "--vocab-size", type=int, default=None, help="with --random-weights (default: released)"
    )
    parser.add_argument(
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        default="bfloat16",
        help="with --random-weights",
    )
    parser.add_argument(
        "--full-depth", action="store_true", help="with --random-weights: the released depth and vocabulary"
    )
    parser.add_argument("--sae-layer", type=int, default=None, help="with --random-weights (default: 16)")
    parser.add_argument(
        "--min-agreement", type=float, default=1.0, help="fail below this fraction of identical explanations"
    )
    parser.add_argument(
        "--min-distinct",
        type=int,
        default=2,
        help="fail below this many distinct steered answers (a model that ignores the image gives 1)",
    )
    parser.add_argument(
        "--family",
        choices=list(TINY_FAMILIES),
        default="gemma3",
        help="gemma3: the toy VLM (a Gemma 3); the others: a tiny random model of the family",
    )
    parser.add_argument("--vision-layers", type=int, default=12, help="with --family other than gemma3")
    parser.add_argument("--fixed-tokens", type=int, default=None, help="force this length on both sides")
    parser.add_argument(
        "--paper-tokens",
        type=int,
        default=None,
        help="also time the paper's procedure at this length (theirs: 200)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each; medians reported")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    if args.random_weights:
        if args.full_depth and (args.n_vision_layers or args.vocab_size):
            parser.error(
                "--full-depth is the released depth and vocabulary; drop --n-vision-layers / --vocab-size"
            )
        vlm, sae, prompt = random_release(
            args.random_weights,
            args.device,
            getattr(torch, args.dtype),
            n_vision_layers=None if args.full_depth else args.n_vision_layers,
            n_text_layers=None if args.full_depth else args.n_text_layers,
            vocab_size=None if args.full_depth else args.vocab_size,
            sae_layer=args.sae_layer,
        )
        args.fixed_tokens = args.fixed_tokens or 16
    elif args.family != "gemma3":
        vlm, sae, prompt = random_family(args.family, args.vision_layers)
        args.fixed_tokens = args.fixed_tokens or 8
    else:
        vlm, sae, prompt = toy_setup(args.device)
    max_new_tokens = args.fixed_tokens or args.max_new_tokens
    features = list(range(min(args.features, sae.cfg.d_sae)))

    probe = SteeringExplainer(vlm, sae, coefficient=1.0, prompt=prompt)
    coefficient = args.coefficient if args.coefficient is not None else 2.0 * probe.patch_norm()
    ours = SteeringExplainer(
        vlm,
        sae,
        coefficient=coefficient,
        prompt=prompt,
        batch_size=args.batch_size,
        max_new_tokens=max_new_tokens,
        stop_at_sentence_end=args.fixed_tokens is None,
    )
    # The floor's length is (a)'s mean answer length, so (a) runs once (also a warm-up) before the
    # timed rounds.
    frame = ours.explain(features, progress=False)
    tokenizer = ours._tokenizer
    mean_new = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in frame["raw_generation"])
    floor_tokens = args.fixed_tokens or max(1, math.ceil(mean_new / len(frame)))

    def image_inputs(n):
        """The tower inputs of n copies of the empty image (packed towers: one sequence)."""
        pixels, extra = ours._batch_image_inputs(n)
        return {"pixel_values": pixels, **extra}

    def floor():
        for start in range(0, len(features), args.batch_size):
            n = len(features[start : start + args.batch_size])
            batch = {k: v.expand(n, -1) for k, v in ours._inputs.items()}
            with torch.no_grad():
                vlm.hf_model.generate(
                    **{**batch, **image_inputs(n)},
                    max_new_tokens=floor_tokens,
                    min_new_tokens=floor_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )

    def same_work():
        for start in range(0, len(features), args.batch_size):
            n = len(features[start : start + args.batch_size])
            batch = {k: v.expand(n, -1) for k, v in ours._inputs.items()}
            with torch.no_grad():
                if ours._prefix is None:
                    image_features = vlm.encode_images(**image_inputs(n))
                elif vlm.vision.variable_grids:  # n copies packed, or their AnyRes crops, with their geometry
                    resid = (
                        ours._prefix.repeat(1, n, 1)
                        if vlm.vision.cfg.packed
                        else ours._prefix.repeat(n, 1, 1)
                    )
                    image_features = vlm.encode_images(
                        resid=resid, start_at_layer=ours._start_layer, geometry=ours._batch_geometry(n)
                    )
                else:
                    resid = ours._prefix.expand(n, -1, -1)
                    image_features = vlm.encode_images(resid=resid, start_at_layer=ours._start_layer)
                vlm.generate(
                    **batch,
                    image_features=image_features,
                    max_new_tokens=floor_tokens,
                    min_new_tokens=floor_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )

    times: dict[str, list[float]] = {"ours": [], "base": [], "floor": [], "same": [], "paper": []}
    for _ in range(args.repeats):
        times["same"].append(timed(same_work, args.device)[1])
        if args.paper_tokens:
            times["paper"].append(
                timed(
                    lambda: paper_baseline(
                        vlm, sae, features, coefficient, prompt, args.paper_tokens, image_inputs
                    ),
                    args.device,
                )[1]
            )
        frame, t = timed(lambda: ours.explain(features, progress=False), args.device)
        times["ours"].append(t)
        baseline, t = timed(
            lambda: paper_baseline(vlm, sae, features, coefficient, prompt, max_new_tokens, image_inputs),
            args.device,
        )
        times["base"].append(t)
        times["floor"].append(timed(floor, args.device)[1])
    t_ours, t_base, t_floor = (statistics.median(times[key]) for key in ("ours", "base", "floor"))
    agree = sum(a == b for a, b in zip(frame["explanation"], baseline, strict=True)) / len(features)
    n = len(features)
    distinct = frame["raw_generation"].nunique()
    print(
        f"model {vlm.model_name}, SAE {sae.cfg.metadata.hook_name}, {n} features, device {args.device}, "
        f"{torch.get_num_threads()} threads, coefficient {coefficient:.1f}, median of {args.repeats} runs"
    )
    print(f"(a) SteeringExplainer  batch {args.batch_size:>3}: {n / t_ours:8.2f} features/s ({t_ours:.1f} s)")
    print(
        f"(b) paper procedure    batch   8: {n / t_base:8.2f} features/s ({t_base:.1f} s, {max_new_tokens} tokens)"
    )
    print(
        f"(c) unsteered generate batch {args.batch_size:>3}: {n / t_floor:8.2f} features/s ({floor_tokens} tokens)"
    )
    t_same = statistics.median(times["same"])
    print(
        f"(d) same work, plain   batch {args.batch_size:>3}: {n / t_same:8.2f} features/s "
        f"(tower after the hook, projector, prefill, {floor_tokens} decode steps)"
    )
    if args.paper_tokens:
        t_paper = statistics.median(times["paper"])
        print(
            f"(b') paper procedure   batch   8: {n / t_paper:8.2f} features/s "
            f"({t_paper:.1f} s, {args.paper_tokens} tokens, the authors' setting)"
        )
    print(f"explanations identical (first sentence): {agree:.1%}")
    print(f"distinct steered answers: {distinct} of {n}")
    print(f"ratio (a)/(b) = {t_base / t_ours:.2f}x  (target >= 3)")
    print(f"ratio (a)/(c) = {t_floor / t_ours:.2f}   (target >= 0.9)")
    print(f"ratio (a)/(d) = {t_same / t_ours:.2f}   (target >= 0.9: the same work done plainly)")
    if args.paper_tokens:
        print(f"ratio (a)/(b') = {t_paper / t_ours:.2f}x  (against the authors' {args.paper_tokens} tokens)")
    failures = []
    if agree < args.min_agreement:
        failures.append(f"only {agree:.1%} of the explanations equal the baseline's")
    if n > 1 and distinct < min(n, args.min_distinct):
        failures.append(
            f"{distinct} distinct answers for {n} features: the answer hardly depends on the feature"
        )
    if failures:
        raise SystemExit("CHECK FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
