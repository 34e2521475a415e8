"""Shared fixtures: repository paths, the shared real-data folder, one local Ray per session."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = Path(os.environ.get("SIFT_SHARED_DATA", REPO.parent / "shared" / "data"))


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on loopback (all held open together while choosing, so none repeats)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real WARCs, corpora, models); tests that need it skip where it is absent."""
    if not (SHARED_DATA / "warc").is_dir():
        pytest.skip(f"shared real-data folder not found at {SHARED_DATA} (set SIFT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One small local Ray for all pipeline tests (starting Ray costs ~3 s)."""
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
