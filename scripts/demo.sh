#!/usr/bin/env bash
# The main job end to end on the embedded default: a synthetic ILSVRC-shaped tree.
# Runs the whole chain as far as it exists: synth → prepare → pca-stats → verify.
set -euo pipefail
demo=${1:-demo-data}
say() { printf '\n== %s\n' "$*"; }

if [ ! -d "$demo/ilsvrc" ]; then
  say "alexnet-tools synth: a synthetic ILSVRC-2012-shaped tree in $demo/ilsvrc"
  alexnet-tools synth --out "$demo/ilsvrc"
else
  say "reusing $demo/ilsvrc (make clean-demo to start over)"
fi

say "alexnet-tools prepare: 256×256 JPEG shards, DALI indexes and a manifest in $demo/shards"
alexnet-tools prepare --imagenet-dir "$demo/ilsvrc" --out "$demo/shards" --shard-size 256

say "alexnet-tools pca-stats: RGB mean, std and eigenbasis for PCA lighting"
alexnet-tools pca-stats --data "$demo/shards"

say "alexnet-tools verify: every shard, index and sample against the manifest"
alexnet-tools verify --data "$demo/shards"

say "done: shards, manifest.json and pca.json are in $demo/shards"
