"""SFT and GRPO end to end on CPU: a tiny model on generated arithmetic, GRPO rollouts from a Ray actor."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from operators.bpe import save_vocab_merges, train_bpe
from training.align.grpo import AlignConfig, RolloutWorker, grpo, load_task, main, reward_fn_for, sft

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A 400-token BPE trained on the task's own text (prompts and reference solutions)."""
    d = tmp_path_factory.mktemp("tok")
    cfg = AlignConfig(output="x", tokenizer="x", train_size=400, eval_size=50, difficulty=1)
    text = EOT.join(e.prompt + e.solution for e in load_task(cfg, "train") + load_task(cfg, "eval"))
    (d / "corpus.txt").write_text(text)
    vocab, merges = train_bpe(d / "corpus.txt", 400, [EOT])
    save_vocab_merges(vocab, merges, d / "vocab.json", d / "merges.txt")
    (d / "special_tokens.txt").write_text(EOT + "\n")
    return d


def _cfg(tokenizer_dir, out, **kw) -> AlignConfig:
    base = dict(output=str(out), tokenizer=str(tokenizer_dir), preset="tiny",
                model={"context_length": 96, "attention": "reference"}, task="arithmetic", difficulty=1,
                train_size=400, eval_size=16, device="cpu", lr=3e-3, max_new_tokens=24)
    return AlignConfig(**{**base, **kw})


def test_tasks_and_configs(tmp_path):
    cfg = _cfg("tok", tmp_path)
    train, held = load_task(cfg, "train"), load_task(cfg, "eval")
    assert len(train) == 400 and len(held) == 16
    assert len({e.prompt for e in train} & {e.prompt for e in held}) <= 2  # disjoint seeds; a rare coincidence only
    # reference solutions earn full reward
    assert all(math_ok == 1.0 for math_ok in (reward_fn_for("arithmetic")(e.solution, e.answer)["reward"] for e in train[:50]))
    bonus = reward_fn_for("arithmetic", 0.1)
    assert bonus(train[0].solution, train[0].answer)["reward"] == pytest.approx(1.1)
    assert bonus(" x </think> <answer>nope</answer>", "3")["reward"] == pytest.approx(0.1)
    assert bonus("no tags", "3")["reward"] == 0.0
    with pytest.raises(ValueError, match="grpo_clip"):
        AlignConfig(loss_type="reinforce_with_baseline", epochs_per_rollout_batch=2)
    with pytest.raises(ValueError, match="multiple"):
        AlignConfig(rollout_batch_size=10, group_size=4)
    with pytest.raises(ValueError, match="task"):
        AlignConfig(task="chess")
    assert main(["grpo", "--set", "output=/tmp/x"]) == 2  # no tokenizer: a clear error


def test_countdown_task_from_real_problems(tmp_path):
    from tests.conftest import FIXTURES

    cfg = AlignConfig(output="x", tokenizer="x", task="countdown", data=str(FIXTURES / "alignment" / "countdown-head30.jsonl"),
                      train_size=20, eval_size=5, template="r1_zero")
    exs = load_task(cfg, "train")
    assert len(exs) == 20 and all("exactly once" in e.prompt for e in exs)
    assert all(reward_fn_for("countdown")(e.solution, e.answer)["reward"] == 1.0 for e in exs)


