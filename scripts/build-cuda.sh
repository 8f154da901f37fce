#!/usr/bin/env bash
# Build sluice with the trainer's CUDA path (`--features cuda`) on a machine without a GPU:
# nvcc and the CUDA headers come from NVIDIA's PyPI wheels (no system toolkit, no driver), the
# kernels are compiled to PTX for CUDA_COMPUTE_CAP (90: H100/H200), and libcuda is only loaded
# when a CUDA device is used at run time.
#
#   scripts/build-cuda.sh                 # release build into ${CARGO_TARGET_DIR:-target}
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh
#
# Environment: SLUICE_CUDA_VENV (where the wheels go; default ~/.cache/sluice-cuda),
# CUDA_WHEELS (the CUDA release of the wheels; default 13.4, the newest that the cudarc under
# candle 0.11 knows: it refuses a toolkit version it does not list).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SLUICE_CUDA_VENV:-$HOME/.cache/sluice-cuda}
version=${CUDA_WHEELS:-13.4}
major=${version%%.*}
started=$(date +%s)
if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check \
    "nvidia-cuda-nvcc==${version}.*" \
    "nvidia-cuda-runtime==${version}.*" \
    "nvidia-nvvm==${version}.*" \
    "nvidia-cuda-crt==${version}.*" \
    "nvidia-cuda-cccl>=${major},<$((major + 1))"   # numbered apart from the toolkit
root=$("$venv/bin/python" -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu${major}'))")
if [ ! -x "$root/bin/nvcc" ]; then
    echo "build-cuda: no nvcc under $root (the wheels changed layout?)" >&2
    exit 1
fi
export PATH="$root/bin:$PATH" CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_TOOLKIT_ROOT_DIR="$root"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# cccl (cub, thrust, libcu++) sits beside the other headers in the wheels.
export NVCC_PREPEND_FLAGS="-I$root/include -I$root/include/cccl ${NVCC_PREPEND_FLAGS:-}"
nvcc --version | tail -1
# candle links the CUDA libraries dynamically (libcuda from the driver; cuBLAS, cuRAND, NVRTC,
# the runtime): with no driver and no toolkit here, link against stubs that carry the symbols and
# the real libraries' sonames, so that at run time the GPU machine's own libraries are loaded.
stubs="$root/lib"
make_stubs() {
    local target=${CARGO_TARGET_DIR:-target}/release
    local syms
    syms=$(mktemp)
    for f in "$target"/deps/libcudarc-*.rlib "$target"/deps/libcandle_core-*.rlib \
             "$target"/deps/libcandle_kernels-*.rlib "$target"/build/candle-kernels-*/out/*.a; do
        [ -e "$f" ] && nm -u "$f" 2>/dev/null | awk '{print $2}'
    done | grep -E '^(cu|nvrtc|__cuda)' | sort -u > "$syms"
    stub() { # name soname pattern [exclude]
        local c="$stubs/stub-$1.c"
        grep -E "$3" "$syms" | { if [ -n "${4:-}" ]; then grep -vE "$4"; else cat; fi; } \
            | sed 's/.*/void &(void) {}/' > "$c"
        cc -shared -fPIC -Wl,-soname,"$2" -o "$stubs/lib$1.so" "$c"
    }
    stub cuda libcuda.so.1 '^cu' '^(cublas|curand|cuda|cudnn)'
    stub cublasLt libcublasLt.so.13 '^cublasLt'
    stub cublas libcublas.so.13 '^cublas' '^cublasLt'
    stub curand libcurand.so.10 '^curand'
    stub nvrtc libnvrtc.so.13 '^nvrtc'
    ln -sf libcudart.so.13 "$stubs/libcudart.so"
    rm -f "$syms"
}
if ! cargo build --release --locked --features cuda --bin sluice; then
    echo "build-cuda: linking against stub CUDA libraries" >&2
    make_stubs
    cargo build --release --locked --features cuda --bin sluice
fi
echo "build-cuda: done in $(( $(date +%s) - started )) s (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, nvcc from $root)"
