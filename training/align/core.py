"""The arithmetic of SFT and policy-gradient RL on language models, as small pure functions (CS336 assignment 5
names), shared by SFT, expert iteration, GRPO and DPO.

Shapes: B sequences, S positions (prompt + response, shifted by one: `labels[t]` is the token after
`input_ids[t]`), V vocabulary. `response_mask` is 1 exactly where `labels` is a response token.

Choices, stated once:
- `masked_mean` over an all-zero mask is NaN (0/0), on purpose: an empty response must not silently count as a
  zero loss. `masked_normalize` divides by a constant instead, so it is 0 there.
- Group-normalised advantages use the unbiased standard deviation (torch.std, n - 1), as GRPO's reference code.
- GRPO-Clip reports `clip_fraction`: the share of tokens where the clipped term is the smaller one (so the
  gradient is cut), over all positions given.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import Tensor

LossType = Literal["no_baseline", "reinforce_with_baseline", "grpo_clip"]


def tokenize_prompt_and_output(prompt_strs: list[str], output_strs: list[str], tokenizer,
                               pad_id: int | None = None) -> dict[str, Tensor]:
    """Tokenise each prompt and output separately, concatenate, right-pad to the longest, and shift:
    input_ids = ids[:, :-1], labels = ids[:, 1:], response_mask[t] = 1 iff labels[t] is an output token."""
    if len(prompt_strs) != len(output_strs):
        raise ValueError(f"{len(prompt_strs)} prompts but {len(output_strs)} outputs")
    pad = pad_id if pad_id is not None else getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eot_id", None) or 0
    seqs, masks = [], []
    for p, o in zip(prompt_strs, output_strs):
        pi, oi = tokenizer.encode(p), tokenizer.encode(o)
        seqs.append(list(pi) + list(oi))
        masks.append([0] * len(pi) + [1] * len(oi))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "response_mask": mask[:, 1:]}


def compute_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of the next-token distribution at each position: (..., V) -> (...). Stable via logsumexp."""
    logp = logits.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True)
    return -(logp.exp() * logp).sum(-1)


def get_response_log_probs(model: Callable[[Tensor], Any], input_ids: Tensor, labels: Tensor,
                           return_token_entropy: bool = False) -> dict[str, Tensor]:
    """log p(labels[t] | input_ids[:t+1]) for every position (B, S), optionally the entropy (B, S).
    Works with the project's TransformerLM (returns logits) and with models returning an object with `.logits`."""
    out = model(input_ids)
    logits = getattr(out, "logits", out).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    result = {"log_probs": logp}
    if return_token_entropy:
        result["token_entropy"] = compute_entropy(logits)
    return result


