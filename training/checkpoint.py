"""Checkpoints: model, optimizer, iteration and whatever else resuming needs, written atomically.

    save_checkpoint(model, optimizer, iteration, out, **extra)   # out: path or binary file object
    load_checkpoint(src, model, optimizer) -> iteration

`extra` holds the config, the data sampler's position and the RNG states, so that `--resume` continues
bit for bit; `load_checkpoint(..., return_extra=True)` gives them back.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import IO, Any

import numpy as np
import torch


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, iteration: int,
                    out: str | os.PathLike | IO[bytes], **extra: Any) -> None:
    """`optimizer` None: its state lives elsewhere (ZeRO-1 writes one shard per rank next to the checkpoint)."""
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer is not None else None,
               "iteration": iteration,
               "rng": rng_states(), **extra}
    if isinstance(out, (str, os.PathLike)):
        path = os.fspath(out)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".pt")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)  # a crash mid-write never leaves a half checkpoint under the final name
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        torch.save(payload, out)


def load_checkpoint(src: str | os.PathLike | IO[bytes], model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    *, restore_rng: bool = True, return_extra: bool = False):
    payload = torch.load(src, map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    if optimizer is not None:
        if payload["optimizer"] is None:
            raise ValueError("the checkpoint holds no optimizer state (a ZeRO-1 run keeps it in optimizer-rank*.pt)")
        optimizer.load_state_dict(payload["optimizer"])
    if restore_rng and "rng" in payload:
        set_rng_states(payload["rng"])
    if return_extra:
        return payload["iteration"], {k: v for k, v in payload.items() if k not in ("model", "optimizer", "iteration")}
    return payload["iteration"]
