"""The ``vis-steer-lens`` command line.

Every command defaults to the embedded toy world when no ``--model`` is given, shows progress,
writes results as it goes and resumes where it stopped when run again with the same output.
Heavy libraries (torch, transformers) load only inside the command that runs, so ``--help`` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from vis_steer_lens.atomic import atomic_path
from vis_steer_lens.choices import DIRECTIONS, DISPLAYS, EMPTY_IMAGES, METHODS, SELECT_BY


def _say(args: argparse.Namespace, message: str) -> None:
    """A status line on stderr (what is loading, what was chosen), unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def resolve_device(name: str | None) -> str:
    """``--device``: ``auto`` is CUDA when there is a GPU, else the CPU; ``cuda`` without one is an error.

    Raises:
        SystemExit: With one line, for a CUDA device on a machine without CUDA.
    """
    import torch

    name = name or "auto"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}, "
            f"{'built without CUDA' if torch.version.cuda is None else 'no device visible'}). "
            "Use --device cpu, or --device auto to take a GPU only where there is one."
        )
    return name


def _dtype(name: str | None):
    import torch

    if name is None:
        return None
    try:
        return {
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
            "float64": torch.float64,
        }[name]
    except KeyError:
        raise SystemExit(f"--dtype must be float32, bfloat16, float16 or float64, got {name!r}") from None


def _coefficient(text: str) -> float | str:
    import math

    if text in ("auto", "paper"):
        return text
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto', 'paper' or a number, got {text!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return number


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 or 'auto', got {text!r}") from None


def load_model_and_sae(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The subject model and SAE named on the command line, or the toy world's; and the prompt to use."""
    from vis_steer_lens import load_sae
    from vis_steer_lens.distributed import current_world, device_for

    # One GPU per rank under a launcher.
    args.device = device_for(current_world(), resolve_device(args.device))
    nonfinite = "drop" if getattr(args, "drop_nonfinite_features", False) else "error"
    if args.model is None:
        from vis_steer_lens import toy

        _say(args, f"Loading the toy world's VLM and SAE on {args.device}...")
        bundle = toy.load(device=args.device)
        if args.dtype is not None:  # the toy model is float32; honour --dtype as for a real model
            bundle.vlm.to(_dtype(args.dtype))
        sae = (
            bundle.sae
            if args.sae is None
            else load_sae(args.sae, args.sae_id, model=bundle.vlm, device=args.device, nonfinite=nonfinite)
        )
        if sae is None:
            raise SystemExit("The toy world ships no SAE in this install; pass --sae.")
        return bundle.vlm, sae, getattr(args, "prompt", None) or "toy"
    if args.sae is None:
        raise SystemExit("--sae is required with --model.")
    _say(args, f"Loading {args.model} on {args.device} and the SAE {args.sae} {args.sae_id or ''}...")
    vlm = _load_subject_model(args.model, args.device, _dtype(args.dtype))
    sae = load_sae(args.sae, args.sae_id, model=vlm, device=args.device, nonfinite=nonfinite)
    return vlm, sae, getattr(args, "prompt", None) or "default"


def _load_subject_model(name: str, device: Any, dtype: Any) -> Any:
    """A HookedVLM, or for a vision-only tower (CLIP, SigLIP, DINOv2) a HookedViT with its image
    processor: mining, Top-k displays and the dashboard read a tower; what needs a language model
    refuses it with NoLanguageModelError."""
    from vis_steer_lens import HookedViT, HookedVLM
    from vis_steer_lens.families import adapter_for

    adapter = adapter_for(name)
    if adapter.has_language_model:
        return HookedVLM.from_pretrained(name, device=device, dtype=dtype)
    vit = HookedViT.from_pretrained(name, device=device, dtype=dtype)
    vit.image_processor = adapter.load_processor(name)
    return vit


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="hub id or folder of the subject VLM, or of a vision-only tower (CLIP, SigLIP, DINOv2: mine and "
        "the dashboard read it; steering refuses it) (default: the toy world)",
    )
    parser.add_argument("--sae", help="SAE source: folder, release, or hub repo (default: the toy SAE)")
    parser.add_argument("--sae-id", help="SAE id inside a release, or folder inside a hub repo")
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N, or auto (a GPU where there is one)"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16", "float16", "float64"),
        help="weights' dtype (default: the checkpoint's)",
    )
    parser.add_argument(
        "--drop-nonfinite-features",
        action="store_true",
        help="leave out SAE features whose weights are NaN or inf (default: refuse such an SAE)",
    )


def _check_select_by(args: argparse.Namespace, run: Any, mined: Any) -> str | None:
    """``explain --select-by``: the scorer that chooses the run's coefficient now, or None (checked
    before any model loads)."""
    if args.select_by is None:
        return None
    if args.method != "steering" or args.coefficient != "auto":
        raise SystemExit(
            f"--select-by chooses the run's auto steering coefficient; it was given with --method "
            f"{args.method} --coefficient {args.coefficient}. Use --method steering --coefficient auto."
        )
    existing = run.coefficient()
    if existing is not None:
        if existing.select_by != args.select_by:
            raise SystemExit(
                f"Run {str(run.root)!r} steers at coefficient {existing.describe()}, chosen by "
                f"{existing.select_by!r}, not {args.select_by!r}; drop --select-by, or start a new run folder."
            )
        return None  # the run's coefficient is reused; nothing to select
    if args.select_by != "distinct" and mined is None:
        raise SystemExit(
            f"--select-by {args.select_by} scores the sweep's answers on the run's top images: run "
            f"`vis-steer-lens mine --run {run.root}` first."
        )
    if args.select_by in ("likelihood", "detection") and args.model is not None and args.images is None:
        raise SystemExit(
            f"--select-by {args.select_by} with --model needs --images: the held-out image pool."
        )
    return args.select_by


def _coefficient_selector(args: argparse.Namespace, name: str | None, vlm: Any, sae: Any, mined: Any) -> Any:
    """The ``select_by`` of the run's calibration for ``explain --select-by NAME`` (None: the default rule)."""
    from vis_steer_lens.evaluate.selection import make_selector
    from vis_steer_lens.image_sources import as_image_source
    from vis_steer_lens.plugins import SEGMENTERS
    from vis_steer_lens.runs import reference_key

    if name is None or name == "distinct":
        return None
    segmenter = images = pool_key = None
    if name.startswith("segmentation_iou"):
        from vis_steer_lens.evaluate.segmentation_iou import GroundingDinoSamSegmenter

        segmenter_name = args.segmenter or ("toy" if args.model is None else "grounding-dino")
        if segmenter_name == "grounding-dino":
            segmenter = GroundingDinoSamSegmenter(device=args.device)
        else:
            segmenter = SEGMENTERS.get(segmenter_name)()
    else:
        if args.images is not None:
            pool = as_image_source(args.images)
        else:  # the toy world's fresh scenes (checked: no --model)
            from vis_steer_lens.toy import ToyImages

            pool = ToyImages(seed=args.seed + 404, n=1000)
        count = min(1000, len(pool))
        images = [pool[i] for i in range(count)]
        pool_key = reference_key(pool.source_id, count)
    return make_selector(
        name, vlm, sae, mined, segmenter=segmenter, images=images, seed=args.seed, pool_key=pool_key
    )


