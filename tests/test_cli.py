"""The command line on a tiny saved model and SAE (the toy world's defaults are tested in tests/toy)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pandas as pd
import pytest
from conftest import build_tiny_toy_vlm, random_sae

from vis_steer_lens.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    vlm = build_tiny_toy_vlm()
    vlm.hf_model.save_pretrained(folder / "model")
    vlm.processor.save_pretrained(folder / "model")
    random_sae(d_in=32, d_sae=12, hook_name="blocks.1.hook_resid_post").save_model(folder / "sae")
    return folder


def test_explain_steering_writes_and_resumes(saved, capsys):
    def run(features: str) -> int:
        model_args = ["--model", str(saved / "model"), "--sae", str(saved / "sae"), "--prompt", "toy"]
        run_args = [
            "--features",
            features,
            "--coefficient",
            "30",
            "--max-new-tokens",
            "6",
            "--run",
            str(saved / "out"),
        ]
        return main(["--quiet", "explain", *model_args, *run_args])

    assert run("0:6") == 0
    first = pd.read_parquet(saved / "out" / "explanations" / "steering.parquet")
    assert first["feature"].tolist() == list(range(6))
    assert run("0:8") == 0  # resumes: only features 6 and 7 are new
    second = pd.read_parquet(saved / "out" / "explanations" / "steering.parquet")
    assert second["feature"].tolist() == list(range(8))
    assert second["raw_generation"].tolist()[:6] == first["raw_generation"].tolist()
    assert "explanations written" in capsys.readouterr().out


def test_explain_rejects_bad_input(saved):
    base = [
        "--quiet",
        "explain",
        "--model",
        str(saved / "model"),
        "--sae",
        str(saved / "sae"),
        "--run",
        str(saved / "bad"),
    ]
    with pytest.raises(SystemExit):
        main(base + ["--coefficient", "inf"])
    assert "d_sae=12" in cli_error(main, base + ["--features", "10:20", "--coefficient", "1"])
    assert "--mined" in cli_error(main, base + ["--method", "topk"])
    with pytest.raises(Exception, match="d_sae=12"):  # --debug: the exception itself
        main(base + ["--features", "10:20", "--coefficient", "1", "--debug"])


def cli_error(main, argv) -> str:
    """The one line a user error prints, after checking the exit status is 2 and nothing else printed."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    assert "Traceback" not in err.getvalue()
    return lines[0]


def test_quiet_and_debug_work_after_the_subcommand(tmp_path):
    from vis_steer_lens.cli import build_parser

    args = build_parser().parse_args(["mine", "--run", str(tmp_path), "--quiet", "--debug"])
    assert args.quiet and args.debug
    assert build_parser().parse_args(["mine", "--run", str(tmp_path)]).quiet is False


def test_evaluate_scores_an_explanations_file_and_resumes(tmp_path, capsys):
    """On the toy world's defaults: toy renderer as the generator, toy images as the reference."""
    explanations = pd.DataFrame(
        {
            "feature": [0, 1],
            "explanation": ["red circle", "blue square"],
            "method": "steering",
            "direction": "sae",
        }
    )
    path = tmp_path / "explanations.csv"
    explanations.to_csv(path, index=False)
    args = [
        "--quiet",
        "evaluate",
        "--explanations",
        str(path),
        "--out",
        str(tmp_path / "ev"),
        "--n-reference",
        "40",
    ]
    assert main(args) == 0
    scores = pd.read_csv(tmp_path / "ev" / "scores.csv")
    assert scores["feature"].tolist() == [0, 1] and scores["auroc_mean"].between(0, 1).all()
    assert "steering" in capsys.readouterr().out
    lines = (tmp_path / "ev" / "scores.jsonl").read_text().splitlines()
    assert main(args) == 0  # resumes: nothing scored twice
    assert (tmp_path / "ev" / "scores.jsonl").read_text().splitlines() == lines


