"""The `sift` command line: unknown commands, --version, and `sift generate`'s argument and checkpoint errors
(exit code 2 and one `error: ...` line, never a traceback)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.cli import main as sift

REPO = Path(__file__).resolve().parents[1]


def test_unknown_command_is_named(capsys):
    assert sift(["bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'bogus'") and "usage: sift <command>" in err


def test_no_command_prints_usage_and_fails(capsys):
    assert sift([]) == 2
    assert "usage: sift <command>" in capsys.readouterr().err


def test_help_and_version(capsys):
    assert sift(["--help"]) == 0
    assert "usage: sift <command>" in capsys.readouterr().out
    assert sift(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("sift ") and len(out.split()) == 2


def test_version_without_the_distribution(monkeypatch, capsys):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert sift(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "sift 0.1.0"  # from pyproject.toml


def test_unknown_command_in_a_real_process():
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "bogus"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "error: unknown command 'bogus'" in done.stderr and "Traceback" not in done.stderr


# --- sift generate ---------------------------------------------------------------------------------------------------


def _generate(args, capsys):
    """Exit code and stderr of `sift generate ARGS` (argparse errors exit through SystemExit)."""
    try:
        rc = sift(["generate", *args])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """A pretrain output folder holding a tiny GPT-2-vocabulary model's checkpoint.pt."""
    from model.config import PRESETS
    from model.layers import TransformerLM
    from training.checkpoint import save_checkpoint

    mcfg = PRESETS["tiny"].with_(vocab_size=50257)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model")
    save_checkpoint(TransformerLM.from_config(mcfg), None, 1, out / "checkpoint.pt", config={},
                    model_config=dataclasses.asdict(mcfg))
    (out / "config.json").write_text('{"steps": 1}\n')
    return out


@pytest.mark.parametrize("flags, message", [
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--temperature", "-0.1"], "--temperature must be >= 0 (0 = greedy)"),
    (["--max-new-tokens", "-1"], "--max-new-tokens must be >= 0"),
    (["--num-samples", "0"], "--num-samples must be >= 1"),
    (["--device", "toaster"], "--device 'toaster'"),
])
def test_generate_rejects_bad_values(flags, message, tmp_path, capsys):
    rc, err = _generate(["--checkpoint", str(tmp_path), *flags], capsys)
    assert rc == 2 and "error: " in err and message in err


def test_generate_on_cuda_without_cuda(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, err = _generate(["--checkpoint", str(tmp_path), "--device", "cuda"], capsys)
    assert rc == 2 and "CUDA is not available" in err


def test_generate_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        sift(["generate", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("default: 0.95", "default: 0.8", "default: 64", "default: 1)", "0 = greedy"):
        assert text in out


def test_generate_from_a_folder(checkpoint_dir, capsys):
    assert sift(["generate", "--checkpoint", str(checkpoint_dir), "--tokenizer", "gpt2", "--prompt", "Hello",
                 "--max-new-tokens", "3", "--temperature", "0", "--num-samples", "2", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("--- sample") == 2


def test_generate_from_a_folder_without_checkpoint(tmp_path, capsys):
    rc, err = _generate(["--checkpoint", str(tmp_path), "--device", "cpu"], capsys)
    assert rc == 2 and err.strip() == f"error: no checkpoint.pt in {tmp_path}"


@pytest.mark.parametrize("name, content", [("config.json", b'{"steps": 1}\n'), ("empty.pt", b""),
                                           ("bad.pt", b"PK\x03\x04 not really a zip")])
def test_generate_from_a_file_that_is_not_a_checkpoint(name, content, tmp_path, capsys):
    f = tmp_path / name
    f.write_bytes(content)
    rc, err = _generate(["--checkpoint", str(f), "--device", "cpu"], capsys)
    assert rc == 2 and err.startswith(f"error: {f} is not a sift checkpoint (") and "Weights" not in err
    assert len(err.strip().splitlines()) == 1


def test_generate_from_a_missing_file(tmp_path, capsys):
    rc, err = _generate(["--checkpoint", str(tmp_path / "nope.pt"), "--device", "cpu"], capsys)
    assert rc == 2 and "not found" in err