def test_sft_then_grpo_through_a_ray_actor(ray_local, tokenizer_dir, tmp_path):
    sft_out = sft(_cfg(tokenizer_dir, tmp_path / "sft", sft_steps=60, sft_batch_size=16))
    assert sft_out["final_loss"] < 0.7 * sft_out["first_loss"]  # the model learns the answer format
    ckpt = tmp_path / "sft" / "checkpoint.pt"
    before = {k: v.clone() for k, v in torch.load(ckpt, weights_only=False)["model"].items()}
    cfg = _cfg(tokenizer_dir, tmp_path / "grpo", checkpoint=str(ckpt), grpo_steps=3, rollout_batch_size=8, group_size=4,
               micro_batch_size=4, loss_type="grpo_clip", epochs_per_rollout_batch=2, eval_every=2, lr=1e-3,
               temperature=1.0, use_ray=True, format_bonus=0.1)
    result = grpo(cfg)
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 3
    for r in steps:
        for k in ("loss", "entropy", "grad_norm", "reward_mean", "response_tokens", "clip_fraction", "rollout_tokens_per_s"):
            assert r[k] is not None and math.isfinite(r[k]), k
        assert 0.0 <= r["reward_mean"] <= 1.1 and 0.0 <= r["clip_fraction"] <= 1.0
    assert "eval_accuracy" in rows[0] and 0.0 <= result["eval_accuracy_final"] <= 1.0
    after = torch.load(tmp_path / "grpo" / "checkpoint.pt", weights_only=False)["model"]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the policy moved
    assert (tmp_path / "grpo" / "curves.png").stat().st_size > 10_000
    # groups with mixed rewards (the format bonus makes them common) became DPO pairs, readable by `align dpo`
    from training.align.grpo import preference_pairs

    pairs_file = tmp_path / "grpo" / "pairs.jsonl"
    if pairs_file.exists():
        pairs = preference_pairs(replace(cfg, pairs=str(pairs_file)))
        assert all(c != r for _, c, r in pairs)


def test_rollout_worker_stops_at_the_answer_tag(tokenizer_dir):
    from model.config import preset

    torch.manual_seed(0)
    w = RolloutWorker(vars(preset("tiny", vocab_size=400, context_length=96, attention="reference")),
                      str(tokenizer_dir), "cpu")
    texts, tps = w.sample(["What is 1 + 2?\n<think>"], 3, 20, 1.0, seed=1)
    assert len(texts) == 3 and tps > 0
    for t in texts:
        assert "</answer>" not in t or t.endswith("</answer>")


def test_dpo_prefers_the_right_answer(tokenizer_dir, tmp_path):
    from training.align.grpo import dpo, preference_pairs

    cfg = _cfg(tokenizer_dir, tmp_path / "dpo", dpo_steps=60, dpo_batch_size=16, dpo_beta=1.0, lr=3e-3)
    pairs = preference_pairs(cfg)
    p, chosen, rejected = pairs[0]
    assert chosen != rejected and chosen.split("<answer>")[0] != rejected.split("<answer>")[0]  # a wrong final step too
    result = dpo(cfg)
    rows = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the start
    late = rows[-10:]
    assert sum(r["loss"] for r in late) / 10 < 0.75 * rows[0]["loss"]
    assert sum(r["preference_accuracy"] for r in late) / 10 > 0.7 and result["pairs"] == 400
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(ValueError, match="rejected"):
        preference_pairs(_cfg(tokenizer_dir, tmp_path / "x", pairs=str(bad)))


