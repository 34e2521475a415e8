"""Run a bytes -> bytes function in a child process, one item at a time, each under a time limit.

Some inputs make a C extension spin for minutes (HTML nested thousands of levels deep, repeated
many times over, defeats main-content heuristics that are quadratic in depth) or allocate without
bound. Python cannot interrupt a C call, so the only safe limit is a separate process:

    box = Sandbox("operators.extract:sandboxed_extractor", {"main_content": True}, time_limit_s=10)
    for status, payload in box([html1, html2]):   # ("ok", bytes) | ("rejected", reason) | ("timeout"|"crashed"|..., b"")
        ...
    box.close()

The child is a fresh `python -m operators.sandbox` (no fork of the caller, which may be a
multi-threaded Ray worker), started on first use and kept for the next items. An item that runs
past its limit gets the child killed and restarted; the items after it go to the new child. The
child's address space is capped with RLIMIT_AS, so an item that allocates without bound fails
with `out_of_memory` instead of taking the worker down. The child exits when its parent does
(stdin closes; also PR_SET_PDEATHSIG on Linux).

Frames on both pipes are a 4-byte big-endian length then the payload; replies start with a status
byte. No pickle crosses the pipe: the child never deserialises anything but bytes and one JSON
config. Where the OS has memfd (Linux), items travel through a shared memory file instead of the
pipe (one copy instead of two through the kernel: extraction in the sandbox then costs about 5 %
instead of 15 % of in-process extraction; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import importlib
import json
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

STATUSES = ("ok", "rejected", "error", "out_of_memory")
"""Status bytes the child can send (index = byte); the parent adds `timeout` and `crashed`."""

_LEN = struct.Struct(">I")
_ROOT = str(Path(__file__).resolve().parent.parent)


class SandboxRejected(Exception):
    """Raised by a sandboxed function to refuse an item with a reason (sent back as `rejected`)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Sandbox:
    """Calls `factory(config)`'s returned function on items in a child process (see module docstring).

    `factory` is "module:function"; the function takes the JSON config and returns the item
    function (bytes -> bytes, may raise SandboxRejected or anything with a `reason` attribute).
    """

    def __init__(self, factory: str, config: dict[str, Any], time_limit_s: float = 10.0, memory_limit_mb: int = 2048):
        if time_limit_s <= 0:
            raise ValueError(f"time_limit_s must be > 0, got {time_limit_s}")
        self.factory, self.config = factory, config
        self.time_limit_s, self.memory_limit_mb = time_limit_s, memory_limit_mb
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._dead_cpu = 0.0  # CPU seconds of children already replaced
        # items go through a shared memory file where the OS has one (the pipe then carries only their length)
        self._shm_fd = os.memfd_create("sift-sandbox", 0) if hasattr(os, "memfd_create") else -1
        self._shm: mmap.mmap | None = None

    # -- child lifecycle ---------------------------------------------------------------------
    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p),
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "operators.sandbox", self.factory, str(self.memory_limit_mb), str(self._shm_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_ROOT, env=env,
            pass_fds=(self._shm_fd,) if self._shm_fd >= 0 else (),
        )
        _write_frame(self.proc.stdin, json.dumps(self.config).encode())
        # the child answers the config with one "ok" frame once it is ready (imports done)
        status, payload = self._read_reply(time.monotonic() + max(60.0, self.time_limit_s))
        if status != "ok":
            self._kill()
            raise RuntimeError(f"sandbox child for {self.factory} failed to start: {status} {payload[:500]!r}")

    def _child_cpu(self) -> float:
        if self.proc is None:
            return 0.0
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, IndexError, ValueError):  # not Linux, or already gone
            return 0.0

    def cpu_seconds(self) -> float:
        """CPU time spent in child processes so far (Linux; 0 elsewhere): the work done here is not in the
        caller's own process_time()."""
        return self._dead_cpu + self._child_cpu()

    def _kill(self) -> None:
        if self.proc is not None:
            self._dead_cpu += self._child_cpu()
            self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except OSError:  # unflushed bytes to a dead child
                    pass
            self.proc = None

    def close(self) -> None:
        """Stop the child (it also stops by itself when this process exits)."""
        self._kill()
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        if self._shm_fd >= 0:
            os.close(self._shm_fd)
            self._shm_fd = -1

    def _send(self, item: bytes) -> None:
        if self._shm_fd < 0:
            _write_frame(self.proc.stdin, b"P" + item)
            return
        if self._shm is None or len(self._shm) < len(item):
            size = max(len(item), 2 * len(self._shm) if self._shm is not None else 0, 1 << 20)
            if self._shm is not None:
                self._shm.close()
            os.ftruncate(self._shm_fd, size)
            self._shm = mmap.mmap(self._shm_fd, size)
        self._shm[: len(item)] = item
        _write_frame(self.proc.stdin, b"S" + _LEN.pack(len(item)))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- one item ---------------------------------------------------------------------------
    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _read_reply(self, deadline: float) -> tuple[str, bytes]:
        (n,) = _LEN.unpack(self._read_exact(4, deadline))
        frame = self._read_exact(n, deadline)
        return STATUSES[frame[0]], frame[1:]

    def run_one(self, item: bytes) -> tuple[str, bytes]:
        """(status, payload) for one item: ok / rejected (payload: reason) / error (payload:
        exception type) / out_of_memory / timeout / crashed."""
        for attempt in (0, 1):
            if self.proc is None:
                self._start()
            try:
                self._send(item)
            except (BrokenPipeError, OSError):  # the child died between items: start another, once
                self._kill()
                self.restarts += 1
                if attempt:
                    return "crashed", b""
                continue
            try:
                return self._read_reply(time.monotonic() + self.time_limit_s)
            except TimeoutError:
                status = "timeout"
            except EOFError:
                status = "crashed"
            self._kill()
            self.restarts += 1
            return status, b""
        raise AssertionError("unreachable")

    def __call__(self, items: list[bytes]) -> list[tuple[str, bytes]]:
        return [self.run_one(item) for item in items]


