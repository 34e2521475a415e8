"""SFT and GRPO on verifiable tasks, with a Ray rollout actor and the learner in the driver.

    sift align sft  --config configs/align-arith.yaml      # prompt/response pairs, loss on response tokens only
    sift align grpo --config configs/align-arith.yaml      # rollouts -> rewards -> group advantages -> policy steps
    sift align dpo  --config ... [--set pairs=pairs.jsonl] # preference pairs against a frozen reference copy

GRPO step: take `rollout_batch_size / group_size` questions, ask the rollout worker for `group_size` sampled
answers each (the model's KV-cache `generate`, temperature, stop at "</answer>"), score them with the task's reward,
compute group-normalised advantages, then `epochs_per_rollout_batch` passes of micro-batched policy-gradient steps
(`loss_type`: no_baseline, reinforce_with_baseline, or grpo_clip against the log-probabilities at rollout time,
which makes epochs after the first off-policy). After the optimiser steps the learner's weights go to the rollout
worker. With `use_ray` the worker is a Ray actor (its own process; `rollout_gpus` GPUs), else it runs in-process.
Metrics per step (reward, answer and format rates, response length, entropy, clip fraction, loss, gradient norm,
evaluation accuracy) are appended to <output>/metrics.jsonl and plotted to <output>/curves.png.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from model.config import ModelConfig, preset
from model.generate import generate
from model.layers import TransformerLM
from training.checkpoint import load_payload
from training.configs import ALIGN_COMMANDS, TEMPLATES, AlignConfig  # noqa: F401 - re-exported
from training.align.core import (
    compute_dpo_loss, compute_group_normalized_rewards, sequence_log_probs, get_response_log_probs, grpo_microbatch_train_step, masked_mean,
    sft_microbatch_train_step, tokenize_prompt_and_output,
)
from training.align.rewards import (
    STOP, arithmetic_problems, countdown_question, countdown_reward, countdown_solve, gsm8k_answer, math_reward,
)
from training.optim import AdamW, clip_gradients
from training.pretrain import resolve_device

# ------------------------------------------------------------------------------------------ tasks

@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    """The ground truth handed to the reward (a number / LaTeX answer, or "n1,n2,...=target" for Countdown)."""
    solution: str
    """A reference response (reasoning + answer tag) for SFT."""


def _prompt(cfg: AlignConfig, question: str) -> str:
    from training.align.rewards import format_prompt

    return format_prompt(question) if cfg.template == "r1_zero" else TEMPLATES[cfg.template].format(question=question)


def load_task(cfg: AlignConfig, split: str) -> list[Example]:
    """Training (split="train") or held-out evaluation (split="eval") examples of the configured task."""
    n = cfg.train_size if split == "train" else cfg.eval_size
    if cfg.task == "arithmetic":  # disjoint seeds for the two splits
        probs = arithmetic_problems(n, cfg.difficulty, seed=cfg.seed * 2 + (split == "eval"))
        return [Example(_prompt(cfg, p.question), p.answer, f" {p.steps} </think> <answer>{p.answer}</answer>")
                for p in probs]
    if not cfg.data:
        raise ValueError(f"task {cfg.task} needs data: a JSONL file")
    rows = [json.loads(line) for line in Path(cfg.data).read_text().split("\n") if line.strip()]
    rng = random.Random(cfg.seed)
    rng.shuffle(rows)
    rows = rows[:n] if split == "train" else rows[-n:]
    if cfg.task == "gsm8k":
        return [Example(_prompt(cfg, r["question"]), gsm8k_answer(r["answer"]),
                        " " + r["answer"].rsplit("####", 1)[0].strip() + f" </think> <answer>{gsm8k_answer(r['answer'])}</answer>")
                for r in rows]
    out = []
    for r in rows:  # countdown
        nums, target = [int(x) for x in r["input"].split(",")], int(r["output"])
        expr = countdown_solve(nums, target) or ""
        out.append(Example(_prompt(cfg, countdown_question(nums, target)), f"{r['input']}={target}",
                           f" {expr} = {target} </think> <answer>{expr}</answer>"))
    return out


def reward_fn_for(task: str, format_bonus: float = 0.0) -> Callable[[str, str], dict[str, float]]:
    """The task's reward; `format_bonus` > 0 adds that much for a well-formed response (a denser signal for small
    models, as TinyZero's 0.1), so reward = answer_reward + format_bonus * format_reward."""
    if task == "countdown":
        def base(response: str, gold: str) -> dict[str, float]:
            nums, target = gold.split("=")
            return countdown_reward(response, [int(x) for x in nums.split(",")], int(target))
    else:
        base = math_reward
    if not format_bonus:
        return base

    def with_bonus(response: str, gold: str) -> dict[str, float]:
        r = base(response, gold)
        return {**r, "reward": r["answer_reward"] + format_bonus * r["format_reward"]}
    return with_bonus