def masked_mean(tensor: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of the entries where mask is 1 (over `dim`, or all). An all-zero mask gives NaN (documented above)."""
    m = mask.to(tensor.dtype)
    if dim is None:
        return (tensor * m).sum() / m.sum()
    return (tensor * m).sum(dim) / m.sum(dim)


def masked_normalize(tensor: Tensor, mask: Tensor, normalize_constant: float, dim: int | None = None) -> Tensor:
    """Sum of the entries where mask is 1 (over `dim`, or all), divided by a constant."""
    if normalize_constant == 0:
        raise ValueError("normalize_constant must not be 0")
    m = mask.to(tensor.dtype)
    s = (tensor * m).sum() if dim is None else (tensor * m).sum(dim)
    return s / normalize_constant


def compute_group_normalized_rewards(reward_fn: Callable[[str, str], dict[str, float]], rollout_responses: list[str],
                                     repeated_ground_truths: list[str], group_size: int, advantage_eps: float,
                                     normalize_by_std: bool) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Rewards of consecutive groups of `group_size` responses (one prompt each); advantage = reward minus its
    group's mean, divided by the group's unbiased std + eps when `normalize_by_std`.
    Returns (advantages (n,), raw rewards (n,), metadata: mean/std/max/min reward, format and answer rates)."""
    n = len(rollout_responses)
    if group_size < 1 or n % group_size:
        raise ValueError(f"{n} responses do not split into groups of {group_size}")
    if len(repeated_ground_truths) != n:
        raise ValueError("one ground truth per response")
    scores = [reward_fn(r, g) for r, g in zip(rollout_responses, repeated_ground_truths)]
    raw = torch.tensor([s["reward"] for s in scores], dtype=torch.float32)
    groups = raw.view(-1, group_size)
    adv = groups - groups.mean(dim=1, keepdim=True)
    if normalize_by_std:
        adv = adv / (groups.std(dim=1, keepdim=True) + advantage_eps)
    meta = {"reward_mean": float(raw.mean()), "reward_std": float(raw.std()) if n > 1 else 0.0,
            "reward_max": float(raw.max()), "reward_min": float(raw.min()),
            "format_rate": sum(s.get("format_reward", 0.0) for s in scores) / n,
            "answer_rate": sum(s.get("answer_reward", 0.0) for s in scores) / n,
            "groups_all_same": float((groups.max(dim=1).values == groups.min(dim=1).values).float().mean())}
    return adv.reshape(-1), raw, meta


def compute_naive_policy_gradient_loss(raw_rewards_or_advantages: Tensor, policy_log_probs: Tensor) -> Tensor:
    """Per-token -A * log p: (B, 1) advantages broadcast over (B, S) log-probabilities."""
    return -raw_rewards_or_advantages * policy_log_probs


def compute_grpo_clip_loss(advantages: Tensor, policy_log_probs: Tensor, old_log_probs: Tensor,
                           cliprange: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token -min(r A, clip(r, 1-ε, 1+ε) A), r = exp(log p - log p_old). Metadata: `clipped` (B, S) bool, where
    the clipped term is strictly smaller, and `clip_fraction` (its mean)."""
    ratio = torch.exp(policy_log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - cliprange, 1 + cliprange) * advantages
    was_clipped = clipped < unclipped
    loss = -torch.minimum(unclipped, clipped)
    return loss, {"clipped": was_clipped, "clip_fraction": was_clipped.float().mean(), "ratio_mean": ratio.mean()}


def compute_policy_gradient_loss(policy_log_probs: Tensor, loss_type: LossType, raw_rewards: Tensor | None = None,
                                 advantages: Tensor | None = None, old_log_probs: Tensor | None = None,
                                 cliprange: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    if loss_type == "no_baseline":
        if raw_rewards is None:
            raise ValueError("no_baseline needs raw_rewards")
        return compute_naive_policy_gradient_loss(raw_rewards, policy_log_probs), {}
    if loss_type == "reinforce_with_baseline":
        if advantages is None:
            raise ValueError("reinforce_with_baseline needs advantages")
        return compute_naive_policy_gradient_loss(advantages, policy_log_probs), {}
    if loss_type == "grpo_clip":
        if advantages is None or old_log_probs is None or cliprange is None:
            raise ValueError("grpo_clip needs advantages, old_log_probs and cliprange")
        return compute_grpo_clip_loss(advantages, policy_log_probs, old_log_probs, cliprange)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def sft_microbatch_train_step(policy_log_probs: Tensor, response_mask: Tensor, gradient_accumulation_steps: int,
                              normalize_constant: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Negative log-likelihood of the response tokens: per sequence summed and divided by `normalize_constant`,
    averaged over the batch, divided by the accumulation steps; backward() is called. Returns (that loss, metadata)."""
    nll = -masked_normalize(policy_log_probs, response_mask, normalize_constant, dim=-1)
    loss = nll.mean() / gradient_accumulation_steps
    loss.backward()
    return loss.detach(), {"response_tokens": response_mask.sum().detach(), "nll_per_sequence": nll.detach().mean()}


def grpo_microbatch_train_step(policy_log_probs: Tensor, response_mask: Tensor, gradient_accumulation_steps: int,
                               loss_type: LossType, raw_rewards: Tensor | None = None, advantages: Tensor | None = None,
                               old_log_probs: Tensor | None = None, cliprange: float | None = None,
                               length_normalization: Literal["mean", "constant"] = "mean",
                               normalize_constant: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Policy-gradient loss per token, reduced per sequence (`mean`: over its response tokens, as GRPO; `constant`:
    summed and divided by `normalize_constant`, as Dr. GRPO, which removes the length bias), averaged over the
    batch and divided by the accumulation steps; backward() is called."""
    per_token, meta = compute_policy_gradient_loss(policy_log_probs, loss_type, raw_rewards, advantages,
                                                   old_log_probs, cliprange)
    if length_normalization == "mean":
        per_seq = masked_mean(per_token, response_mask, dim=-1)
    elif length_normalization == "constant":
        per_seq = masked_normalize(per_token, response_mask, normalize_constant or response_mask.shape[-1], dim=-1)
    else:
        raise ValueError(f"length_normalization {length_normalization!r}: mean or constant")
    loss = per_seq.mean() / gradient_accumulation_steps
    loss.backward()
    if "clipped" in meta:  # over response tokens only
        meta = {**meta, "clip_fraction": masked_mean(meta["clipped"].float(), response_mask).detach()}
    return loss.detach(), meta


def sequence_log_probs(model: Callable[[Tensor], Any], input_ids: Tensor, labels: Tensor, response_mask: Tensor) -> Tensor:
    """Sum of the response tokens' log-probabilities per sequence: log π(response | prompt), shape (B,)."""
    logp = get_response_log_probs(model, input_ids, labels)["log_probs"]
    return (logp * response_mask.to(logp.dtype)).sum(-1)


def compute_dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
                     beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO (Rafailov et al. 2023): -log σ(β[(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))]), mean over
    pairs. Metadata: the implicit reward margin and the share of pairs where it is positive (preference accuracy)."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    return loss, {"reward_margin": margin.detach().mean(), "preference_accuracy": (margin.detach() > 0).float().mean()}


def per_instance_dpo_loss(lm, lm_ref, tokenizer, beta: float, prompt: str, response_chosen: str,
                          response_rejected: str) -> Tensor:
    """The DPO loss of one (prompt, chosen, rejected) triple; the reference model gets no gradient."""
    batch = tokenize_prompt_and_output([prompt, prompt], [response_chosen, response_rejected], tokenizer)
    device = next(lm.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    pol = sequence_log_probs(lm, batch["input_ids"], batch["labels"], batch["response_mask"])
    with torch.no_grad():
        ref = sequence_log_probs(lm_ref, batch["input_ids"], batch["labels"], batch["response_mask"])
    return compute_dpo_loss(pol[:1], pol[1:], ref[:1], ref[1:], beta)[0]
