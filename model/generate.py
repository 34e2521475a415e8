"""Sampling from a TransformerLM with a KV cache: batched, temperature, nucleus (top-p), stop at end-of-text.

    generate(model, prompt_ids, max_new_tokens=64, temperature=0.8, top_p=0.95, eos_id=50256)

`prompt_ids` is a (batch, prompt_len) tensor (prompts of equal length) or a list of id lists of any lengths
(grouped by length and run batch by batch). The prompt is encoded once (prefill), then each step feeds only
the new token through the model, reading the cached keys and values of everything before it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from model.layers import KVCache, TransformerLM, softmax


def sample_next(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None) -> Tensor:
    """Next token per row of `logits` (batch, vocab): argmax at temperature 0, else softmax(logits / T) restricted
    to the smallest set of tokens whose probability reaches top_p."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the tokens ranked above each one
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)  # the top token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs / probs.sum(dim=-1, keepdim=True), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: TransformerLM, prompt_ids: Tensor | list[list[int]], max_new_tokens: int = 64,
             temperature: float = 1.0, top_p: float = 1.0, eos_id: int | None = None,
             generator: torch.Generator | None = None, use_cache: bool = True,
             stop: "Callable[[list[int]], bool] | None" = None) -> list[list[int]]:
    """The generated continuation of each prompt (without the prompt; ends at and includes `eos_id` if sampled).

    Generation stops for a sequence at `eos_id`, after `max_new_tokens`, at the model's context length, or when
    `stop(tokens generated so far)` is true (e.g. the decoded text ends with "</answer>"); a stopped sequence
    ends with the token that satisfied `stop`."""
    if isinstance(prompt_ids, list):
        out: list[list[int] | None] = [None] * len(prompt_ids)
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(prompt_ids):
            if not p:
                raise ValueError("empty prompt: give at least one token (e.g. the end-of-text id)")
            by_len.setdefault(len(p), []).append(i)
        device = model.lm_head.weight.device
        for idx in by_len.values():
            batch = torch.tensor([prompt_ids[i] for i in idx], dtype=torch.long, device=device)
            for i, seq in zip(idx, generate(model, batch, max_new_tokens, temperature, top_p, eos_id, generator, use_cache,
                                            stop)):
                out[i] = seq
        return out  # type: ignore[return-value]
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
        raise ValueError(f"prompt_ids must be (batch, prompt_len >= 1), got {tuple(prompt_ids.shape)}")
    was_training = model.training
    model.eval()
    batch, plen = prompt_ids.shape
    steps = max(0, min(max_new_tokens, model.context_length - plen))
    cache = KVCache(model, (batch,), max_len=plen + steps) if use_cache else None
    tokens = prompt_ids
    logits = model(prompt_ids, cache=cache)[:, -1, :]  # prefill
    done = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
    stopped_at = [None] * batch  # per row: the length at which `stop` fired
    generated: list[Tensor] = []
    for step in range(steps):
        nxt = sample_next(logits, temperature, top_p, generator)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
        generated.append(nxt)
        if eos_id is not None:
            done |= nxt == eos_id
        if stop is not None:
            so_far = torch.stack(generated, dim=1).tolist()
            for r in range(batch):
                if stopped_at[r] is None and not bool(done[r]) and stop(so_far[r]):
                    stopped_at[r] = step + 1
                    done[r] = True
        if (eos_id is not None or stop is not None) and bool(done.all()):
            break
        if step + 1 == steps:
            break
        if cache is not None:
            logits = model(nxt[:, None], cache=cache)[:, -1, :]
        else:
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            logits = model(tokens)[:, -1, :]
    model.train(was_training)
    result = torch.stack(generated, dim=1).tolist() if generated else [[] for _ in range(batch)]
    result = [seq[:n] if n is not None else seq for seq, n in zip(result, stopped_at)]
    if eos_id is not None:  # cut each sequence after its first end-of-text
        result = [seq[: seq.index(eos_id) + 1] if eos_id in seq else seq for seq in result]
    return result