def test_expert_iteration_keeps_only_correct_answers(tokenizer_dir, tmp_path):
    """In-process rollouts (no Ray): sample, keep the correct answers, SFT on them, repeat."""
    from training.align.grpo import expert_iteration

    sft(_cfg(tokenizer_dir, tmp_path / "sft", sft_steps=80, sft_batch_size=16))
    cfg = _cfg(tokenizer_dir, tmp_path / "ei", checkpoint=str(tmp_path / "sft" / "checkpoint.pt"), ei_steps=2,
               rollout_batch_size=32, group_size=8, temperature=1.0, use_ray=False, lr=1e-3)
    result = expert_iteration(cfg)
    rows = [json.loads(line) for line in (tmp_path / "ei" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and [r["step"] for r in rows] == [0, 1, 2]
    for r in rows[:2]:
        assert r["sampled"] == 32 and 0 <= r["kept"] <= 32 and r["keep_rate"] == r["kept"] / 32
        assert (r["sft_loss"] is None) == (r["kept"] == 0)  # nothing kept: no update, no fake loss
        if r["sft_loss"] is not None:
            assert math.isfinite(r["sft_loss"])
    assert result["kept"] == [r["kept"] for r in rows[:2]] and 0.0 <= result["eval_accuracy_final"] <= 1.0


def test_expert_iteration_selection_is_exact(tokenizer_dir, tmp_path, monkeypatch):
    """With a scripted sampler (2 correct copies and 6 wrong answers per question), each step keeps exactly one
    deduplicated correct answer per question and trains on it."""
    from training.align import grpo as g

    cfg = _cfg(tokenizer_dir, tmp_path / "ei", ei_steps=2, rollout_batch_size=32, group_size=8, use_ray=False,
               ei_sft_epochs=1, sft_batch_size=2)
    solutions = {e.prompt: e.solution for e in load_task(cfg, "train") + load_task(cfg, "eval")}

    def scripted(self, prompts, group_size, max_new_tokens, temperature, seed):
        out = []
        for p in prompts:
            out += [solutions[p]] * min(2, group_size) + [" 1 + 1 = 3 </think> <answer>3</answer>"] * (group_size - 2)
        return out, 1.0

    monkeypatch.setattr(g.RolloutWorker, "sample", scripted)
    result = g.expert_iteration(cfg)
    rows = [json.loads(line) for line in (tmp_path / "ei" / "metrics.jsonl").read_text().splitlines()]
    assert result["kept"] == [4, 4]  # 32 samples = 4 questions x 8; one distinct correct answer each
    assert all(r["keep_rate"] == 4 / 32 and math.isfinite(r["sft_loss"]) for r in rows[:2])
    assert rows[0]["eval_accuracy"] == 1.0  # the scripted sampler answers held-out questions correctly too


def test_pairs_from_rollouts_exact():
    from training.align.grpo import pairs_from_rollouts

    prompts = ["p1"] * 4 + ["p2"] * 4 + ["p3"] * 4
    responses = ["a", "b", "a", "c", "x", "y", "z", "w", "m", "n", "o", "q"]
    rewards = [1.0, 0.0, 1.0, 0.1, 0.5, 0.5, 0.5, 0.5, 0.0, 1.0, 1.0, 0.0]
    assert pairs_from_rollouts(prompts, responses, rewards, 4) == [
        {"prompt": "p1", "chosen": "a", "rejected": "b"},  # p2: all rewards equal, no pair
        {"prompt": "p3", "chosen": "n", "rejected": "m"}]
    assert len(pairs_from_rollouts(prompts, responses, rewards, 4, max_per_group=4)) == 1 + 4  # p1: a-b; p3: 2 x 2
    with pytest.raises(ValueError):
        pairs_from_rollouts(prompts[:5], responses[:5], rewards[:5], 4)


@pytest.mark.slow
@pytest.mark.ray
def test_align_as_ray_jobs(tokenizer_dir, tmp_path):
    """`ray job submit -- python -m training.align.grpo sft|grpo`: SFT, then GRPO with its rollout actor on the
    cluster, both as submitted jobs that succeed and leave a checkpoint and finite metrics."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.pipelines.test_job_submit import RAY_BIN, _ray_cluster

    common = [f"tokenizer={tokenizer_dir}", "preset=tiny", "model={context_length: 96, attention: reference}",
              "difficulty=1", "train_size=400", "eval_size=8", "device=cpu", "max_new_tokens=24"]
    jobs = [("sft", tmp_path / "sft", ["sft_steps=20", "sft_batch_size=8", "lr=3e-3"]),
            ("grpo", tmp_path / "grpo", [f"checkpoint={tmp_path / 'sft' / 'checkpoint.pt'}", "grpo_steps=2",
                                         "rollout_batch_size=8", "group_size=4", "micro_batch_size=4", "eval_every=2",
                                         "use_ray=true", "lr=1e-3"])]
    with _ray_cluster(tmp_path, 2, []) as (address, env, _):
        for command, out, sets in jobs:
            cmd = [str(RAY_BIN), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
                   sys.executable, "-m", "training.align.grpo", command, "--output", str(out),
                   *[a for s in common + sets for a in ("--set", s)]]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            assert "succeeded" in (done.stdout + done.stderr).lower()
            assert (out / "checkpoint.pt").exists()
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "loss" in r]) == 2
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
