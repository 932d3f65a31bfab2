#!/usr/bin/env bash
# Run a command of the suite under aarch64 emulation (qemu user mode), as a Raspberry Pi would run
# it, with this checkout's `suite` package importable. Build the environment first: setup.sh.
#
#   hardware/aarch64/run.sh [--cpu pi3|pi4|pi5] suite verify --model resnet18 --backend torch ...
#   hardware/aarch64/run.sh python -c "import torch; print(torch.__config__.show())"
#
# --cpu (or AARCH64_CPU) picks the emulated CPU and the /proc/cpuinfo and /sys/devices/system/cpu
# (pi_view.py: the Pi's caches, MIDR_EL1; 4 cores or the host's count if fewer, AARCH64_NCPU)
# that programs see: pi3 = Cortex-A53 r0p4, pi4 = Cortex-A72 r0p3 (default), pi5 = Cortex-A76 r4p1. Note qemu's
# A53/A72 report the crypto extension (aes, pmull, sha1, sha2) in HWCAP, which the Pi 3's and Pi 4's
# SoCs lack; nothing in the suite's float path uses it.
# `suite ARGS` runs `python -m suite ARGS`; `python`/`python3` the emulated CPython 3.11; any other
# command is looked up in the emulated root's /usr/bin. Programs that exec another aarch64 program
# need binfmt_misc (not set up by this script), so keep workers in-process. As root the command runs
# chrooted in a private mount namespace (AARCH64_MODE=chroot); otherwise through qemu -L (prefix).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${AARCH64_CACHE:-$REPO/.cache/aarch64}"
CPU="${AARCH64_CPU:-pi4}"
if [ "${1:-}" = --cpu ]; then CPU="$2"; shift 2; fi
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || { sed -n '2,15p' "$0" >&2; exit 2; }

case "$CPU" in
    pi3) QCPU=cortex-a53 ;;
    pi4) QCPU=cortex-a72 ;;
    pi5) QCPU=cortex-a76 ;;
    *) echo "run.sh: --cpu must be pi3, pi4 or pi5 (got $CPU)" >&2; exit 2 ;;
esac

ROOT="$CACHE/rootfs"
[ -x "$ROOT/usr/bin/python3.11" ] && [ -d "$CACHE/site" ] && [ -d "$CACHE/cuda-stubs" ] ||
    { echo "run.sh: no emulated environment in $CACHE; run hardware/aarch64/setup.sh" >&2; exit 1; }
QEMU="$(command -v qemu-aarch64-static || command -v qemu-aarch64)" ||
    { echo "run.sh: qemu-aarch64 not installed; run hardware/aarch64/setup.sh" >&2; exit 1; }

# What the Pi's kernel would show about its CPU (pi_view.py): /proc/cpuinfo and
# /sys/devices/system/cpu, one view per CPU model so runs with different models can go side by side.
VIEW="$CACHE/views/$CPU"
HOSTCPUS="$(getconf _NPROCESSORS_ONLN)"
NCPU="${AARCH64_NCPU:-$(( HOSTCPUS < 4 ? HOSTCPUS : 4 ))}"  # a Pi has 4; never more than the host has
if [ ! -f "$VIEW/.done" ] || [ "$(cat "$VIEW/.done")" != "$NCPU" ] || [ "$HERE/pi_view.py" -nt "$VIEW/.done" ]; then
    python3 "$HERE/pi_view.py" "$CPU" "$VIEW" "$NCPU"
    for d in bin etc lib sbin usr var; do ln -sfn "../../rootfs/$d" "$VIEW/$d"; done
    echo "$NCPU" > "$VIEW/.done"
fi

case "$1" in
    suite) shift; set -- /usr/bin/python3.11 -m suite "$@" ;;
    python|python3|python3.11) shift; set -- /usr/bin/python3.11 "$@" ;;
    *) set -- "/usr/bin/$1" "${@:2}" ;;
esac

unset PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE VIRTUAL_ENV
export PYTHONPATH="$REPO:$CACHE/site" PYTHONNOUSERSITE=1
export LD_LIBRARY_PATH="$CACHE/cuda-stubs"
# `suite doctor`'s per-host verdicts (~/.cache/suite) of the emulated Pis, apart from the host's
export XDG_CACHE_HOME="$CACHE/xdg-cache"
MODE="${AARCH64_MODE:-$([ "$(id -u)" = 0 ] && echo chroot || echo prefix)}"
echo "[aarch64: qemu $("$QEMU" --version | head -1 | awk '{print $3}') -cpu $QCPU ($CPU), $MODE]" >&2

if [ "$MODE" = prefix ]; then
    # Not root: qemu -L looks each absolute path up in the view first (the Pi's /proc/cpuinfo and
    # /sys/devices/system/cpu files, the arm64 root through symlinks) and falls back to the host's.
    # A file the host has and the Pi has not (an x86 L3 cache's index3/) still shows through.
    exec "$QEMU" -cpu "$QCPU" -L "$VIEW" "$VIEW$1" "${@:2}"
fi

# root: a private mount namespace in which the arm64 root is /, with the host's /proc (the Pi's
# cpuinfo over /proc/cpuinfo), the Pi's /sys/devices/system/cpu as /sys, the host's /dev and /tmp,
# and this checkout, the cache and the working directory at their own paths; nothing of the
# host's file system shows through otherwise.
binds=("$REPO" /tmp)
case "$CACHE/" in "$REPO"/*) ;; *) binds+=("$CACHE") ;; esac
case "$PWD/" in "$REPO"/*|/tmp/*) ;; *) binds+=("$PWD") ;; esac
export R="$ROOT" V="$VIEW" Q="$QEMU" QCPU BINDS="${binds[*]}"
exec unshare --mount --propagation private -- bash -euc '
    for p in /proc /dev /sys $BINDS; do mkdir -p "$R$p"; done
    mount --rbind /proc "$R/proc"; mount --bind "$V/proc/cpuinfo" "$R/proc/cpuinfo"
    mount --rbind /dev "$R/dev"; mount --bind "$V/sys" "$R/sys"
    for p in $BINDS; do mount --bind "$p" "$R$p"; done
    touch "$R/usr/bin/qemu-aarch64-static"; mount --bind "$Q" "$R/usr/bin/qemu-aarch64-static"
    exec unshare --root="$R" --wd="$PWD" /usr/bin/qemu-aarch64-static -cpu "$QCPU" "$@"' run.sh "$@"
