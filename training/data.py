"""Batches from tokenized shards: memory-mapped, uniform random windows, deterministic and resumable.

`TokenDataset` holds one or more 1-D token arrays: the Arrow IPC shards of a `sift tokenize` run (mapped zero
copy through `read_token_shard`), or a flat `np.memmap`/array for plain files. `get_batch` draws `batch_size`
windows of `context_length + 1` tokens: a start position uniform over all valid starts of all shards (so shards
are weighted by their size and no window crosses a shard boundary), inputs = window[:-1], targets = window[1:].

`BatchSampler` wraps it with its own numpy Generator: the same seed gives the same batches, and
`state_dict()` / `load_state_dict()` resume the stream exactly where it stopped (checkpointed with the model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.tokenize import TOKENS_DIR, read_token_shard


class TokenDataset:
    def __init__(self, arrays: list[np.ndarray], names: list[str] | None = None):
        self.arrays = [a for a in arrays if len(a)]
        self.names = names or [f"array-{i}" for i in range(len(arrays))]
        if not self.arrays:
            raise ValueError("no tokens: every shard is empty")
        self.sizes = np.array([len(a) for a in self.arrays], dtype=np.int64)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, split: str = "train") -> "TokenDataset":
        """The `split` shards of a `sift tokenize` output folder, as listed in its manifest."""
        root = Path(run_dir) / TOKENS_DIR
        manifest_path = root / "manifest.json"
        if not manifest_path.exists():
            raise ValueError(f"{run_dir}: no tokens/manifest.json (is it a finished `sift tokenize` run?)")
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["shards"].get(split) or []
        if not entries:
            raise ValueError(f"{run_dir}: the {split!r} split has no shards")
        ds = cls([read_token_shard(root / e["file"]) for e in entries], [e["file"] for e in entries])
        ds.vocab_size = manifest["tokenizer"]["vocab_size"]
        ds.eot_id = manifest["tokenizer"]["eot_id"]
        return ds

    @classmethod
    def from_file(cls, path: str | os.PathLike, dtype: str = "uint16") -> "TokenDataset":
        """A flat binary file of token ids (np.memmap), e.g. from `np.ndarray.tofile`."""
        return cls([np.memmap(path, dtype=np.dtype(dtype), mode="r")], [str(path)])

    @property
    def num_tokens(self) -> int:
        return int(self.sizes.sum())

    def windows(self, context_length: int) -> np.ndarray:
        """Number of valid window starts per array."""
        return np.maximum(self.sizes - context_length, 0)


def get_batch(dataset: TokenDataset | np.ndarray, batch_size: int, context_length: int, device: str | torch.device = "cpu",
              rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (batch_size, context_length) int64, next-token targets, starts uniform."""
    ds = dataset if isinstance(dataset, TokenDataset) else TokenDataset([np.asarray(dataset)])
    rng = rng if rng is not None else np.random.default_rng()
    per = ds.windows(context_length)
    total = int(per.sum())
    if total <= 0:
        raise ValueError(f"no shard holds more than context_length={context_length} tokens")
    flat = rng.integers(0, total, size=batch_size)  # uniform over all windows of all shards
    bounds = np.cumsum(per)
    which = np.searchsorted(bounds, flat, side="right")
    starts = flat - (bounds[which] - per[which])
    window = np.stack([ds.arrays[w][s : s + context_length + 1] for w, s in zip(which, starts)]).astype(np.int64)
    x = torch.from_numpy(window[:, :-1])
    y = torch.from_numpy(window[:, 1:])
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


class BatchSampler:
    """Deterministic, resumable stream of training batches."""

    def __init__(self, dataset: TokenDataset, batch_size: int, context_length: int, seed: int = 0,
                 device: str | torch.device = "cpu"):
        self.dataset, self.batch_size, self.context_length, self.device = dataset, batch_size, context_length, device
        self.rng = np.random.default_rng(seed)
        self.batches = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.batches += 1
        return get_batch(self.dataset, self.batch_size, self.context_length, self.device, self.rng)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.batches = state["batches"]


def validation_batches(dataset: TokenDataset, batch_size: int, context_length: int, max_batches: int | None = None,
                       device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping windows over the validation shards, in order (the same every time)."""
    xs, n = [], 0
    for arr in dataset.arrays:
        for s in range(0, len(arr) - context_length, context_length):
            xs.append(np.asarray(arr[s : s + context_length + 1], dtype=np.int64))
            if len(xs) == batch_size:
                w = torch.from_numpy(np.stack(xs))
                yield w[:, :-1].to(device), w[:, 1:].to(device)
                xs, n = [], n + 1
                if max_batches is not None and n >= max_batches:
                    return
    if xs:
        w = torch.from_numpy(np.stack(xs))
        yield w[:, :-1].to(device), w[:, 1:].to(device)