# ------------------------------------------------------------------------------------------ model and rollouts

def load_policy(cfg: AlignConfig, vocab_size: int, device: torch.device) -> tuple[TransformerLM, ModelConfig]:
    if cfg.checkpoint and (Path(cfg.checkpoint) / "config.json").exists():  # a Hugging Face Llama/Qwen2 folder
        from model.hf import load_hf_checkpoint

        model, mcfg = load_hf_checkpoint(cfg.checkpoint, context_length=(cfg.model or {}).get("context_length"))
    elif cfg.checkpoint:
        payload = load_payload(cfg.checkpoint)
        if "model_config" not in payload:
            raise ValueError(f"{cfg.checkpoint}: not a sift checkpoint (no model_config)")
        mcfg = ModelConfig.from_dict(payload["model_config"])
        model = TransformerLM.from_config(mcfg)
        model.load_state_dict(payload["model"])
    else:
        torch.manual_seed(cfg.seed)
        mcfg = preset(cfg.preset, **{**(cfg.model or {}), "vocab_size": vocab_size})
        model = TransformerLM.from_config(mcfg)
    if mcfg.vocab_size < vocab_size:
        raise ValueError(f"the model's vocabulary ({mcfg.vocab_size}) is smaller than the tokenizer's ({vocab_size})")
    return model.to(device), mcfg


