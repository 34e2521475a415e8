"""What produced an output: resolved config, git SHA, package versions, host, time."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

PACKAGES = ("sift", "ray", "pyarrow", "resiliparse", "fastwarc", "warcio", "fasttext-numpy2", "datasketch", "torch", "numpy")


def git_sha() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_metadata(config: dict[str, Any], output_hash: str) -> dict[str, Any]:
    return {
        "config": config,
        "output_hash": output_hash,
        "git_sha": git_sha(),
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "host": platform.node(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
