#!/usr/bin/env bash
# Install, then curate the bundled real sample on an embedded local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
rm -rf runs/demo
exec .venv/bin/sift curate --config configs/demo.yaml "$@"