def cmd_explain(args: argparse.Namespace) -> int:
    from vis_steer_lens.distributed import current_world
    from vis_steer_lens.explain import make_explainer, parse_features
    from vis_steer_lens.explain.calibration import calibrate_run
    from vis_steer_lens.runs import RunFolder, run_name

    if args.out is not None:
        raise SystemExit(f"explain writes into a run folder: pass --run {args.out} (not --out).")
    run = RunFolder(args.run)
    # What is wrong with the command line is said before a model loads (minutes for a real one).
    mined = None
    if args.mined is not None or run.has_mined():
        from vis_steer_lens.mining import MinedActivations

        mined = MinedActivations.load(args.mined) if args.mined is not None else run.mined()
        if not mined.complete:
            raise SystemExit(
                f"The mining checkpoint has {mined.images_processed} of {mined.meta['n_images']} images: it is "
                "unfinished. Rerun the same `vis-steer-lens mine` command to finish it first."
            )
        if args.k_images is not None and args.k_images > mined.k:
            raise SystemExit(
                f"--k-images {args.k_images} asks for more top images than were mined ({mined.k} per feature); "
                f"pass --k-images {mined.k} or less, or mine again with --k-images {args.k_images}."
            )
    elif args.method != "steering":
        raise SystemExit(
            f"--method {args.method} needs mined top images: run `vis-steer-lens mine --run {run.root}` "
            "first, or pass --mined DIR."
        )
    elif args.features is not None and args.features.strip() == "live":
        raise SystemExit(
            f"--features live needs mined statistics (which features fired): run `vis-steer-lens mine --run "
            f"{run.root}` first, or name the features (e.g. --features 0:512)."
        )
    select_name = _check_select_by(args, run, mined)
    live = mined.live_features(args.min_frequency) if mined is not None else None
    run.explanations_dir.mkdir(parents=True, exist_ok=True)
    vlm, sae, prompt = load_model_and_sae(args)
    run.claim(sae, vlm)  # a run holds one SAE and one model
    features = parse_features(args.features, sae.cfg.d_sae, live=live)
    select_by = _coefficient_selector(args, select_name, vlm, sae, mined)

    coefficient, sweep_explainer = args.coefficient, None
    if args.method == "steering":  # the run's one coefficient, for the SAE direction and controls alike
        choice, sweep_explainer = calibrate_run(
            run,
            vlm,
            sae,
            args.coefficient,
            prompt=prompt,
            empty_image=args.empty_image,
            min_frequency=args.min_frequency,
            live=live,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=not args.quiet,
            log=(lambda line: _say(args, line)) if current_world().is_main else None,
            select_by=select_by,
            explained=features,
        )
        coefficient = choice.coefficient
    elif args.method == "hybrid" and args.coefficient == "paper":
        raise SystemExit(
            "--coefficient paper is Steering's fixed coefficient; the hybrid's is a multiple of each image's "
            "patch norm: pass a number (default 1.0) or auto."
        )
    if sweep_explainer is not None and args.direction == "sae":
        explainer = sweep_explainer  # its sweep rows at the choice are these features' explanations
        explainer.live_features = None if live is None else set(live)
    else:
        explainer = make_explainer(
            args.method,
            vlm,
            sae,
            mined=mined,
            coefficient=coefficient,
            empty_image=args.empty_image,
            k_images=args.k_images,
            display=args.display,
            batch_size=args.batch_size,
            prompt=prompt,
            max_new_tokens=args.max_new_tokens,
            direction=args.direction,
            seed=args.seed,
        )
        if live is not None:
            explainer.live_features = set(live)
    name = run_name(args.method, args.direction)
    frame = explainer.explain(features, out=run.explanations_path(name), progress=not args.quiet)
    if not current_world().is_main:  # under torchrun every rank returns the merged rows; rank 0 reports
        return 0
    with atomic_path(run.explanations_export(name)) as tmp:
        frame.to_parquet(tmp, index=False)
    flags = frame["flag"] if "flag" in frame else None
    dead = int((flags == "dead").sum()) if flags is not None else 0
    shown = frame if flags is None else frame[flags != "dead"]
    if args.show > 0:
        print(shown[["feature", "explanation"]].to_string(index=False, max_rows=args.show))
    summary = f"\n{len(frame)} explanations written to {run.explanations_path(name)} (and .parquet)"
    if dead:
        summary += (
            f"; {dead} of the features never fired in the mined images and were skipped (rows flagged 'dead')"
        )
    flagged = int(flags.isin(["repetition", "unfinished", "empty"]).sum()) if flags is not None else 0
    if flagged:
        summary += f"; {flagged} answers flagged (repetition, unfinished or empty)"
    print(summary)
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from vis_steer_lens.distributed import current_world
    from vis_steer_lens.image_sources import as_image_source
    from vis_steer_lens.mining import mine_top_activations
    from vis_steer_lens.mining.run import _check_writable
    from vis_steer_lens.runs import RunFolder

    if (args.out is None) == (args.run is None):
        raise SystemExit("Pass --run RUN (mined activations go to RUN/mined) or --out DIR, not both.")
    out = args.out if args.out is not None else str(RunFolder(args.run).mined_dir)
    # The output and the images are checked before the model and SAE load (minutes for a real model).
    _check_writable(Path(out))
    if args.images is None:
        if args.model is not None:
            raise SystemExit("--images is required with --model.")
        from vis_steer_lens.toy import ToyImages

        images = ToyImages(seed=args.seed, n=args.n_images)
    else:
        images = as_image_source(args.images)
    vlm, sae, _ = load_model_and_sae(args)
    if args.run is not None:
        RunFolder(args.run).claim(sae, vlm)  # a run holds one SAE and one model
    mined = mine_top_activations(
        vlm,
        sae,
        images,
        k=args.k_images,
        batch_size=args.batch_size,
        rank_by=args.rank_by,
        out_dir=out,
        progress=not args.quiet,
    )
    if not current_world().is_main:  # under torchrun every rank returns the merged result; rank 0 reports
        return 0
    live = len(mined.live_features())
    summary = f"Mined {len(mined.feature_ids)} features over {mined.images_mined} images ({live} fired)"
    skipped = mined.skipped_images
    if skipped:
        names = ", ".join(item["name"] for item in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        summary += f"; skipped {len(skipped)} unreadable image(s): {names}"
    dropped = sae.cfg.metadata.get("dropped_features") or []
    if dropped:
        shown = ", ".join(map(str, dropped[:10])) + (", ..." if len(dropped) > 10 else "")
        summary += f"; left out {len(dropped)} feature(s) with NaN or inf weights: {shown}"
    batch = (
        f" (batch size {mined.meta['batch_size']}, chosen by 'auto')"
        if mined.meta.get("batch_size_auto")
        else ""
    )
    print(f"{summary}; saved to {out}{batch}")
    return 0


def _grid_ints(what: str):
    def parse(text: str) -> list[int]:
        from vis_steer_lens.saes.grid import GridSettingsError, parse_int_list

        try:
            return parse_int_list(text, what)
        except GridSettingsError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _subject_model(args: argparse.Namespace) -> Any:
    """The model named by ``--model`` (a VLM, or a vision-only tower: :func:`_load_subject_model`),
    or the toy world's VLM."""
    from vis_steer_lens.distributed import current_world, device_for

    args.device = device_for(current_world(), resolve_device(args.device))
    if args.model is None:
        from vis_steer_lens import toy

        _say(args, f"Loading the toy world's VLM on {args.device}...")
        vlm = toy.load(device=args.device).vlm
        if args.dtype is not None:
            vlm.to(_dtype(args.dtype))
        return vlm
    _say(args, f"Loading {args.model} on {args.device}...")
    return _load_subject_model(args.model, args.device, _dtype(args.dtype))


def _training_images(args: argparse.Namespace) -> Any:
    if args.images is None:
        if args.model is not None:
            raise SystemExit("--images is required with --model.")
        from vis_steer_lens.toy import ToyImages

        return ToyImages(seed=args.seed, n=args.n_images)
    from vis_steer_lens.image_sources import as_image_source

    return as_image_source(args.images)


def cmd_cache(args: argparse.Namespace) -> int:
    from vis_steer_lens.distributed import current_world
    from vis_steer_lens.runs import RunFolder
    from vis_steer_lens.saes.cache import cache_activations

    images = _training_images(args)
    model = _subject_model(args)
    out = RunFolder(args.run).activations_dir
    cache = cache_activations(
        model,
        args.hooks,
        images,
        out,
        tokens=args.tokens,
        dtype=args.cache_dtype,
        images_per_shard=args.images_per_shard,
        batch_size=args.batch_size,
        resume=not args.restart,
        progress=not args.quiet,
    )
    if current_world().is_main:
        manifest = cache.manifest
        speed = manifest.get("throughput") or {}
        rate = (
            f"; {speed['images_per_s']:.1f} images/s, {speed['rows_per_s']:.0f} rows/s"
            if speed.get("images_per_s")
            else ""
        )
        print(
            f"Cached {manifest['rows_done']} rows ({manifest['token_selection']} tokens) of "
            f"{', '.join(manifest['hooks'])} over {manifest['images_done']} images in "
            f"{len(manifest['shards'])} shards to {out}{rate}"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from vis_steer_lens.distributed import current_world
    from vis_steer_lens.runs import RunFolder
    from vis_steer_lens.saes.cache import MANIFEST_FILE, ActivationCache
    from vis_steer_lens.saes.grid import grid_points, train_sae_grid

    grid_points(args.architecture, args.widths, args.k)  # bad grids fail before the model loads
    run = RunFolder(args.run)
    cached = (run.activations_dir / MANIFEST_FILE).is_file()
    cache = ActivationCache.open(run.activations_dir) if cached else None
    images = None if cached and args.images is None else _training_images(args)
    model = _subject_model(args)
    if cache is None:
        _say(args, f"No activation cache in {run.activations_dir}; streaming activations from the tower.")
    saes = train_sae_grid(
        model,
        args.hook,
        run.saes_dir,
        widths=args.widths,
        ks=args.k,
        architecture=args.architecture,
        training_tokens=args.training_tokens,
        cache=cache,
        images=images,
        tokens=args.tokens,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        n_eval_images=args.eval_images,
        n_loss_images=args.loss_images,
        checkpoint_every=args.checkpoint_every,
        resume=not args.restart,
        progress=not args.quiet,
    )
    if current_world().is_main:
        for name, sae in saes.items():
            report = sae.cfg.metadata.training_report
            loss = report.get("loss_recovered")
            print(
                f"{run.saes_dir / name}: explained variance {report.get('explained_variance', float('nan')):.4f}, "
                f"L0 {report.get('mean_l0', float('nan')):.1f}, dead {report.get('dead_fraction', float('nan')):.3f}, "
                f"dense {report.get('dense_fraction', float('nan')):.3f}, loss recovered "
                + ("n/a" if loss is None else f"{loss:.3f}")
            )
    return 0


def cmd_toy_build(args: argparse.Namespace) -> int:
    from vis_steer_lens.toy.training import ToyTrainingConfig, train_toy_model

    config = ToyTrainingConfig(
        seed=args.seed,
        steps=args.steps,
        threads=args.threads,
        max_minutes=args.max_minutes,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        init_from=args.init_from,
    )
    log = train_toy_model(args.out, config, resume=not args.restart, progress=not args.quiet)
    print(
        f"Trained {int(log['step'].max()) + 1 if len(log) else 0} steps; model in {Path(args.out) / 'model'}"
    )
    if not args.no_eval:
        from vis_steer_lens import HookedVLM
        from vis_steer_lens.toy.evaluation import caption_accuracy

        vlm = HookedVLM.from_pretrained(str(Path(args.out) / "model"))
        print(json.dumps(caption_accuracy(vlm, n_images=args.eval_images), indent=2))
    return 0


def cmd_toy_sae(args: argparse.Namespace) -> int:
    import torch

    from vis_steer_lens import HookedVLM, toy
    from vis_steer_lens.toy import feature_concepts, summarize_feature_concepts
    from vis_steer_lens.toy.loading import TOY_MODEL_NAME
    from vis_steer_lens.toy.sae import DEFAULT_D_SAE, DEFAULT_HOOK, DEFAULT_K, train_toy_sae

    torch.set_num_threads(args.threads)
    if args.model is None:
        vlm = toy.load(device=args.device).vlm
    else:
        vlm = HookedVLM.from_pretrained(args.model, device=args.device, model_name=TOY_MODEL_NAME)
    sae, _ = train_toy_sae(
        vlm,
        args.hook or DEFAULT_HOOK,
        d_sae=DEFAULT_D_SAE if args.d_sae is None else args.d_sae,
        k=DEFAULT_K if args.k is None else args.k,
        total_training_samples=args.tokens,
        background_rate=args.background_rate,
        seed=args.seed,
        progress=not args.quiet,
    )
    from vis_steer_lens.atomic import atomic_folder

    with atomic_folder(args.out) as tmp:
        sae.save_model(str(tmp))
    report = sae.cfg.metadata.training_report
    print(
        f"Saved to {args.out}: explained variance {report['explained_variance']:.4f}, "
        f"L0 {report['mean_l0']:.1f}, dead fraction {report['dead_fraction']:.3f}"
    )
    if not args.no_eval:
        summary = summarize_feature_concepts(feature_concepts(vlm, sae, n_images=args.eval_images, seed=303))
        pooled = int((summary["best_object_pooled_auroc"] >= 0.9).sum())
        print(
            f"{len(summary)} live features; {int(summary['clear'].sum())} with a clear non-background "
            f"concept in their background context ({pooled} over all scenes)"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vis_steer_lens.demo import print_demo, run_demo

    print_demo(run_demo(args.out, progress=not args.quiet))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vis_steer_lens.evaluate import DiffusersGenerator, GenerationAUROCScorer
    from vis_steer_lens.evaluate.compare import format_table
    from vis_steer_lens.explain import read_results
    from vis_steer_lens.image_sources import as_image_source
    from vis_steer_lens.runs import RunFolder, reference_key, run_name

    if args.scorer == "ground_truth":
        return _evaluate_ground_truth(args)
    if args.scorer != "generation_auroc":
        return _evaluate_other(args)
    if args.run is not None:
        if args.explanations is not None or args.out is not None:
            raise SystemExit(
                "With --run, the explanations and the scores are the run's: drop --explanations/--out."
            )
        run = RunFolder(args.run)
        name = run_name(args.method, args.direction)
        explanations = run.explanations([name])
        if explanations is None:
            raise SystemExit(
                f"{run.root} has no {name} explanations (it has {run.explanation_names() or 'none'}); run "
                f"`vis-steer-lens explain --run {run.root} --method {args.method}` first."
            )
        scores_path = run.scores_path(name)
    else:
        if args.explanations is None or args.out is None:
            raise SystemExit("Pass --run RUN --method METHOD, or --explanations FILE --out DIR.")
        run, explanations = None, read_results(args.explanations)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        scores_path = out / "scores.jsonl"
        name = args.method
    if args.model is None:
        from vis_steer_lens.toy import ToyGenerator, ToyImages

        generator = ToyGenerator()
        if args.images is not None:  # the reference images given, else fresh toy images
            reference = as_image_source(args.images)
        else:
            reference = ToyImages(seed=args.seed + 202, n=args.n_reference)
    else:
        if args.images is None or args.diffusers is None:
            raise SystemExit(
                "With --model, pass --images (reference images) and --diffusers (a text-to-image model)."
            )
        reference = as_image_source(args.images)
    if args.n_reference > len(reference):
        raise SystemExit(
            f"--n-reference {args.n_reference} asks for more reference images than --images holds "
            f"({len(reference)}); pass --n-reference {len(reference)} or less, or more images."
        )
    vlm, sae, _ = load_model_and_sae(args)
    if run is not None:
        run.claim(sae, vlm)  # a run holds one SAE and one model
    if args.model is not None:
        if args.diffusers == "toy":  # the toy world's renderer draws what an explanation names, offline
            from vis_steer_lens.toy import ToyGenerator

            generator = ToyGenerator()
        else:
            generator = DiffusersGenerator(args.diffusers, device=args.device)
    count = args.n_reference
    # In a run, each method's rows name their reference set, kept under that key: scoring one method
    # with other negatives never changes another's numbers.
    key = None if run is None else reference_key(reference.source_id, count)
    if run is not None and _scored_before_keys(scores_path):
        key = None  # a method scored before reference sets were keyed resumes against the unkeyed one
    scorer = GenerationAUROCScorer(
        vlm,
        sae,
        generator,
        [reference[i] for i in range(count)],
        n_images=args.n_generated,
        seed=args.seed,
        reference_key=key,
        evidence_dir=None if run is None else run.evidence_dir,  # shown on the dashboard's feature pages
    )
    if run is not None:  # first, so that rows of an interrupted scoring can be read against it
        run.save_reference(*scorer.reference_activations(), key=key)
    scores = scorer.score(explanations, progress=not args.quiet, out_path=scores_path, desc=f"scoring {name}")
    table = scorer.summary(scores)
    if run is not None:
        print(format_table(table))
        print(
            f"\nScores in {scores_path}; `vis-steer-lens compare {run.root}` tabulates every scored method."
        )
        return 0
    with atomic_path(out / "scores.csv") as tmp:
        scores.drop(columns=["positives_mean", "positives_max"], errors="ignore").to_csv(tmp, index=False)
    with atomic_path(out / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    print(format_table(table))
    return 0


def _evaluate_other(args: argparse.Namespace) -> int:
    """``evaluate --scorer clip|segmentation_iou|detection|likelihood`` on a run's --method explanations."""
    from vis_steer_lens.evaluate.compare import SCORER_COLUMNS
    from vis_steer_lens.evaluate.metrics import bootstrap_mean_ci
    from vis_steer_lens.image_sources import as_image_source
    from vis_steer_lens.mining import MinedActivations
    from vis_steer_lens.runs import RunFolder, reference_key, run_name

    if args.run is None:
        raise SystemExit(
            f"--scorer {args.scorer} scores a run's explanations: pass --run RUN --method METHOD."
        )
    run = RunFolder(args.run)
    name = run_name(args.method, args.direction)
    explanations = run.explanations([name])
    if explanations is None:
        raise SystemExit(
            f"{run.root} has no {name} explanations (it has {run.explanation_names() or 'none'}); run "
            f"`vis-steer-lens explain --run {run.root} --method {args.method}` first."
        )
    if not run.has_mined():
        raise SystemExit(
            f"--scorer {args.scorer} reads the run's top images: {run.root} has none; run "
            f"`vis-steer-lens mine --run {run.root}` first."
        )
    if args.features is not None and args.features.strip() == "clear" and run.ground_truth() is None:
        raise SystemExit(
            f"--features clear needs the run's ground truth: run `vis-steer-lens evaluate --run {run.root} "
            "--scorer ground_truth` first, or name the features (e.g. '0:512')."
        )
    if args.scorer == "clip":  # a CLIP model that cannot load is said before the subject model loads
        from vis_steer_lens.evaluate.clip_similarity import ClipSimilarityScorer

        try:
            similarity = ClipSimilarityScorer(args.clip_model)
        except (OSError, ValueError) as err:
            raise SystemExit(
                f"--scorer clip could not load the CLIP model {args.clip_model!r} ({str(err).splitlines()[0]}); "
                "pass --clip-model with a hub id you can download or a local folder of a CLIP/SigLIP model."
            ) from None
    vlm, sae, _ = load_model_and_sae(args)
    run.claim(sae, vlm)
    if args.scorer == "clip":
        similarity.model.to(args.device)
    mined = MinedActivations.load(run.mined_dir)
    if args.features is not None:
        explanations = explanations[
            explanations["feature"].astype(int).isin(_scored_features(args, run, sae, mined))
        ]
    if args.scorer in ("segmentation_iou", "segmentation_iou_union"):
        from vis_steer_lens.evaluate.segmentation_iou import GroundingDinoSamSegmenter, SegmentationIoUScorer
        from vis_steer_lens.plugins import SEGMENTERS

        segmenter_name = args.segmenter or ("toy" if args.model is None else "grounding-dino")
        if segmenter_name == "grounding-dino":
            segmenter = GroundingDinoSamSegmenter(args.detector, args.sam, device=args.device)
        else:
            segmenter = SEGMENTERS.get(segmenter_name)()
        variant = "union" if args.scorer == "segmentation_iou_union" else "first"
        scorer = SegmentationIoUScorer(segmenter, mined, variant=variant, k_images=args.k_images)
    elif args.scorer == "clip":
        from vis_steer_lens.evaluate.clip_similarity import ClipRunScorer

        scorer = ClipRunScorer(similarity, mined, k_images=args.k_images)
    else:
        from vis_steer_lens.evaluate.vlm_scorers import DetectionScorer, LikelihoodScorer

        if args.images is not None:
            pool = as_image_source(args.images)
        elif args.model is None:
            from vis_steer_lens.toy import ToyImages

            pool = ToyImages(seed=args.seed + 404, n=args.n_pool)
        else:
            raise SystemExit(f"--scorer {args.scorer} with --model needs --images: the held-out image pool.")
        count = min(args.n_pool, len(pool))
        images = [pool[i] for i in range(count)]
        common = dict(
            mined=mined,
            n_activating=args.n_activating,
            n_random=args.n_random,
            seed=args.seed,
            pool_key=reference_key(pool.source_id, count),
        )
        if args.scorer == "likelihood":
            scorer = LikelihoodScorer(vlm, sae, images, answer_template=args.answer_template, **common)
        else:
            scorer = DetectionScorer(vlm, sae, images, **common)
    path = run.scores_path(name, scorer.name)
    scores = scorer.score(explanations, progress=not args.quiet, out_path=path, desc=f"{scorer.name} {name}")
    column = SCORER_COLUMNS[scorer.name]
    mean, lo, hi = bootstrap_mean_ci(scores[column].to_numpy(float), seed=args.seed)
    print(
        f"{name}: {scorer.name} {mean:.3f} [{lo:.2f}, {hi:.2f}] over {scores[column].notna().sum()} features."
    )
    print(f"Scores in {path}; `vis-steer-lens compare {run.root}` puts every scorer side by side.")
    return 0


def _scored_features(args: argparse.Namespace, run: Any, sae: Any, mined: Any) -> list[int]:
    """``evaluate --features``: ``clear`` (the run's ground truth's clear features) or a selection."""
    from vis_steer_lens.explain import parse_features

    if args.features.strip() == "clear":  # the caller checked that the run has ground truth
        return [int(f) for f in run.ground_truth().clear_concepts().index]
    try:
        return parse_features(args.features, int(sae.cfg.d_sae), live=mined.live_features())
    except ValueError as err:
        raise SystemExit(str(err)) from None


def _evaluate_ground_truth(args: argparse.Namespace) -> int:
    """``evaluate --scorer ground_truth``: the world's ground truth for the run's SAE, kept in the run."""
    from vis_steer_lens.plugins import GROUND_TRUTH_BUILDERS
    from vis_steer_lens.runs import RunFolder

    if args.run is None:
        raise SystemExit("--scorer ground_truth writes into a run folder: pass --run RUN.")
    if args.model is not None and args.ground_truth is None:
        raise SystemExit(
            "Ground truth exists only in a world whose plug-in knows each feature's concept (the toy world, "
            "used when no --model is given); for another model pass --ground-truth NAME of such a plug-in."
        )
    builder = GROUND_TRUTH_BUILDERS.get(args.ground_truth or "toy")
    run = RunFolder(args.run)
    vlm, sae, _ = load_model_and_sae(args)
    seed = (
        303 if args.seed == 0 else args.seed
    )  # scenes the miner (seed 1) and the reference (202) never drew
    truth = builder(vlm, sae, n_images=args.n_ground_truth, seed=seed, progress=not args.quiet)
    run.save_ground_truth(truth)
    clear = truth.clear_concepts()
    print(
        f"Ground truth {truth.name!r} for {len(truth.table)} live features, {len(clear)} with a clear concept "
        f"({args.n_ground_truth} fresh scenes), saved to {run.concepts_path}; `vis-steer-lens compare "
        f"{run.root}` now adds accuracy and margins on the clear features."
    )
    return 0


def _scored_before_keys(scores_path: Path) -> bool:
    """Whether a scores file was begun before reference sets were keyed (its description has none)."""
    description = scores_path.with_name(scores_path.name + ".run.json")
    if not (scores_path.is_file() and scores_path.stat().st_size and description.is_file()):
        return False
    try:
        return "reference" not in json.loads(description.read_text())
    except ValueError:
        return False  # the store names a damaged description itself


def cmd_compare(args: argparse.Namespace) -> int:
    from vis_steer_lens.evaluate.compare import compare_run, format_agreement, format_margins, format_table
    from vis_steer_lens.runs import RunFolder, RunFolderError

    run = RunFolder(args.run)
    if not run.root.exists():
        raise SystemExit(
            f"Run folder {str(run.root)!r} does not exist; pass the --run folder of earlier commands."
        )
    try:
        result = compare_run(run, exclude_flagged=args.exclude_flagged)
    except RunFolderError as err:
        raise SystemExit(str(err)) from None
    print(format_table(result.table))
    if result.margins is not None and len(result.margins):
        print("\n" + format_margins(result.margins))
    written = [run.comparison_path, run.margins_path, run.comparison_figure_path]
    if result.agreement is not None and len(result.agreement):
        print("\n" + format_agreement(result.agreement))
        written.append(run.agreement_path)
    print(f"\nWritten to {', '.join(str(p) for p in written[:-1])} and {written[-1]}.")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from vis_steer_lens.evaluate.ablations import SweepError, format_sweep, run_sweep, sweep_points
    from vis_steer_lens.plugins import SEGMENTERS
    from vis_steer_lens.runs import RunFolder

    run = RunFolder(args.run)
    if not run.root.is_dir():
        raise SystemExit(
            f"Run folder {str(run.root)!r} does not exist; pass the --run folder of earlier commands."
        )
    try:
        sweep_points(args.axis, run)  # an axis the run cannot sweep is said before loading the model
    except SweepError as err:
        raise SystemExit(str(err)) from None
    layer_sources = _layer_sae_sources(args) if args.axis == "layer" else None
    vlm, sae, prompt = load_model_and_sae(args)
    run.claim(sae, vlm)
    if args.axis == "layer":
        return _sweep_layers(args, run, vlm, sae, prompt, layer_sources)
    mined = run.mined() if run.has_mined() else None
    spec = args.features
    if spec is None:
        spec = "clear" if run.ground_truth() is not None else "live"
    if spec.strip() == "clear" and run.ground_truth() is None:
        raise SystemExit(
            f"--features clear needs the run's ground truth: run `vis-steer-lens evaluate --run {run.root} "
            "--scorer ground_truth` first, or name the features (e.g. '0:64')."
        )
    features = _scored_features(argparse.Namespace(features=spec), run, sae, mined)
    segmenter = None
    if args.segmenter != "none" and mined is not None:
        name = args.segmenter or ("toy" if args.model is None else None)
        segmenter = SEGMENTERS.get(name)() if name else None
    try:
        table = run_sweep(
            run,
            vlm,
            sae,
            args.axis,
            features,
            prompt=prompt,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            segmenter=segmenter,
            progress=not args.quiet,
        )
    except SweepError as err:
        raise SystemExit(str(err)) from None
    print(format_sweep(table))
    print(f"\nWritten to {run.root / 'sweeps' / (args.axis + '.csv')} and its .html figure.")
    return 0


def _layer_sae_sources(args: argparse.Namespace) -> dict[str, str] | None:
    """``sweep --axis layer``: ``--saes HOOK=PATH ...`` as ``{hook: path}``, or ``None`` for the world's
    own layer SAEs (the toy world's); refused in one line on another model without ``--saes``."""
    if not args.saes:
        if args.model is not None:
            raise SystemExit(
                "--axis layer needs one SAE per layer and a run holds one: pass --saes HOOK=PATH ... (an SAE "
                "of this model at each other hook); only the toy world trains its own."
            )
        return None
    sources = {}
    for item in args.saes:
        hook, sep, path = item.partition("=")
        if not sep or not hook or not path:
            raise SystemExit(
                f"--saes takes HOOK=PATH pairs (e.g. blocks.2.hook_resid_post=saes/l2); got {item!r}."
            )
        sources[hook] = path
    return sources


def _sweep_layers(args: argparse.Namespace, run: Any, vlm: Any, sae: Any, prompt: str, sources: Any) -> int:
    """``sweep --axis layer``: the run's SAE and one SAE per other layer, each scored on its own features."""
    from vis_steer_lens import load_sae
    from vis_steer_lens.evaluate.ablations import SweepError, format_sweep, run_layer_sweep
    from vis_steer_lens.explain import parse_features
    from vis_steer_lens.plugins import GROUND_TRUTH_BUILDERS, LAYER_SAES

    if sources is None:  # the toy world's SAEs of its other layers, trained once into the run
        provider = LAYER_SAES.get("toy")
        _say(args, "Loading (or training, once per run) the toy world's SAEs of the other layers...")
        layer_saes = provider(
            vlm,
            exclude=[run.coefficient().hook_name],
            cache_dir=run.root / "sweeps" / "saes",
            total_training_samples=args.layer_sae_tokens,
            progress=not args.quiet,
        )
    else:
        layer_saes = {hook: load_sae(path, model=vlm, device=args.device) for hook, path in sources.items()}
    name = args.ground_truth or ("toy" if args.model is None else None)
    builder = GROUND_TRUTH_BUILDERS.get(name) if name else None
    features = None
    if builder is None:
        try:
            features = parse_features(args.features or "0:64", int(sae.cfg.d_sae))
        except ValueError as err:
            raise SystemExit(str(err)) from None
    try:
        table = run_layer_sweep(
            run,
            vlm,
            sae,
            layer_saes,
            ground_truth_builder=builder,
            features=features,
            n_ground_truth=args.n_ground_truth,
            max_features=args.max_features,
            prompt=prompt,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            progress=not args.quiet,
        )
    except SweepError as err:
        raise SystemExit(str(err)) from None
    print(format_sweep(table))
    print(f"\nWritten to {run.root / 'sweeps' / 'layer.csv'} and its .html figure.")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from vis_steer_lens.dashboard import dashboard_size, export_dashboard, export_neuronpedia
    from vis_steer_lens.dashboard.results import DashboardResults
    from vis_steer_lens.runs import RunFolder

    run_dir = args.run if args.run is not None else args.results
    if run_dir is None:
        raise SystemExit("Pass the run folder: `vis-steer-lens dashboard RUN`.")
    run = RunFolder(run_dir)
    out = args.out if args.out is not None else run.dashboard_dir
    vlm = sae = None
    if args.with_model:
        vlm, sae, _ = load_model_and_sae(args)
        if getattr(vlm, "vision", None) is None:  # a vision-only tower: no text side, the rest as usual
            vlm = None
    elif args.sae is not None:
        from vis_steer_lens import load_sae

        sae = load_sae(args.sae, args.sae_id)
    index = export_dashboard(run.root, out, exclude_flagged=args.exclude_flagged, sae=sae, vlm=vlm)
    results = DashboardResults.load(run.root)
    d_sae = results.mined.d_sae if results.mined is not None else None
    size = dashboard_size(out, len(results.features))
    print(f"Dashboard: {index} (open it in a browser; it works from file://)")
    print(f"Size: {size.describe(d_sae)}")
    if args.neuronpedia:
        batches = export_neuronpedia(
            run.root, args.neuronpedia, model_id=args.model_id, layer=args.layer, sae_set=args.sae_set
        )
        print(f"Neuronpedia export: {len(batches)} batch files in {args.neuronpedia}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from vis_steer_lens.runs import RunFolder
    from vis_steer_lens.serve import ServeError, create_app, require_web_stack, serve

    try:
        require_web_stack()
    except ImportError as err:
        raise SystemExit(str(err)) from None
    run = RunFolder(args.run)
    if not run.root.is_dir():
        raise SystemExit(f"Run folder {str(run.root)!r} does not exist; pass the folder `dashboard` shows.")
    vlm, sae, _ = load_model_and_sae(args)
    try:
        app = create_app(run.root, vlm, sae, prompt=args.prompt, max_batch=args.max_batch)
    except ServeError as err:
        raise SystemExit(str(err)) from None
    url = f"http://{args.host}:{args.port}/"
    print(f"Serving {run.root} at {url} (live steering: {url}live.html); Ctrl-C stops.")
    serve(app, host=args.host, port=args.port)
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default and keeps the examples' line breaks."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other user error of the CLI."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vis-steer-lens",
        description=__doc__.splitlines()[0],
        formatter_class=_HelpFormatter,
        epilog=_examples(
            "vis-steer-lens demo --out demo_out           # the main job on the toy world",
            "vis-steer-lens mine --run run && vis-steer-lens explain --run run --features live",
        ),
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    # The same two options after the subcommand (`vis-steer-lens mine ... --quiet`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_parser = sub.add_parser

    def add_command(*names, example: tuple[str, ...] = (), **kwargs):
        return add_parser(
            *names, parents=[common], formatter_class=_HelpFormatter, epilog=_examples(*example), **kwargs
        )

    sub.add_parser = add_command

    demo = sub.add_parser(
        "demo",
        help="the main job on the toy world: explain, score and compare every method",
        example=("vis-steer-lens demo --out demo_out",),
    )
    demo.add_argument("--out", default="demo_out", help="output folder (rerun to resume)")
    demo.set_defaults(func=cmd_demo)

    mine = sub.add_parser(
        "mine",
        help="find each feature's top-activating images",
        example=("vis-steer-lens mine --run run --n-images 2000",),
    )
    _add_model_args(mine)
    mine.add_argument("--run", help="run folder: write RUN/mined")
    mine.add_argument("--out", help="instead of --run: the folder for the mined activations")
    mine.add_argument(
        "--images",
        help="image folder, dataset saved with save_to_disk (FOLDER[:SPLIT]), or Hugging Face dataset "
        "(OWNER/NAME[:SPLIT] or hf://datasets/OWNER/NAME[:SPLIT], split default train; needs "
        "vis-steer-lens[hf]) (default: toy-world images)",
    )
    mine.add_argument("--n-images", type=_positive_int, default=2000, help="toy-world images to mine")
    mine.add_argument("--k-images", type=_positive_int, default=5, help="top images kept per feature")
    mine.add_argument("--k", dest="k_images", type=_positive_int, help=argparse.SUPPRESS)  # the old name
    mine.add_argument(
        "--rank-by", choices=("max", "mean"), default="max", help="image score: max or mean over patches"
    )
    mine.add_argument(
        "--batch-size", type=_batch_size, default=64, help="images per batch, or 'auto' (fits free memory)"
    )
    mine.add_argument("--seed", type=int, default=1, help="seed of the toy-world images")
    mine.set_defaults(func=cmd_mine)

    def add_subject_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--run", required=True, help="run folder")
        parser.add_argument("--model", help="hub id or folder of the subject model (default: the toy world)")
        parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
        parser.add_argument(
            "--dtype",
            default=None,
            choices=("float32", "bfloat16", "float16", "float64"),
            help="weights' dtype",
        )
        parser.add_argument(
            "--images",
            help="image folder, saved dataset or Hugging Face dataset, as for mine (default: toy-world images)",
        )
        parser.add_argument("--n-images", type=_positive_int, default=2000, help="toy-world images")
        parser.add_argument(
            "--seed", type=int, default=1, help="seed of the toy-world images and of training"
        )
        parser.add_argument(
            "--tokens",
            choices=("patches", "prefix", "all"),
            default="patches",
            help="which tokens of each image",
        )
        parser.add_argument("--restart", action="store_true", help="start over instead of resuming")

    cache = sub.add_parser(
        "cache",
        help="cache vision activations of one or more hooks as shards (resumable, torchrun)",
        example=("vis-steer-lens cache --run run --hooks blocks.2.hook_resid_post --n-images 2000",),
    )
    add_subject_args(cache)
    cache.add_argument("--hooks", nargs="+", required=True, help="vision hooks (any naming convention)")
    cache.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass")
    cache.add_argument("--images-per-shard", type=_positive_int, default=256, help="images per shard")
    cache.add_argument(
        "--cache-dtype", choices=("float32", "float16"), default="float32", help="dtype on disk"
    )
    cache.set_defaults(func=cmd_cache)

    train = sub.add_parser(
        "train",
        help="train a grid of SAEs (widths x k) in one pass over the run's cached activations",
        example=(
            "vis-steer-lens train --run run --hook blocks.2.hook_resid_post --widths 256,512 --k 8,16 "
            "--architecture batchtopk --training-tokens 200000",
        ),
    )
    add_subject_args(train)
    train.add_argument("--hook", required=True, help="the vision hook (cached, or streamed without a cache)")
    train.add_argument(
        "--widths", type=_grid_ints("--widths"), required=True, help="SAE widths, e.g. 256,512"
    )
    train.add_argument(
        "--k", type=_grid_ints("--k"), required=True, help="active features per token, e.g. 8,16"
    )
    train.add_argument("--architecture", choices=("topk", "batchtopk", "matryoshka"), default="topk")
    train.add_argument("--training-tokens", type=_positive_int, required=True, help="rows each SAE trains on")
    train.add_argument("--batch-size", type=_positive_int, default=2048, help="rows per optimisation step")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    train.add_argument(
        "--eval-images", type=_positive_int, default=64, help="held-out images (the first ones)"
    )
    train.add_argument(
        "--loss-images",
        type=int,
        default=8,
        help="held-out images whose descriptions measure the loss (0: skip)",
    )
    train.add_argument(
        "--checkpoint-every", type=_positive_int, default=200, help="steps between checkpoints"
    )
    train.set_defaults(func=cmd_train)

    explain = sub.add_parser(
        "explain",
        help="explain SAE features by steering, top-k or the hybrid",
        example=(
            "vis-steer-lens explain --run run --method steering --features live",
            "vis-steer-lens explain --run run --method steering --direction permuted --features live",
        ),
    )
    _add_model_args(explain)
    explain.add_argument(
        "--run", required=True, help="run folder: explanations go to RUN/explanations (rerun to resume)"
    )
    explain.add_argument("--out", help=argparse.SUPPRESS)  # refused with a pointer to --run
    explain.add_argument("--method", choices=METHODS, default="steering")
    explain.add_argument(
        "--features",
        default=None,
        help="'live' (the features that fired in RUN/mined), a range '0:512' or ids '3,7,9' (default: all; "
        "with mined statistics, features that never fired get a row flagged 'dead' and no model call)",
    )
    explain.add_argument(
        "--min-frequency",
        type=_fraction,
        default=0.0,
        help="share of the mined images a feature must fire on to count as live",
    )
    explain.add_argument(
        "--coefficient",
        type=_coefficient,
        default="auto",
        help="steering: 'auto' (the run's coefficient, chosen by a sweep on the first steering explain and "
        "reused by every later one, controls included), 'paper' (the paper's fixed 100) or a number; "
        "hybrid: a multiple of each image's patch norm ('auto': 1.0)",
    )
    explain.add_argument(
        "--select-by",
        default=None,
        choices=SELECT_BY,
        help="what picks the auto coefficient's multiple: the distinct-answers rule (the default) or a "
        "scorer's mean on held-out validation features (the paper's: segmentation_iou); kept in the run",
    )
    explain.add_argument(
        "--segmenter",
        default=None,
        help="--select-by segmentation_iou: grounding-dino, or a plug-in's (default: toy without --model)",
    )
    explain.add_argument(
        "--images",
        default=None,
        help="--select-by likelihood/detection: the held-out image pool (default: fresh toy scenes)",
    )
    explain.add_argument("--direction", choices=DIRECTIONS, default="sae", help="the SAE's, or a control")
    explain.add_argument(
        "--prompt", default=None, help="prompt preset: default, paper, toy (default: toy for the toy world)"
    )
    explain.add_argument(
        "--empty-image", default="white", choices=EMPTY_IMAGES, help="steering's empty image"
    )
    explain.add_argument("--max-new-tokens", type=_positive_int, default=48)
    explain.add_argument(
        "--batch-size", type=_batch_size, default=32, help="features per batch, or 'auto' (fits free memory)"
    )
    explain.add_argument("--mined", help="mined folder for topk/hybrid (default: RUN/mined)")
    explain.add_argument(
        "--k-images",
        type=_positive_int,
        default=None,
        help="top images per Top-k prompt (default: all mined)",
    )
    explain.add_argument("--display", choices=DISPLAYS, default="mask", help="how Top-k shows its images")
    explain.add_argument("--seed", type=int, default=0)
    explain.add_argument("--show", type=int, default=20, help="rows to print")
    explain.set_defaults(func=cmd_explain)

    evaluate = sub.add_parser(
        "evaluate",
        help="score explanations written earlier (AUROC from generation, or the toy world's ground truth)",
        example=(
            "vis-steer-lens evaluate --run run --method steering",
            "vis-steer-lens evaluate --run run --scorer ground_truth",
            "vis-steer-lens evaluate --run run --method topk --scorer segmentation_iou",
        ),
    )
    _add_model_args(evaluate)
    evaluate.add_argument(
        "--run", help="run folder: score its --method explanations into it (rerun to resume)"
    )
    evaluate.add_argument(
        "--scorer",
        choices=(
            "generation_auroc",
            "clip",
            "segmentation_iou",
            "segmentation_iou_union",
            "detection",
            "likelihood",
            "ground_truth",
        ),
        default="generation_auroc",
        help="generation_auroc, clip (CLIP similarity to the top images), segmentation_iou (the paper's; "
        "_union: every box's mask), detection or likelihood score --method's explanations; ground_truth computes the world's ground truth "
        "for the run's SAE once (then compare adds accuracy and margins on the clear features)",
    )
    evaluate.add_argument(
        "--segmenter",
        default=None,
        help="segmentation_iou: grounding-dino (Grounding DINO -> SAM), or a plug-in's (default: toy "
        "without --model, else grounding-dino)",
    )
    evaluate.add_argument(
        "--detector", default="IDEA-Research/grounding-dino-base", help="segmentation_iou: Grounding DINO id"
    )
    evaluate.add_argument(
        "--sam", default="facebook/sam2.1-hiera-large", help="segmentation_iou: SAM or SAM 2 id"
    )
    evaluate.add_argument(
        "--k-images", type=_positive_int, default=5, help="segmentation_iou, clip: top images per feature"
    )
    evaluate.add_argument(
        "--clip-model",
        default="openai/clip-vit-large-patch14",
        help="clip: a CLIP or SigLIP hub id or local folder (the paper's: CLIP ViT-L/14)",
    )
    evaluate.add_argument(
        "--n-pool",
        type=_positive_int,
        default=1000,
        help="detection/likelihood: images of the held-out pool (--images, default fresh toy images)",
    )
    evaluate.add_argument(
        "--n-activating",
        type=_positive_int,
        default=5,
        help="detection/likelihood: activating images per feature",
    )
    evaluate.add_argument(
        "--n-random", type=_positive_int, default=5, help="detection/likelihood: random images per feature"
    )
    evaluate.add_argument(
        "--answer-template",
        default="{explanation}",
        help="likelihood: the scored answer, with {explanation} in it",
    )
    evaluate.add_argument(
        "--features",
        default=None,
        help="segmentation_iou/detection/likelihood: score only these features ('0:512', '3,7', 'live', or "
        "'clear': those with a clear ground-truth concept); default: every explained feature",
    )
    evaluate.add_argument("--method", choices=METHODS, default="steering", help="with --run")
    evaluate.add_argument("--direction", choices=DIRECTIONS, default="sae", help="with --run")
    evaluate.add_argument(
        "--explanations", help="instead of --run: a .jsonl/.parquet/.csv file written by explain"
    )
    evaluate.add_argument("--out", help="with --explanations: output folder (rerun to resume)")
    evaluate.add_argument("--images", help="reference images (folder or dataset); default: toy-world images")
    evaluate.add_argument(
        "--diffusers",
        help="text-to-image model, e.g. stabilityai/stable-diffusion-3.5-medium, or 'toy' (the toy world's "
        "renderer: offline, draws the shapes and colours an explanation names)",
    )
    evaluate.add_argument(
        "--n-generated", type=_positive_int, default=3, help="images generated per explanation"
    )
    evaluate.add_argument(
        "--n-reference", type=_positive_int, default=300, help="reference (negative) images"
    )
    evaluate.add_argument(
        "--ground-truth", default=None, help="with --scorer ground_truth: the plug-in's name (default: toy)"
    )
    evaluate.add_argument(
        "--n-ground-truth", type=_positive_int, default=2000, help="fresh scenes for the ground truth"
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(func=cmd_evaluate)

    compare = sub.add_parser(
        "compare",
        help="the comparison table and paired margins of every method and control a run holds",
        example=("vis-steer-lens compare run",),
    )
    compare.add_argument("run", help="a run folder (written by mine, explain, evaluate, or the demo)")
    compare.add_argument(
        "--exclude-flagged",
        action="store_true",
        help="leave out answers flagged as repetitions, unfinished or empty",
    )
    compare.set_defaults(func=cmd_compare)

    sweep = sub.add_parser(
        "sweep",
        help="ablations: explain the same features along one axis and score each point",
        example=(
            "vis-steer-lens sweep --run run --axis base-image",
            "vis-steer-lens sweep --run run --axis coefficient --features clear",
            "vis-steer-lens sweep --run run --axis layer --saes blocks.2.hook_resid_post=saes/l2",
        ),
    )
    _add_model_args(sweep)
    sweep.add_argument("--run", required=True, help="run folder (its coefficient, top images, ground truth)")
    sweep.add_argument(
        "--axis", required=True, choices=("base-image", "coefficient", "layer", "target"), help="what varies"
    )
    sweep.add_argument(
        "--features",
        default=None,
        help="features to explain at each point ('clear', 'live', '0:64', ...; default: clear with ground truth)",
    )
    sweep.add_argument(
        "--segmenter",
        default=None,
        help="segmenter of the IoU column (default: toy without --model; 'none': no IoU)",
    )
    sweep.add_argument(
        "--saes",
        nargs="+",
        default=None,
        help="--axis layer: HOOK=PATH of an SAE at each other layer (default on the toy world: its own, "
        "trained once into RUN/sweeps/saes)",
    )
    sweep.add_argument(
        "--layer-sae-tokens",
        type=_positive_int,
        default=800_000,
        help="--axis layer on the toy world: training tokens of each layer's SAE (the shipped SAE's recipe)",
    )
    sweep.add_argument(
        "--ground-truth",
        default=None,
        help="--axis layer: the plug-in whose ground truth scores each layer (default: toy without --model)",
    )
    sweep.add_argument(
        "--n-ground-truth", type=_positive_int, default=2000, help="--axis layer: fresh scenes per layer"
    )
    sweep.add_argument(
        "--max-features",
        type=_positive_int,
        default=None,
        help="--axis layer: explain at most this many clear features per layer (default: all)",
    )
    sweep.add_argument("--max-new-tokens", type=_positive_int, default=40, help="generation cap")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.set_defaults(func=cmd_sweep)

    dashboard = sub.add_parser(
        "dashboard",
        help="static HTML dashboard (and Neuronpedia export) of a run folder",
        example=("vis-steer-lens dashboard run",),
    )
    dashboard.add_argument("run", nargs="?", help="a run folder (mined/, explanations, scores)")
    dashboard.add_argument("--results", help=argparse.SUPPRESS)  # the old name of the positional
    dashboard.add_argument("--out", default=None, help="output folder (default: RUN/dashboard)")
    dashboard.add_argument(
        "--exclude-flagged",
        action="store_true",
        help="leave out answers flagged as repetitions, unfinished or empty",
    )
    dashboard.add_argument(
        "--with-model",
        action="store_true",
        help="load the run's model and SAE (--model/--sae, default the toy world's) for each feature's nearest "
        "features and text-side tokens; --sae alone adds the nearest features only",
    )
    _add_model_args(dashboard)
    dashboard.add_argument("--neuronpedia", help="also write Neuronpedia batch files to this folder")
    dashboard.add_argument("--model-id", default=None, help="Neuronpedia model id")
    dashboard.add_argument("--layer", type=int, default=None, help="Neuronpedia layer")
    dashboard.add_argument("--sae-set", default=None, help="Neuronpedia SAE set")
    dashboard.set_defaults(func=cmd_dashboard)

    serve = sub.add_parser(
        "serve",
        help="the run's dashboard as a local web app, with live steering and image upload (needs the model)",
        example=("vis-steer-lens serve run", "vis-steer-lens serve run --port 8765 --model ID --sae SRC"),
    )
    serve.add_argument("run", help="a run folder (mined/, explanations, scores)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (loopback: the app runs the model for any caller)",
    )
    serve.add_argument("--prompt", default=None, help="steering prompt preset (default: the run's)")
    serve.add_argument("--max-batch", type=_positive_int, default=16, help="most requests answered per batch")
    _add_model_args(serve)
    serve.set_defaults(func=cmd_serve)

    toy = sub.add_parser("toy", help="the toy world", example=("vis-steer-lens toy sae --out toy_sae",))
    toy_sub = toy.add_subparsers(dest="toy_command", required=True, parser_class=_Parser)

    def add_toy(*names, example: tuple[str, ...] = (), **kwargs):
        return toy_sub.add_parser(
            *names, formatter_class=_HelpFormatter, epilog=_examples(*example), **kwargs
        )

    build = add_toy(
        "build", help="train the toy VLM (resumable)", example=("vis-steer-lens toy build --out toy_build",)
    )
    build.add_argument("--out", default="toy_build", help="output folder")
    build.add_argument("--steps", type=int, default=3400)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--threads", type=int, default=2)
    build.add_argument("--max-minutes", type=float, default=None)
    build.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate")
    build.add_argument("--warmup-steps", type=int, default=100)
    build.add_argument(
        "--init-from", default=None, help="fine-tune: start from this toy model folder's weights"
    )
    build.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    build.add_argument("--no-eval", action="store_true")
    build.add_argument("--eval-images", type=int, default=200)
    build.set_defaults(func=cmd_toy_build)
    toy_sae = add_toy(
        "sae",
        help="train the toy SAE with the shipped recipe",
        example=("vis-steer-lens toy sae --out toy_sae --d-sae 512 --k 16",),
    )
    toy_sae.add_argument("--out", required=True, help="folder for the SAELens-format SAE")
    toy_sae.add_argument("--model", help="toy model folder (default: the shipped toy model)")
    toy_sae.add_argument("--hook", default=None, help="vision hook (default: the shipped SAE's)")
    toy_sae.add_argument("--d-sae", type=int, default=None, help="features (default: the shipped SAE's)")
    toy_sae.add_argument("--k", type=int, default=None, help="TopK k (default: the shipped SAE's)")
    toy_sae.add_argument("--tokens", type=int, default=800_000, help="patch tokens to train on")
    toy_sae.add_argument("--background-rate", type=float, default=0.1)
    toy_sae.add_argument("--seed", type=int, default=0)
    toy_sae.add_argument("--threads", type=int, default=2)
    toy_sae.add_argument("--device", default="cpu")
    toy_sae.add_argument("--no-eval", action="store_true", help="skip the ground-truth summary")
    toy_sae.add_argument("--eval-images", type=int, default=1000)
    toy_sae.set_defaults(func=cmd_toy_sae)
    return parser


#: Errors a user's input can cause (the library's own types derive from these): one line, exit 2.
USER_ERRORS = (ValueError, KeyError, OSError)


def main(argv: list[str] | None = None) -> int:
    """Run a command. A user error prints one line, ``error: ...``, and exits with status 2
    (``--debug`` shows the traceback instead)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    if args.quiet:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" bars on stderr
    try:
        return args.func(args)
    except SystemExit as stop:
        if not isinstance(stop.code, str) or args.debug:
            raise
        message = stop.code
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = str(err) if not isinstance(err, KeyError) or not err.args else str(err.args[0])
    message = " ".join(message.split())  # one line
    print(message if message.startswith("error: ") else f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
