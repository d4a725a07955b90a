#!/usr/bin/env bash
# `make bench-gpu`: the figures only a CUDA machine can give (none of this repository's machines has one).
#   1. a synthetic ILSVRC-shaped set of 30,000 training images (synth, prepare, pca-stats on every core);
#   2. the CUDA-marked tests;
#   3. `alexnet-bench train`: the resident-batch ceiling and each loader through the real training loop,
#      at batch 128, 256 and 512, bf16 autocast and channels_last (the trainer's CUDA defaults), with and
#      without --compile;
#   4. `alexnet-bench loaders --device cuda`, and DALI alone with hw_decoder_load 0, 0.65 and 1.0.
# Every figure goes to $OUT when it is set (one JSON file per run and bench-gpu.md, a markdown table of
# all of them); otherwise to a temporary folder whose name is printed. BENCH_DATA reuses a prepared set.
set -euo pipefail
PY=${PY:-.venv/bin/python}
BIN=$(dirname "$PY")

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "bench-gpu: torch sees no CUDA device; run it on a machine with a GPU (it measures nothing on the CPU)" >&2
  exit 1
fi

work=${BENCH_DIR:-$(mktemp -d -t alexnet-bench-gpu.XXXXXX)}
out=${OUT:-$work/results}
data=${BENCH_DATA:-$work/shards}
mkdir -p "$out"
say() { printf '\n== %s\n' "$*"; }

if [ ! -f "$data/pca.json" ]; then
  say "synthetic set: 100 classes × 300 training images (30,000) and 10 validation images each, in $work"
  "$BIN/alexnet-tools" synth --out "$work/ilsvrc" --classes 100 --train-per-class 300 --val-per-class 10
  "$BIN/alexnet-tools" prepare --imagenet-dir "$work/ilsvrc" --out "$data"
  "$BIN/alexnet-tools" pca-stats --data "$data"
fi
loaders=dali,torch
if "$PY" -c 'import ffcv' 2>/dev/null; then
  [ -f "$data/ffcv/train.beton" ] || "$BIN/alexnet-tools" export-ffcv --data "$data"
  loaders=dali,torch,ffcv
fi

say "CUDA-marked tests"
"$PY" -m pytest -m cuda -q -p no:cacheprovider

for batch in 128 256 512; do
  for compile in "" --compile; do
    name="train-b$batch${compile:+-compile}"
    say "alexnet-bench train: batch $batch ${compile:-without --compile}"
    "$BIN/alexnet-bench" train --data "$data" --device cuda -b "$batch" --steps 50 --warmup 10 \
      --loader "$loaders" $compile --json "$out/$name.json"
  done
done

say "alexnet-bench loaders --device cuda"
"$BIN/alexnet-bench" loaders --data "$data" --device cuda --loaders "$loaders" --batch-size 256 --batches 50 \
  --json "$out/loaders.json" --plot "$out/loaders.png"

say "DALI with hw_decoder_load 0, 0.65 and 1.0 (the share of images sent to the hardware JPEG decoder)"
"$PY" - "$data" "$out/dali-hw-decoder-load.json" <<'EOF'
import json, sys
from pathlib import Path

import torch

from alexnet.pipeline.bench.loaders import measure_loader

data, path = Path(sys.argv[1]), Path(sys.argv[2])
rows = {}
for load in (0.0, 0.65, 1.0):
    m = measure_loader("dali", data, torch.device("cuda"), 256, 50, hw_decoder_load=load)
    rows[str(load)] = m.as_dict()
    print(f"hw_decoder_load {load:<5} {m.images_per_s:>10.0f} images/s")
path.write_text(json.dumps({"batch_size": 256, "batches": 50, "hw_decoder_load": rows}, indent=2) + "\n")
EOF

"$PY" - "$out" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
gpu = __import__("torch").cuda.get_device_name(0)
lines = [f"# bench-gpu on {gpu}", "", "## alexnet-bench train (bf16, channels_last)", "",
         "| batch | compile | row | images/s | data-wait | × ceiling | verdict |", "| ---: | --- | --- | ---: | ---: | ---: | --- |"]
for path in sorted(out.glob("train-b*.json"), key=lambda p: (json.loads(p.read_text())["batch_size"], p.name)):
    doc = json.loads(path.read_text())
    c = doc["ceiling"]
    lines.append(f"| {doc['batch_size']} | {doc['compile']} | ceiling | {c['images_per_s']:.0f} | {c['data_wait']:.1%} | 1.00 | |")
    for kind, r in doc["loaders"].items():
        lines.append(f"| {doc['batch_size']} | {doc['compile']} | {kind} | {r['images_per_s']:.0f} | {r['data_wait']:.1%} | {r['vs_ceiling']:.2f} | {r['verdict']} |")
sweep = json.loads((out / "dali-hw-decoder-load.json").read_text())
lines += ["", "## DALI hw_decoder_load (batch 256)", "", "| hw_decoder_load | images/s |", "| ---: | ---: |"]
lines += [f"| {load} | {m['images_per_s']:.0f} |" for load, m in sweep["hw_decoder_load"].items()]
lines += ["", "## alexnet-bench loaders --device cuda", "", "```json", (out / "loaders.json").read_text().strip(), "```", ""]
(out / "bench-gpu.md").write_text("\n".join(lines))
print(f"→ {out}/bench-gpu.md")
EOF
echo "bench-gpu: every figure is in $out"
