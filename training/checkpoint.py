"""Checkpoints: model, optimizer, iteration and whatever else resuming needs, written atomically.

    save_checkpoint(model, optimizer, iteration, out, **extra)   # out: path or binary file object
    load_checkpoint(src, model, optimizer) -> iteration

`extra` holds the config, the data sampler's position and the RNG states, so that `--resume` continues
bit for bit; `load_checkpoint(..., return_extra=True)` gives them back.
"""

from __future__ import annotations

import os
import pickle
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


def _safe_globals() -> list:
    """The only non-tensor classes a sift checkpoint holds: numpy arrays (numpy's RNG state)."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_payload(src: str | os.PathLike | IO[bytes], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file without unpickling code: `weights_only=True` (tensors, containers, numbers, strings
    and numpy arrays only). A file that needs anything else is refused, never executed."""
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(src, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL " not in str(exc):  # refused before naming any class: not a pickle that torch.save wrote (e.g. JSON)
            raise ValueError(f"{src} is not a sift checkpoint (not a file written by torch.save); "
                             f"refusing to load it") from exc
        raise ValueError(f"{src}: not a plain sift checkpoint (it asks to unpickle "
                         f"{str(exc).split('GLOBAL ')[-1].split(' ')[0]}); refusing to load it") from exc


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
    payload = load_payload(src)
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
