#!/bin/bash
# A sluice pipeline as a Slurm job array: one task per array element, all running at once.
#
#   sbatch --array=0-15 deploy/slurm/sluice-array.sh pipeline.toml /shared/sluice/out/2026-12-02
#
# Each element reads its share of the input files (contiguous, balanced by bytes), runs the
# record-wise stages, and meets the others at every global stage (dedup, split, mix) through
# completion markers in the shared work folder, where each reduces a share of the partitions.
# Every element writes its own Parquet/JSONL parts, tokenizes its own samples and writes its
# share of the shards; element 0 moves them into the run, writes the manifest and publishes it. Shards, catalog and rejects
# are the bytes a single `sluice run` would publish; the curated parts hold the same samples in
# the same order, cut into files per element (README, "Beyond one machine").
#
# Requirements:
# - WORK must be a filesystem every node sees (Lustre, GPFS, NFS) or an s3:// URL. Inputs and
#   the output may be paths on a shared filesystem or s3:// URLs (set AWS_* below).
# - All elements must run concurrently: no `%N` throttle smaller than the array, or the
#   running elements wait for ones that cannot start (they give up after --task-timeout).
# - A failed element is re-run alone (`scontrol requeue <jobid>_<index>`, or resubmit that
#   index with the same arguments): it redoes only its own part; the others keep waiting.
#
#SBATCH --job-name=sluice
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=sluice-%A_%a.log
set -euo pipefail

PIPELINE=${1:?usage: sbatch --array=0-N deploy/slurm/sluice-array.sh PIPELINE OUT [WORK]}
OUT=${2:?output directory or s3:// URL}
WORK=${3:-${SLUICE_WORK:-$(dirname "$PIPELINE")/.sluice-work}}
SLUICE=${SLUICE:-sluice}

# S3-compatible storage, when the pipeline or OUT uses s3:// URLs:
# export AWS_ENDPOINT=https://minio.internal:9000 AWS_REGION=us-east-1
# export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
export SLUICE_CACHE=${SLUICE_CACHE:-${TMPDIR:-/tmp}/sluice-cache-$SLURM_JOB_ID}

# The task index and count come from SLURM_ARRAY_TASK_ID / _MIN / _COUNT.
exec "$SLUICE" run "$PIPELINE" \
  --out "$OUT" \
  --work "$WORK" \
  --threads "${SLURM_CPUS_PER_TASK:-0}" \
  --task-timeout "${SLUICE_TASK_TIMEOUT:-43200}"
