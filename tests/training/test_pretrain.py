"""Shard loading, checkpoints and the training loop on real tokenized text (CPU)."""

from __future__ import annotations

import io
import os
import json

import numpy as np
import pytest
import torch

from model.config import PRESETS
from model.layers import TransformerLM
from training.checkpoint import load_checkpoint, load_payload, save_checkpoint
from training.data import BatchSampler, TokenDataset, get_batch, validation_batches
from training.optim import AdamW
from training.pretrain import TrainConfig, train, unigram_entropy

EOT = "<|endoftext|>"


def test_dataset_and_batches(shards):
    ds = TokenDataset.from_run(shards)
    assert ds.vocab_size == 1000 and ds.eot_id == 0 and len(ds.arrays) >= 3
    rng = np.random.default_rng(0)
    x, y = get_batch(ds, 64, 32, "cpu", rng)
    assert x.shape == y.shape == (64, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # next-token targets
    # every window is a contiguous slice of one shard
    flat = [np.asarray(a, np.int64) for a in ds.arrays]
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        w = np.concatenate([row_x, row_y[-1:]])
        assert any(any(np.array_equal(a[s : s + 33], w) for s in np.flatnonzero(a[: len(a) - 32] == w[0])) for a in flat)
    # starts are uniform over all windows: shards are drawn in proportion to their windows
    per = ds.windows(32)
    bounds = np.cumsum(per)
    draws = np.random.default_rng(1).integers(0, per.sum(), 20000)
    share = np.bincount(np.searchsorted(bounds, draws, side="right"), minlength=len(per)) / 20000
    assert np.allclose(share, per / per.sum(), atol=0.02)
    with pytest.raises(ValueError, match="context_length"):
        get_batch(ds, 2, 10**7)


def test_sampler_is_deterministic_and_resumable(shards):
    ds = TokenDataset.from_run(shards)
    a = BatchSampler(ds, 8, 16, seed=3)
    first = [a.next() for _ in range(3)]
    state = a.state_dict()
    after = [a.next() for _ in range(2)]
    b = BatchSampler(ds, 8, 16, seed=3)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(first, [b.next() for _ in range(3)]))
    c = BatchSampler(ds, 8, 16, seed=99)
    c.load_state_dict(json.loads(json.dumps(state)))  # the state survives JSON (it goes into checkpoints)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(after, [c.next() for _ in range(2)]))
    val = TokenDataset.from_run(shards, "validation")
    v1 = [x for x, _ in validation_batches(val, 4, 16, max_batches=3)]
    v2 = [x for x, _ in validation_batches(val, 4, 16, max_batches=3)]
    assert len(v1) == 3 and all(torch.equal(p, q) for p, q in zip(v1, v2))


def test_flat_token_file(tmp_path):
    arr = np.arange(1000, dtype=np.uint16)
    arr.tofile(tmp_path / "tokens.bin")
    ds = TokenDataset.from_file(tmp_path / "tokens.bin")
    x, y = get_batch(ds, 4, 10, rng=np.random.default_rng(0))
    assert torch.equal(y, x + 1)


def test_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    opt = AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 512, (2, 9))
    for _ in range(3):
        model(ids).sum().backward()
        opt.step()
        opt.zero_grad()
    buf = io.BytesIO()
    save_checkpoint(model, opt, 3, buf, note="x")
    save_checkpoint(model, opt, 3, tmp_path / "c.pt")
    fresh = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    fresh_opt = AdamW(fresh.parameters(), lr=1e-3)
    buf.seek(0)
    it, extra = load_checkpoint(buf, fresh, fresh_opt, return_extra=True)
    assert it == 3 and extra["note"] == "x"
    for (n, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), n
    sa, sb = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) and sa[k]["step"] == sb[k]["step"] for k in sa)
    assert load_checkpoint(tmp_path / "c.pt", fresh, fresh_opt) == 3
    assert not list(tmp_path.glob(".tmp-*"))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    """Checkpoints load with weights_only: a file carrying a pickled callable is refused, and nothing runs."""
    model = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    evil = tmp_path / "evil.pt"
    torch.save({"model": model.state_dict(), "optimizer": None, "iteration": 1, "x": _RunsCode()}, evil)
    with pytest.raises(ValueError, match="unpickle posix.system.*refusing to load"):
        load_checkpoint(evil, model)
    with pytest.raises(ValueError, match="refusing"):
        load_payload(evil)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def _cfg(shards, out, **kw):
    base = dict(shards=str(shards), output=str(out), preset="tiny", steps=24, batch_size=8, context_length=32,
                eval_every=12, eval_batches=2, checkpoint_every=100, warmup_steps=4, model={"attention": "reference"})
    return TrainConfig(**{**base, **kw})


