#!/bin/bash
# A sluice pipeline as a chain of dependent Slurm job arrays: one array per phase of the run,
# each starting when the previous one ended well (`--dependency=afterok`), so no task holds a
# node while it waits for the others, and an array may have fewer slots than tasks.
#
#   deploy/slurm/sluice-phases.sh pipeline.toml /shared/sluice/out/2026-12-02 /shared/sluice/work 64 16
#
# submits, for TASKS=64 tasks with at most SLOTS=16 running at once, the phases that
# `sluice run pipeline.toml --phases` lists: map-0, reduce-0 (and so on for each global stage:
# exact_dedup, minhash, split, mix), write, shards, each as `--array=0-63%16`, then publish as
# one job. Run it where `sbatch` works (a login node); it submits itself as each phase's job.
#
# - WORK must be a filesystem every node sees (Lustre, GPFS, NFS) or an s3:// URL.
# - A failed element fails its array, and the later arrays never start (afterok). Resubmit
#   that element alone with the same arguments (`SLUICE_PHASE=map-1 SLUICE_TASKS=64 sbatch
#   --array=7 deploy/slurm/sluice-phases.sh pipeline.toml OUT WORK`), then the rest of the
#   chain: a phase a task has done is never done again, so resubmitting the whole chain from
#   the failed phase also works.
# - The all-at-once mode (`deploy/slurm/sluice-array.sh`) needs no chain, but every task must
#   run at the same time.
#
#SBATCH --job-name=sluice
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --time=6:00:00
#SBATCH --requeue
#SBATCH --output=sluice-%x-%A_%a.log
set -euo pipefail

PIPELINE=${1:?usage: deploy/slurm/sluice-phases.sh PIPELINE OUT WORK TASKS [SLOTS]}
OUT=${2:?output directory or s3:// URL}
WORK=${3:?work folder every node sees, or an s3:// URL}
SLUICE=${SLUICE:-sluice}

# S3-compatible storage, when the pipeline, OUT or WORK uses s3:// URLs:
# export AWS_ENDPOINT=https://minio.internal:9000 AWS_REGION=us-east-1
# export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...

if [ -n "${SLUICE_PHASE:-}" ]; then
  # One element of one phase's array.
  export SLUICE_CACHE=${SLUICE_CACHE:-${TMPDIR:-/tmp}/sluice-cache-${SLURM_JOB_ID:-0}}
  index=$(( ${SLURM_ARRAY_TASK_ID:-0} - ${SLURM_ARRAY_TASK_MIN:-0} ))
  exec "$SLUICE" run "$PIPELINE" \
    --out "$OUT" \
    --work "$WORK" \
    --tasks "${SLUICE_TASKS:?}" \
    --task-index "$index" \
    --phase "$SLUICE_PHASE" \
    --threads "${SLURM_CPUS_PER_TASK:-0}"
fi

# Submit the chain.
TASKS=${4:?number of tasks}
SLOTS=${5:-$TASKS}
SBATCH=${SBATCH:-sbatch}
phases=$("$SLUICE" run "$PIPELINE" --phases --work "$WORK")
after=()
for phase in $phases; do
  if [ "$phase" = publish ]; then
    array=0
  else
    array="0-$((TASKS - 1))%$SLOTS"
  fi
  job=$(SLUICE_PHASE=$phase SLUICE_TASKS=$TASKS "$SBATCH" --parsable --export=ALL \
    --job-name="sluice-$phase" --array="$array" ${after[@]+"${after[@]}"} \
    "$0" "$PIPELINE" "$OUT" "$WORK")
  job=${job%%;*}
  after=(--dependency="afterok:$job" --kill-on-invalid-dep=yes)
  echo "$phase: job $job (array $array)"
done
