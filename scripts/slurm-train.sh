#!/usr/bin/env bash
# An example SLURM job for a long run that survives preemption and time limits (sbatch scripts/slurm-train.sh).
#
# SLURM sends the batch shell SIGUSR1 three minutes before the end (--signal=B:USR1@180). The trap
# passes SIGTERM on to the training processes, which finish their step, write last.pt and exit 0
# (under DDP every rank stops at the same step, agreed at a log step: keep --log-every small enough
# that one log interval takes well under three minutes), then requeues the job. The requeued job
# finds last.pt and continues it with --resume, exactly where it stopped. --save-every-minutes
# bounds what a hard kill (a node failure) can lose.
#SBATCH --job-name=alexnet
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=2
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@180
#SBATCH --output=%x-%j.out
set -euo pipefail
DATA=${DATA:-/data/alexnet-shards}
RUN=${RUN:-runs/$SLURM_JOB_NAME}
GPUS=${GPUS:-2}

if [ -f "$RUN/last.pt" ]; then where=(--resume "$RUN"); else where=(--run-dir "$RUN"); fi
srun torchrun --nproc-per-node "$GPUS" -m alexnet.tools.train --data "$DATA" --loader dali \
  --save-every-minutes 30 "${where[@]}" &
pid=$!
requeue() {
  kill -TERM "$pid"  # srun passes it on to torchrun, torchrun to every rank
  wait "$pid" || true
  scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR1
wait "$pid"