def test_toy_sae_trains_a_saelens_folder(saved, tmp_path, capsys):
    from sae_lens import SAE

    out = tmp_path / "toy_sae"
    argv = ["--quiet", "toy", "sae", "--model", str(saved / "model"), "--out", str(out), "--d-sae", "16"]
    argv += ["--k", "2", "--tokens", "8192", "--threads", "1", "--eval-images", "40"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "explained variance" in printed and "live features" in printed
    sae = SAE.load_from_disk(str(out))  # plain SAELens
    assert sae.cfg.d_sae == 16 and sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    assert sae.cfg.metadata.model_name == "vis_steer_lens/toy"


def test_a_second_explain_of_the_same_run_is_refused(tmp_path):
    path = tmp_path / "explanations" / "steering.jsonl"
    path.parent.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live process holds the results file's lock
        path.with_name(path.name + ".lock").write_text(f"{socket.gethostname()}:{writer.pid}")
        argv = ["--quiet", "explain", "--features", "0:2", "--coefficient", "30", "--run", str(tmp_path)]
        message = cli_error(main, argv)
    finally:
        writer.kill()
        writer.wait()
    assert "being written by another process" in message and str(writer.pid) in message


def test_compare_of_a_missing_run_says_so(tmp_path):
    assert "does not exist" in cli_error(main, ["compare", str(tmp_path / "nowhere")])


def test_help_and_argument_errors_load_neither_torch_nor_transformers():
    """`vis-steer-lens --help` answers at once: the heavy libraries load only when a command runs."""
    code = (
        "import sys, contextlib, io\n"
        "from vis_steer_lens.cli import main\n"
        "for argv in (['--help'], ['explain', '--help'], ['mine', '--k-images', '0', '--run', 'r']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'pandas', 'sae_lens') if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "none", done.stdout + done.stderr


def test_every_help_shows_defaults_and_an_example(capsys):
    for command in ("mine", "explain", "evaluate", "compare", "dashboard", "serve", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "example:" in text and f"vis-steer-lens {command}" in text.split("example:")[1], command
        if command == "explain":
            assert "(default: auto)" in text and "live" in text


def test_default_path_errors_are_one_line_before_any_model_loads(tmp_path):
    """Each answers in one line (and without the minutes a real model takes to load)."""
    empty = str(tmp_path / "empty")
    assert "needs mined statistics" in cli_error(main, ["explain", "--run", empty, "--features", "live"])
    assert "--run" in cli_error(main, ["explain", "--run", empty, "--out", empty])
    mined = str(tmp_path / "mined")
    assert main(["--quiet", "mine", "--run", mined, "--n-images", "30", "--k-images", "3"]) == 0
    message = cli_error(main, ["explain", "--run", mined, "--method", "topk", "--k-images", "5"])
    assert "more top images than were mined (3 per feature)" in message
    message = cli_error(
        main, ["evaluate", "--run", mined, "--n-reference", "10", "--images", mined + "/nothing"]
    )
    assert message  # a missing image folder is one line too


def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    message = cli_error(main, ["explain", "--run", str(tmp_path), "--device", "cuda", "--features", "0:2"])
    assert "no CUDA GPU is available" in message and "--device cpu" in message


def test_a_second_coefficient_in_one_run_is_refused(tmp_path):
    base = ["--quiet", "explain", "--run", str(tmp_path), "--features", "0:2", "--max-new-tokens", "4"]
    assert main([*base, "--coefficient", "300"]) == 0
    assert main([*base, "--direction", "permuted"]) == 0  # a control takes the run's coefficient
    rows = pd.read_parquet(tmp_path / "explanations" / "steering-permuted.parquet")
    assert (rows["coefficient"] == 300).all()
    message = cli_error(main, [*base, "--coefficient", "200"])
    assert "steers at coefficient 300" in message and "new run folder" in message


def test_evaluate_refuses_more_reference_images_than_given(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(folder / f"{i}.png")
    explanations = tmp_path / "e.csv"
    pd.DataFrame({"feature": [0], "explanation": ["red"], "method": "steering"}).to_csv(
        explanations, index=False
    )
    argv = [
        "evaluate",
        "--explanations",
        str(explanations),
        "--out",
        str(tmp_path / "ev"),
        "--images",
        str(folder),
    ]
    message = cli_error(main, [*argv, "--n-reference", "5"])
    assert "--n-reference 5" in message and "(3)" in message