def test_resume_reproduces_the_uninterrupted_run_exactly(shards, tmp_path):
    straight = train(_cfg(shards, tmp_path / "a"))
    first = train(_cfg(shards, tmp_path / "b", stop_after=10))
    assert first["steps"] == 10
    resumed = train(_cfg(shards, tmp_path / "b", resume=True))
    assert resumed["losses"] == straight["losses"]  # bit for bit, the same 24 losses
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 25))
    assert (tmp_path / "b" / "loss.png").stat().st_size > 5000


def test_tiny_model_learns_the_curated_text(shards, tmp_path, capsys):
    """A few hundred steps on CPU take the loss well below the unigram entropy of the tokens."""
    result = train(_cfg(shards, tmp_path / "m", steps=300, batch_size=16, context_length=64, eval_every=100,
                        max_lr=5e-3, warmup_steps=20))
    entropy = unigram_entropy(TokenDataset.from_run(shards))
    final = float(np.mean(result["losses"][-20:]))
    assert result["losses"][0] > entropy  # it starts above (a random model is worse than unigram)
    assert final < 0.8 * entropy, (final, entropy)
    assert result["val_loss"] < entropy
    # sift generate: the tokenizer is found through the shards' manifest
    from training.sample import main as generate_main

    assert generate_main(["--checkpoint", str(tmp_path / "m" / "checkpoint.pt"), "--prompt", "Once upon a time",
                          "--max-new-tokens", "20", "--num-samples", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("--- sample") == 2 and printed.count("Once upon a time") == 2


def test_ray_train_two_cpu_workers(shards, tmp_path):
    """`sift pretrain --num-workers 2`: Ray Train TorchTrainer with gloo, the project's bucketed DDP and ZeRO-1;
    rank 0 writes the metrics and checkpoint, the run resumes, and the loss falls."""
    from training.pretrain import launch

    cfg = _cfg(shards, tmp_path / "ddp", steps=30, zero1=True, bucket_mb=0.05, grad_accum=2, stop_after=20)
    first = launch(cfg, num_workers=2, use_gpu=False)
    assert first["steps"] == 20
    assert (tmp_path / "ddp" / "optimizer-rank1.pt").exists()
    done = launch(_cfg(shards, tmp_path / "ddp", steps=30, zero1=True, bucket_mb=0.05, grad_accum=2, resume=True),
                  num_workers=2, use_gpu=False)
    assert done["steps"] == 30 and len(done["losses"]) == 30
    assert sum(done["losses"][-5:]) < sum(done["losses"][:5])
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2


def test_mfu_is_over_the_peak_of_every_device():
    from training.pretrain import mfu

    # 4 ranks, 1e15 model FLOPs in the step, 1 s, 1e15 peak each: a quarter of the node's peak
    assert mfu(1e15, 1.0, 1e15, world=4) == pytest.approx(0.25)
    assert mfu(1e15, 2.0, 1e15) == pytest.approx(0.5)
    assert mfu(1e15, 1.0, None, world=4) is None


def test_a_one_rank_group_trains_as_one_process_without_the_ddp_wrapper(shards, tmp_path, monkeypatch):
    """Ray Train with one worker initialises a process group of one: nothing to all-reduce, so no DDP buckets or
    hooks, and the losses equal a plain single-process run's."""
    import torch.distributed as dist

    import training.ddp

    def refuse(*a, **k):
        raise AssertionError("DDPBucketed built for a world of one")

    alone = train(_cfg(shards, tmp_path / "alone", steps=6))
    monkeypatch.setattr(training.ddp, "DDPBucketed", refuse)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        grouped = train(_cfg(shards, tmp_path / "group", steps=6))
    finally:
        dist.destroy_process_group()
    assert grouped["losses"] == alone["losses"]
    assert json.loads((tmp_path / "group" / "config.json").read_text())["world_size"] == 1


def test_cuda_graphs_need_the_whole_model_compiled(shards, tmp_path):
    with pytest.raises(ValueError, match="cuda_graphs needs compile=true"):
        train(_cfg(shards, tmp_path / "g", cuda_graphs=True))
    with pytest.raises(ValueError, match="cuda_graphs needs compile=true"):
        train(_cfg(shards, tmp_path / "g", cuda_graphs=True, compile=True, compile_mode="blocks"))


def test_an_output_holding_a_run_is_refused_unless_resumed_or_overwritten(shards, tmp_path, capsys):
    """Training into a folder that holds a run must not replace its model silently."""
    out = tmp_path / "r"
    train(_cfg(shards, out, steps=4))
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a pretraining run: pass --resume"):
        train(_cfg(shards, out, steps=2))
    assert (out / "checkpoint.pt").read_bytes() == before
    # resuming a run that is already past `steps` trains nothing and says so
    assert train(_cfg(shards, out, steps=3, resume=True))["steps"] == 4
    assert "already trained 4 steps (steps=3): nothing to do" in capsys.readouterr().err
    # overwrite=true starts again from scratch: the old metrics go
    again = train(_cfg(shards, out, steps=2, overwrite=True))
    assert again["steps"] == 2 and len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # --resume with another model shape: the differing settings, not a state-dict size mismatch
    with pytest.raises(ValueError, match=r"trained with another model: d_model 64 \(checkpoint\) vs 128"):
        train(_cfg(shards, out, steps=4, resume=True, model={"d_model": 128}))


def test_splits_too_short_for_the_context(shards, tmp_path, capsys):
    """A validation split shorter than one window gives a warning and no validation loss (never NaN); a training
    split shorter than one window is an error, as is a device this torch cannot use."""
    from training.pretrain import check_splits

    train_ds, val_ds = TokenDataset.from_run(shards, "train"), TokenDataset.from_run(shards, "validation")
    longest_val = max(len(a) for a in val_ds.arrays)
    assert check_splits(train_ds, val_ds, _cfg(shards, tmp_path, context_length=longest_val - 1)) is val_ds
    assert check_splits(train_ds, val_ds, _cfg(shards, tmp_path, context_length=longest_val)) is None
    assert "has no shard longer than context_length" in capsys.readouterr().err
    assert check_splits(train_ds, None, _cfg(shards, tmp_path)) is None
    assert "no validation split" in capsys.readouterr().err
    longest_train = max(len(a) for a in train_ds.arrays)
    with pytest.raises(ValueError, match=f"no training shard holds context_length \\+ 1 = {longest_train + 1}"):
        check_splits(train_ds, val_ds, _cfg(shards, tmp_path, context_length=longest_train))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            train(_cfg(shards, tmp_path / "d", steps=2, device="cuda"))


def test_progress_lines_without_a_terminal(shards, tmp_path, capsys):
    """Under a log file or a Ray job (no TTY, so no tqdm bar) the loop still reports its progress."""
    train(_cfg(shards, tmp_path / "p", steps=40))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("pretrain step ")]
    assert len(lines) == 10 and lines[-1].startswith("pretrain step 40/40 loss ")
    assert "tok/s" in lines[0] and "eta" in lines[0]
