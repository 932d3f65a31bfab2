#!/usr/bin/env bash
# Build an emulated Raspberry Pi (aarch64) Python environment for the suite, from a fresh Debian 12
# x86_64 machine with apt and the Python package index: qemu user mode, Debian bookworm's arm64
# CPython 3.11, and the aarch64 wheels of the pinned torch / onnxruntime / onnx / numpy.
# Idempotent: every step is skipped when its result is already in the cache folder.
#
#   hardware/aarch64/setup.sh          # then: hardware/aarch64/run.sh suite verify ...
#
# Environment: AARCH64_CACHE (default <repo>/.cache/aarch64), DEBIAN_MIRROR
# (default http://deb.debian.org/debian), AARCH64_EXTRA_PKGS (more requirements for the emulated
# environment, e.g. "pyyaml pydantic rich"), AARCH64_KEEP_WHEELS=1 (keep the downloaded wheels,
# 0.5 GB, after installing them), PIP (default "python3 -m pip").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${AARCH64_CACHE:-$REPO/.cache/aarch64}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PIP="${PIP:-python3 -m pip}"
# The project's own dependencies (pyproject.toml), pinned by constraints.txt. torch is installed
# without its CUDA dependencies (see make_cuda_stubs.py), so it goes alone and its pure-Python
# requirements are listed by hand.
TORCH="$(python3 -c 'import re, tomllib, sys
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(*[d for d in deps if re.match(r"torch\b", d)])' "$REPO/pyproject.toml")"
REQS="$(python3 -c 'import re, tomllib, sys
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(*[d for d in deps if not re.match(r"torch\b", d)])' "$REPO/pyproject.toml")"
REQS="$REQS filelock typing-extensions setuptools sympy networkx jinja2 fsspec ${AARCH64_EXTRA_PKGS:-}"
PLATFORM=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
          --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64
          --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64)

step() { printf '\n== %s\n' "$*" >&2; }
took() { printf '   (%ss)\n' "$(( $(date +%s) - $1 ))" >&2; }

[ "$(uname -m)" = x86_64 ] || echo "warning: written for an x86_64 host (this is $(uname -m))" >&2
mkdir -p "$CACHE"

step "1/5 host tools: qemu-user-static, mmdebstrap, binutils-aarch64-linux-gnu"
t=$(date +%s)
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v aarch64-linux-gnu-as >/dev/null || missing+=(binutils-aarch64-linux-gnu)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "   already installed: $(qemu-aarch64-static --version | head -1)" >&2
fi
took "$t"

step "2/5 Debian bookworm arm64 root (python3.11) in $CACHE/rootfs"
t=$(date +%s)
if [ ! -x "$CACHE/rootfs/usr/bin/python3.11" ]; then
    rm -rf "$CACHE/rootfs.tmp"
    # extract: unpack the packages and their dependencies, run no maintainer script (so nothing
    # aarch64 has to execute, and binfmt_misc is not needed)
    mmdebstrap --variant=extract --architectures=arm64 --include=python3.11,libstdc++6,libgomp1 \
        bookworm "$CACHE/rootfs.tmp" "$MIRROR"
    mv "$CACHE/rootfs.tmp" "$CACHE/rootfs"
else
    echo "   present" >&2
fi
took "$t"

step "3/5 aarch64 wheels from the package index: $TORCH (no deps) $REQS (pins: constraints.txt)"
t=$(date +%s)
want="$TORCH $REQS | ${PLATFORM[*]} | $(sha256sum "$REPO/constraints.txt" | cut -c1-16)"
if [ ! -f "$CACHE/site/.installed" ] || [ "$(cat "$CACHE/site/.installed")" != "$want" ]; then
    mkdir -p "$CACHE/wheels"
    # shellcheck disable=SC2086
    $PIP download -q --no-deps "${PLATFORM[@]}" -c "$REPO/constraints.txt" -d "$CACHE/wheels" $TORCH
    # shellcheck disable=SC2086
    $PIP download -q "${PLATFORM[@]}" -c "$REPO/constraints.txt" -d "$CACHE/wheels" $REQS
    ls "$CACHE/wheels" | sed 's/^/   /' >&2
    took "$t"

    step "4/5 install them into $CACHE/site (host pip, --target; no aarch64 code runs)"
    t=$(date +%s)
    rm -rf "$CACHE/site.tmp"
    $PIP install -q --no-deps --no-index "${PLATFORM[@]}" --target "$CACHE/site.tmp" "$CACHE"/wheels/*.whl
    echo "$want" > "$CACHE/site.tmp/.installed"
    rm -rf "$CACHE/site" "$CACHE/cuda-stubs"
    mv "$CACHE/site.tmp" "$CACHE/site"
    [ "${AARCH64_KEEP_WHEELS:-0}" = 1 ] || rm -rf "$CACHE/wheels"
else
    echo "   installed already ($CACHE/site/.installed matches)" >&2
    step "4/5 install: nothing to do"
fi
took "$t"

step "5/5 stand-in CUDA libraries for the CUDA-built aarch64 torch wheel ($CACHE/cuda-stubs)"
t=$(date +%s)
if [ ! -f "$CACHE/cuda-stubs/libcudart.so.13" ]; then
    rm -rf "$CACHE/cuda-stubs.tmp"
    python3 "$HERE/make_cuda_stubs.py" "$CACHE/site" "$CACHE/rootfs" "$CACHE/cuda-stubs.tmp"
    mv "$CACHE/cuda-stubs.tmp" "$CACHE/cuda-stubs"
else
    echo "   present" >&2
fi
took "$t"

step "smoke test under emulation (Raspberry Pi 4 CPU, Cortex-A72)"
t=$(date +%s)
"$HERE/run.sh" --cpu pi4 python -c "
import platform, sys, numpy, onnxruntime, torch
print('  ', platform.machine(), sys.version.split()[0], 'torch', torch.__version__,
      'cuda', torch.cuda.is_available(), 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)"
took "$t"
du -sh "$CACHE" >&2
