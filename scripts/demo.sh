#!/usr/bin/env bash
# Install, curate the bundled real sample on an embedded local Ray, dedup it, tokenize it into
# Arrow shards, print the run statistics (and write an HTML report), then train a tiny model on the
# shards for a minute of CPU and sample from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
rm -rf runs/demo runs/demo-dedup runs/demo-tokens runs/demo-model
extra=()
# the full UT1 adult domain list (4.5 M domains, 18 MB) is not shipped; use the shared copy if present
ut1=../shared/data/blocklists/ut1-adult-blocklist.tar.gz
[ -f "$ut1" ] && extra+=(--set "blocklist.domains_path=$ut1")
.venv/bin/sift curate --config configs/demo.yaml "${extra[@]}" "$@"
echo
# then exact + verified near-duplicate + line dedup of what was kept
.venv/bin/sift dedup --input runs/demo --output runs/demo-dedup
echo
# GPT-2 BPE ids in uint16 Arrow shards (small shards here; the default is ~100 M tokens)
.venv/bin/sift tokenize --input runs/demo-dedup --output runs/demo-tokens --config configs/demo-tokenize.yaml
echo
# the whole path in one view: funnel, languages, quality, lengths, domains, dedup, tokens
.venv/bin/sift stats runs/demo-tokens
echo
# a tiny TransformerLM on those shards (CPU, about a minute; on a GPU use a bigger --preset and more --steps)
.venv/bin/sift pretrain --shards runs/demo-tokens --output runs/demo-model --preset tiny --steps 150 \
  --set batch_size=8 --set eval_every=50 --set "model={attention: reference}"
exec .venv/bin/sift generate --checkpoint runs/demo-model/checkpoint.pt --prompt "The" --max-new-tokens 20