class RolloutWorker:
    """Holds a copy of the policy and samples answers; runs in-process or as a Ray actor."""

    def __init__(self, mcfg: dict[str, Any], tokenizer_spec: str, device: str = "auto"):
        from pipelines.tokenize import load_tokenizer

        self.device = resolve_device(device)
        self.model = TransformerLM.from_config(ModelConfig.from_dict(mcfg)).to(self.device)
        self.tok = load_tokenizer(tokenizer_spec)

    def set_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def sample(self, prompts: list[str], group_size: int, max_new_tokens: int, temperature: float,
               seed: int) -> tuple[list[str], float]:
        """`group_size` answers per prompt (in prompt order), cut after "</answer>"; and generated tokens/s."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        eos = getattr(self.tok, "eot_id", None)
        # checked after every token, so the stop string can only have just been completed: decoding the last few
        # tokens is enough (decoding everything each step made rollouts quadratic in the response length)
        stop = (lambda ids: STOP in self.tok.decode(ids[-12:]))
        out, t0, n_tok = [], time.perf_counter(), 0
        ids = [self.tok.encode(p) for p in prompts for _ in range(group_size)]
        # one batch per prompt length (generate groups them), so questions of equal length share forward passes
        for seq in generate(self.model, ids, max_new_tokens, temperature, 1.0, eos, g, True, stop):
            n_tok += len(seq)
            text = self.tok.decode([t for t in seq if t != eos])
            out.append(text[: text.index(STOP) + len(STOP)] if STOP in text else text)
        return out, n_tok / max(time.perf_counter() - t0, 1e-9)


# ------------------------------------------------------------------------------------------ loops

def _batches(items: list, size: int, rng: random.Random):
    while True:
        order = items[:]
        rng.shuffle(order)
        for i in range(0, len(order) - size + 1, size):
            yield order[i : i + size]


def _response_log_probs(model, batch: dict[str, torch.Tensor], entropy: bool = False) -> dict[str, torch.Tensor]:
    return get_response_log_probs(model, batch["input_ids"], batch["labels"], return_token_entropy=entropy)


def evaluate(worker, examples: list[Example], cfg: AlignConfig, reward_fn, call) -> dict[str, float]:
    """Greedy answers to held-out questions: accuracy and format rate."""
    texts, _ = call(worker.sample, [e.prompt for e in examples], 1, cfg.max_new_tokens, 0.0, cfg.seed)
    scores = [reward_fn(t, e.answer) for t, e in zip(texts, examples)]
    return {"eval_accuracy": sum(s["answer_reward"] for s in scores) / len(scores),
            "eval_format": sum(s["format_reward"] for s in scores) / len(scores),
            "eval_example": texts[0][:200] if texts else ""}


def _setup(cfg: AlignConfig):
    from pipelines.tokenize import load_tokenizer

    if not cfg.output or not cfg.tokenizer:
        raise ValueError("align needs output and tokenizer")
    device = resolve_device(cfg.device)
    tok = load_tokenizer(cfg.tokenizer)
    vocab = tok.vocab_size
    model, mcfg = load_policy(cfg, vocab, device)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"align": asdict(cfg), "model": asdict(mcfg)}, indent=2, default=str))
    return device, tok, model, mcfg, out


def _pad_id(tok) -> int:
    eot = getattr(tok, "eot_id", None)
    return eot if eot is not None else 0


def _sft_update(model, opt, tok, prompts: list[str], responses: list[str], device, cfg: AlignConfig) -> tuple[float, float]:
    """One optimiser step of SFT on (prompt, response) pairs, the loss per response token: (loss, gradient norm)."""
    b = {k: v.to(device) for k, v in tokenize_prompt_and_output(prompts, responses, tok, _pad_id(tok)).items()}
    logp = _response_log_probs(model, b)["log_probs"]
    loss, _ = sft_microbatch_train_step(logp, b["response_mask"], 1,
                                        normalize_constant=float(b["response_mask"].sum()) / len(prompts))
    norm = clip_gradients(model.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss), norm


def sft(cfg: AlignConfig) -> dict[str, Any]:
    """Supervised fine-tuning on the task's reference solutions; loss on response tokens only."""
    from training.checkpoint import save_checkpoint

    device, tok, model, mcfg, out = _setup(cfg)
    train, rng = load_task(cfg, "train"), random.Random(cfg.seed)
    opt = AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    metrics = open(out / "metrics.jsonl", "w")
    losses = []
    batches = _batches(train, cfg.sft_batch_size, rng)
    for step in range(cfg.sft_steps):
        exs = next(batches)
        loss, norm = _sft_update(model, opt, tok, [e.prompt for e in exs], [e.solution for e in exs], device, cfg)
        losses.append(loss)
        metrics.write(json.dumps({"step": step + 1, "loss": loss, "grad_norm": norm}) + "\n")
    metrics.close()
    save_checkpoint(model, opt, cfg.sft_steps, out / "checkpoint.pt", model_config=asdict(mcfg), config=asdict(cfg))
    return {"output": str(out), "steps": cfg.sft_steps, "first_loss": losses[0], "final_loss": losses[-1]}


def rollout_worker(cfg: AlignConfig, mcfg: ModelConfig, model: TransformerLM):
    """(worker, call, push, close): a RolloutWorker as a Ray actor (`use_ray`) or in-process; `call(worker.method, *a)`
    runs a method, `push()` sends the learner's current weights, `close()` ends the actor."""
    wargs = (asdict(mcfg), cfg.tokenizer, "auto" if cfg.rollout_gpus or not cfg.use_ray else "cpu")
    if cfg.use_ray:
        import ray

        from pipelines.layout import init_ray

        init_ray(None)
        worker = ray.remote(RolloutWorker).options(num_cpus=1, num_gpus=cfg.rollout_gpus).remote(*wargs)

        def call(method, *args):
            return ray.get(method.remote(*args))

        def push():
            ray.get(worker.set_weights.remote({k: v.detach().cpu() for k, v in model.state_dict().items()}))

        def close():
            ray.kill(worker)
    else:
        worker = RolloutWorker(*wargs)

        def call(method, *args):
            return method(*args)

        def push():
            worker.set_weights({k: v.detach().to(worker.device) for k, v in model.state_dict().items()})

        def close():
            pass
    push()
    return worker, call, push, close


