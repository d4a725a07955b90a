#!/usr/bin/env bash
# Real photos through the whole chain (docs/results.md): Imagenette (ten ILSVRC-2012 classes) →
# prepare → pca-stats → verify → three CPU training runs side by side → the curves.
#
#   scripts/imagenette.sh SOURCE WORK [EPOCHS]
#
# SOURCE is the fetched copy of github.com/thunderInfy/imagenette: its bare git directory (then
# `git archive HEAD | tar x` unpacks it into WORK/imagenette) or the unpacked tree. Its train/<wnid>/
# and val/<wnid>/ folders already are the ILSVRC layout `prepare` reads, so nothing is renamed.
# The photos were resized to 224×224 without keeping their aspect ratio; prepare upsamples them to 256.
#
# The three runs share one batch, lr and seed, and differ only in --init and --normalize:
#   kaiming-std   the demo's fast settings (He init, unit-std inputs)
#   caffe-mean    BVLC Caffe's init on the paper's inputs
#   paper-mean    the paper's defaults (§5's init, mean subtraction)
# Each saves every 10 minutes, so a run stopped with SIGTERM continues exactly with
#   alexnet-train --data WORK/shards --resume WORK/runs/RUN
# (the run's recorded -j 1 is also torch's thread count, part of the CPU's arithmetic, and the resume
# restores it; OMP_NUM_THREADS=1 keeps the other libraries to one thread as well).
set -euo pipefail
source=${1:?usage: scripts/imagenette.sh SOURCE WORK [EPOCHS]}
work=${2:?usage: scripts/imagenette.sh SOURCE WORK [EPOCHS]}
epochs=${3:-8}
say() { printf '\n== %s\n' "$*"; }
mkdir -p "$work"

tree="$work/imagenette"
if [ -d "$source/train" ]; then
  tree=$source
elif [ ! -d "$tree/train" ]; then
  say "unpacking $source into $tree"
  mkdir -p "$tree"
  git --git-dir="$source" archive HEAD | tar -x -C "$tree"
fi

say "prepare, pca-stats, verify (timed)"
/usr/bin/time -f 'prepare: %e s wall, %U s user, %M KB peak' \
  alexnet-tools prepare --imagenet-dir "$tree" --out "$work/shards"
/usr/bin/time -f 'pca-stats: %e s wall, %U s user, %M KB peak' alexnet-tools pca-stats --data "$work/shards"
/usr/bin/time -f 'verify: %e s wall, %U s user, %M KB peak' alexnet-tools verify --data "$work/shards"

# One torch thread and one loader thread per run: the three runs share the machine's cores.
common=(--data "$work/shards" --loader dali --device cpu -b 128 --lr 0.01 --seed 0 --epochs "$epochs"
  --log-every 5 --save-every-minutes 10 -j 1)
declare -A settings=([kaiming-std]="--init kaiming --normalize std" [caffe-mean]="--init caffe --normalize mean"
  [paper-mean]="--init paper --normalize mean")
say "training ${!settings[*]} side by side, $epochs epochs each, into $work/runs"
for run in "${!settings[@]}"; do
  if [ -f "$work/runs/$run/last.pt" ]; then
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 alexnet-train --data "$work/shards" --resume "$work/runs/$run" >"$work/$run.log" 2>&1 &
  else
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 alexnet-train "${common[@]}" ${settings[$run]} --run-dir "$work/runs/$run" \
      >"$work/$run.log" 2>&1 &
  fi
done
wait

say "curves → $work/imagenette-curves.png"
python "$(dirname "$0")/plot_losses.py" --out "$work/imagenette-curves.png" --chance 10 --smooth 5 \
  "$work/runs/kaiming-std=kaiming init, --normalize std" "$work/runs/caffe-mean=caffe init, --normalize mean" \
  "$work/runs/paper-mean=paper init, --normalize mean"
