#!/usr/bin/env bash
# Single-core throughput of the Python peer tools (see README.md).
#   bench/peers/run.sh FILE zh|en [extra peers.py args, e.g. --limit 1000 --steps jieba,minhash]
# The venv (default /tmp/peers-venv, override with PEERS_VENV) is created from
# requirements.txt when missing. Results go to stdout (one JSON line per step) and to
# ${PEERS_OUT:-/tmp/peers-out}/<file>.<lang>.json unless --json-out is passed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PEERS_VENV:-/tmp/peers-venv}"
python="${PYTHON:-python3}"

if [ $# -lt 2 ]; then
  echo "usage: $0 FILE zh|en [peers.py args...]" >&2
  exit 2
fi
file="$1"; lang="$2"; shift 2

if [ ! -x "$venv/bin/python" ]; then
  echo "# creating $venv from requirements.txt" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
fi

# One core: also pinned inside peers.py before any import.
export RAYON_NUM_THREADS=1 RAYON_RS_NUM_CPUS=1 TOKENIZERS_PARALLELISM=false \
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

args=("$@")
if [[ " ${args[*]-} " != *" --json-out"* ]]; then
  out="${PEERS_OUT:-/tmp/peers-out}"
  mkdir -p "$out"
  args+=(--json-out "$out/$(basename "$file" .jsonl).$lang.json")
fi

exec "$venv/bin/python" "$here/peers.py" --input "$file" --lang "$lang" "${args[@]}"
