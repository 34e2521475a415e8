#!/usr/bin/env bash
# Install, then run the main job on the bundled real sample with an embedded local Ray: curate, dedup, tokenize
# into Arrow shards (with the statistics printed and an HTML report), and train a tiny model on the shards for a
# minute of CPU (configs/run-demo.yaml); then sample from the model, and say how to open the run in `sift serve`.
# A rerun skips the stages already finished.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
extra=()
# the full UT1 adult domain list (4.5 M domains, 18 MB) is not shipped; use the shared copy if present
ut1=../shared/data/blocklists/ut1-adult-blocklist.tar.gz
[ -f "$ut1" ] && extra+=(--set "curate.blocklist.domains_path=$ut1")
.venv/bin/sift run --config configs/run-demo.yaml "${extra[@]}" "$@"
echo
.venv/bin/sift generate --checkpoint runs/demo/model/checkpoint.pt --prompt "The" --max-new-tokens 20
echo
echo "Look at the run in your browser (live funnel, why each page was removed, shards decoded back to text):"
echo "  .venv/bin/sift serve --runs runs     then open http://127.0.0.1:8470/runs/demo"
