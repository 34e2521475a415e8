#!/usr/bin/env bash
# Install, curate the bundled real sample on an embedded local Ray, then dedup the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
rm -rf runs/demo runs/demo-dedup
extra=()
# the full UT1 adult domain list (4.5 M domains, 18 MB) is not shipped; use the shared copy if present
ut1=../shared/data/blocklists/ut1-adult-blocklist.tar.gz
[ -f "$ut1" ] && extra+=(--set "blocklist.domains_path=$ut1")
.venv/bin/sift curate --config configs/demo.yaml "${extra[@]}" "$@"
echo
# then exact + verified near-duplicate + line dedup of what was kept
exec .venv/bin/sift dedup --input runs/demo --output runs/demo-dedup