def _write_frame(pipe, payload: bytes) -> None:
    pipe.write(_LEN.pack(len(payload)))  # buffered pipes: write() writes everything
    pipe.write(payload)
    pipe.flush()


def _reply(out, status: str, payload: bytes = b"") -> None:
    _write_frame(out, bytes([STATUSES.index(status)]) + payload)


def _read_frame(inp) -> bytes | None:
    head = inp.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    data = inp.read(n)
    return data if len(data) == n else None


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class _SharedItems:
    """The child's side of the shared memory file: an item frame says where its bytes are."""

    def __init__(self, fd: int):
        self.fd, self.map = fd, None

    def item(self, frame: bytes) -> bytes:
        if frame[:1] == b"P":
            return frame[1:]
        (n,) = _LEN.unpack(frame[1:5])
        if self.map is None or len(self.map) < n:
            if self.map is not None:
                self.map.close()
            self.map = mmap.mmap(self.fd, os.fstat(self.fd).st_size, prot=mmap.PROT_READ)
        return self.map[:n]


def _child(factory: str, memory_limit_mb: int, shm_fd: int) -> None:
    _die_with_parent()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the frames
    config = _read_frame(inp)
    if config is None:
        return
    try:
        module, name = factory.split(":")
        fn: Callable[[bytes], bytes] = getattr(importlib.import_module(module), name)(json.loads(config))
        if memory_limit_mb > 0:
            import resource

            cap = memory_limit_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        _reply(out, "error", f"{type(exc).__name__}: {exc}".encode())
        return
    _reply(out, "ok")
    shared = _SharedItems(shm_fd)
    while (frame := _read_frame(inp)) is not None:
        try:
            result = fn(shared.item(frame))
        except MemoryError:
            _reply(out, "out_of_memory")
        except Exception as exc:  # noqa: BLE001 - one bad item, counted by the parent
            reason = getattr(exc, "reason", None)
            if isinstance(reason, str):
                _reply(out, "rejected", reason.encode())
            else:
                _reply(out, "error", type(exc).__name__.encode())
        else:
            _reply(out, "ok", result)


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