def expert_iteration(cfg: AlignConfig) -> dict[str, Any]:
    """Expert iteration: sample `group_size` answers to `rollout_batch_size / group_size` questions, keep the correct
    ones, SFT on them (`ei_sft_epochs` passes), send the weights to the sampler, repeat `ei_steps` times."""
    from training.checkpoint import save_checkpoint

    device, tok, model, mcfg, out = _setup(cfg)
    reward_fn = reward_fn_for(cfg.task)
    train, held_out = load_task(cfg, "train"), load_task(cfg, "eval")
    rng = random.Random(cfg.seed)
    opt = AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    worker, call, push, close = rollout_worker(cfg, mcfg, model)
    questions = _batches(train, cfg.rollout_batch_size // cfg.group_size, rng)
    rows = []
    try:
        with open(out / "metrics.jsonl", "w") as metrics:
            for it in range(cfg.ei_steps):
                row: dict[str, Any] = {"step": it, **evaluate(worker, held_out, cfg, reward_fn, call)}
                exs = next(questions)
                texts, _ = call(worker.sample, [e.prompt for e in exs], cfg.group_size, cfg.max_new_tokens,
                                cfg.temperature, cfg.seed * 7919 + it)
                kept = [(e.prompt, t) for i, t in enumerate(texts) for e in [exs[i // cfg.group_size]]
                        if reward_fn(t, e.answer)["answer_reward"] == 1.0]
                kept = list(dict.fromkeys(kept))  # the same correct answer sampled twice counts once
                losses = []
                for _ in range(cfg.ei_sft_epochs if kept else 0):
                    rng.shuffle(kept)
                    for i in range(0, len(kept), cfg.sft_batch_size):
                        chunk = kept[i : i + cfg.sft_batch_size]
                        losses.append(_sft_update(model, opt, tok, [c[0] for c in chunk], [c[1] for c in chunk],
                                                  device, cfg)[0])
                push()
                row.update({"sampled": len(texts), "kept": len(kept), "keep_rate": len(kept) / len(texts),
                            "sft_loss": sum(losses) / len(losses) if losses else None})
                rows.append(row)
                metrics.write(json.dumps(row) + "\n")
            final = {"step": cfg.ei_steps, **evaluate(worker, held_out, cfg, reward_fn, call)}
            metrics.write(json.dumps(final) + "\n")
    finally:
        close()
    save_checkpoint(model, opt, cfg.ei_steps, out / "checkpoint.pt", model_config=asdict(mcfg), config=asdict(cfg))
    return {"output": str(out), "steps": cfg.ei_steps, "eval_accuracy_first": rows[0]["eval_accuracy"] if rows else None,
            "eval_accuracy_final": final["eval_accuracy"], "kept": [r["kept"] for r in rows]}


def grpo(cfg: AlignConfig) -> dict[str, Any]:
    """GRPO (or REINFORCE) on the task, rollouts from a worker that receives the learner's weights every step."""
    from training.checkpoint import save_checkpoint

    device, tok, model, mcfg, out = _setup(cfg)
    reward_fn = reward_fn_for(cfg.task, cfg.format_bonus)
    train, held_out = load_task(cfg, "train"), load_task(cfg, "eval")
    rng = random.Random(cfg.seed)
    opt = AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    worker, call, push, close = rollout_worker(cfg, mcfg, model)
    push()
    n_prompts = cfg.rollout_batch_size // cfg.group_size
    batches = _batches(train, n_prompts, rng)
    history = []
    (out / "pairs.jsonl").unlink(missing_ok=True)  # a rerun starts a fresh set, like metrics.jsonl
    metrics = open(out / "metrics.jsonl", "w")
    try:
        for step in range(cfg.grpo_steps):
            row: dict[str, Any] = {"step": step}
            if cfg.eval_every and step % cfg.eval_every == 0:
                row.update(evaluate(worker, held_out, cfg, reward_fn, call))
            exs = next(batches)
            t0 = time.perf_counter()
            responses, gen_tps = call(worker.sample, [e.prompt for e in exs], cfg.group_size, cfg.max_new_tokens,
                                      cfg.temperature, cfg.seed * 100_003 + step)
            rollout_s = time.perf_counter() - t0
            prompts = [e.prompt for e in exs for _ in range(cfg.group_size)]
            golds = [e.answer for e in exs for _ in range(cfg.group_size)]
            adv, raw, meta = compute_group_normalized_rewards(reward_fn, responses, golds, cfg.group_size,
                                                              cfg.advantage_eps, cfg.use_std_normalization)
            batch = {k: v.to(device) for k, v in tokenize_prompt_and_output(prompts, responses, tok, _pad_id(tok)).items()}
            if batch["input_ids"].shape[1] > mcfg.context_length:
                raise ValueError(f"prompt + response of {batch['input_ids'].shape[1]} tokens exceed the context "
                                 f"{mcfg.context_length}: lower max_new_tokens or use a shorter template")
            if cfg.save_pairs:  # on-policy DPO data: `sift align dpo --set pairs=<output>/pairs.jsonl`
                with open(out / "pairs.jsonl", "a") as f:
                    for pair in pairs_from_rollouts(prompts, responses, raw.tolist(), cfg.group_size):
                        f.write(json.dumps(pair) + "\n")
            adv, raw = adv.to(device)[:, None], raw.to(device)[:, None]
            with torch.no_grad():
                old = torch.cat([_response_log_probs(model, {k: v[i : i + cfg.micro_batch_size] for k, v in batch.items()})["log_probs"]
                                 for i in range(0, len(prompts), cfg.micro_batch_size)])
            n_micro = -(-len(prompts) // cfg.micro_batch_size)
            losses, entropies, clips, norms = [], [], [], []
            for _ in range(cfg.epochs_per_rollout_batch):
                for i in range(0, len(prompts), cfg.micro_batch_size):
                    sl = slice(i, i + cfg.micro_batch_size)
                    mb = {k: v[sl] for k, v in batch.items()}
                    lp = _response_log_probs(model, mb, entropy=True)
                    loss, m = grpo_microbatch_train_step(
                        lp["log_probs"], mb["response_mask"], n_micro, cfg.loss_type, raw[sl], adv[sl], old[sl],
                        cfg.cliprange, cfg.length_normalization, float(cfg.max_new_tokens))
                    losses.append(float(loss) * n_micro)
                    entropies.append(float(masked_mean(lp["token_entropy"].detach(), mb["response_mask"])))
                    if "clip_fraction" in m:
                        clips.append(float(m["clip_fraction"]))
                norms.append(clip_gradients(model.parameters(), cfg.grad_clip))
                opt.step()
                opt.zero_grad(set_to_none=True)
            push()
            lengths = batch["response_mask"].sum(1).float()
            row.update({**meta, "loss": sum(losses) / len(losses), "entropy": sum(entropies) / len(entropies),
                        "clip_fraction": sum(clips) / len(clips) if clips else None, "grad_norm": norms[-1],
                        "response_tokens": float(lengths.mean()), "rollout_s": rollout_s, "rollout_tokens_per_s": gen_tps,
                        "example": responses[0][:200]})
            history.append(row)
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        final = evaluate(worker, held_out, cfg, reward_fn, call)
        final["step"] = cfg.grpo_steps
        metrics.write(json.dumps(final) + "\n")
    finally:
        metrics.close()
        close()
    save_checkpoint(model, opt, cfg.grpo_steps, out / "checkpoint.pt", model_config=asdict(mcfg), config=asdict(cfg))
    plot_curves([*history, final], out / "curves.png")
    first_eval = next((r["eval_accuracy"] for r in history if "eval_accuracy" in r), None)
    return {"output": str(out), "steps": cfg.grpo_steps, "eval_accuracy_first": first_eval,
            "eval_accuracy_final": final["eval_accuracy"], "reward_mean_last": history[-1]["reward_mean"] if history else None}


def pairs_from_rollouts(prompts: list[str], responses: list[str], rewards: list[float], group_size: int,
                        max_per_group: int = 1) -> list[dict[str, str]]:
    """On-policy preference pairs from GRPO rollouts: within each group (one prompt), a best-rewarded response as
    chosen against a worst-rewarded one as rejected, only where the two rewards differ; distinct pairs, at most
    `max_per_group` per group, in order of appearance."""
    if not (len(prompts) == len(responses) == len(rewards)) or len(prompts) % group_size:
        raise ValueError("prompts, responses and rewards must have equal lengths, a multiple of group_size")
    pairs = []
    for g in range(0, len(prompts), group_size):
        idx = range(g, g + group_size)
        hi, lo = max(rewards[i] for i in idx), min(rewards[i] for i in idx)
        if hi == lo:
            continue
        best = [responses[i] for i in idx if rewards[i] == hi]
        worst = [responses[i] for i in idx if rewards[i] == lo]
        seen: list[tuple[str, str]] = []
        for c in dict.fromkeys(best):
            for r in dict.fromkeys(worst):
                if len(seen) < max_per_group:
                    seen.append((c, r))
        pairs += [{"prompt": prompts[g], "chosen": c, "rejected": r} for c, r in seen]
    return pairs


def preference_pairs(cfg: AlignConfig) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) triples from `pairs`, or near-miss pairs built from the task's examples."""
    if cfg.pairs:
        rows = [json.loads(line) for line in Path(cfg.pairs).read_text().split("\n") if line.strip()]
        try:
            return [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
        except KeyError as exc:
            raise ValueError(f"{cfg.pairs}: each line needs prompt, chosen and rejected ({exc.args[0]} missing)") from None
    rng = random.Random(cfg.seed + 1)
    out = []
    for e in load_task(cfg, "train"):
        try:
            wrong = str(int(e.answer) + rng.choice([-10, -2, -1, 1, 2, 10]))
        except ValueError:
            continue
        out.append((e.prompt, e.solution, e.solution.replace(f"= {e.answer} ", f"= {wrong} ").replace(
            f"<answer>{e.answer}</answer>", f"<answer>{wrong}</answer>")))
    return out


def dpo(cfg: AlignConfig) -> dict[str, Any]:
    """DPO against a frozen copy of the starting policy."""
    import copy

    from training.checkpoint import save_checkpoint

    device, tok, model, mcfg, out = _setup(cfg)
    pairs = preference_pairs(cfg)
    if not pairs:
        raise ValueError("no preference pairs")
    ref = copy.deepcopy(model).eval()
    for p_ in ref.parameters():
        p_.requires_grad_(False)
    opt = AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = _batches(pairs, min(cfg.dpo_batch_size, len(pairs)), random.Random(cfg.seed))
    history = []
    with open(out / "metrics.jsonl", "w") as metrics:
        for step in range(cfg.dpo_steps):
            chunk = next(batches)
            prompts = [c[0] for c in chunk] * 2
            responses = [c[1] for c in chunk] + [c[2] for c in chunk]
            b = {k: v.to(device) for k, v in tokenize_prompt_and_output(prompts, responses, tok, _pad_id(tok)).items()}
            pol = sequence_log_probs(model, b["input_ids"], b["labels"], b["response_mask"])
            with torch.no_grad():
                rl = sequence_log_probs(ref, b["input_ids"], b["labels"], b["response_mask"])
            n = len(chunk)
            loss, meta = compute_dpo_loss(pol[:n], pol[n:], rl[:n], rl[n:], cfg.dpo_beta)
            loss.backward()
            norm = clip_gradients(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            row = {"step": step + 1, "loss": float(loss), "grad_norm": norm, **{k: float(v) for k, v in meta.items()}}
            history.append(row)
            metrics.write(json.dumps(row) + "\n")
    save_checkpoint(model, opt, cfg.dpo_steps, out / "checkpoint.pt", model_config=asdict(mcfg), config=asdict(cfg))
    return {"output": str(out), "steps": cfg.dpo_steps, "pairs": len(pairs), "first_loss": history[0]["loss"],
            "final_loss": history[-1]["loss"], "final_preference_accuracy": history[-1]["preference_accuracy"]}


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("reward_mean", "train reward"), ("eval_accuracy", "held-out accuracy"), ("response_tokens", "response length"),
            ("entropy", "entropy (nats)"), ("clip_fraction", "clip fraction"), ("loss", "loss")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, (k, label) in zip(axes.ravel(), keys):
        pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-" if len(pts) < 30 else "-", ms=3)
        ax.set_title(label)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


COMMANDS = {"sft": sft, "ei": expert_iteration, "grpo": grpo, "dpo": dpo}


def main(argv: list[str] | None = None, prog: str = "sift align") -> int:
    from pipelines.config import parse_set, resolve, config_parser

    p = config_parser(prog, "SFT, GRPO, DPO and expert iteration on verifiable tasks.", AlignConfig)
    p.add_argument("command", choices=list(COMMANDS))
    p.add_argument("--config", "-c")
    p.add_argument("--output", "-o")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    try:
        overrides = parse_set(args.set)
        if args.output:
            overrides["output"] = args.output
        cfg = resolve(AlignConfig, args.config, overrides)
        result = COMMANDS[args.command](cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
