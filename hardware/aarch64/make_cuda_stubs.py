#!/usr/bin/env python3
"""Stand-in CUDA libraries so the aarch64 torch wheel from PyPI loads on a CPU-only (emulated) Pi.

PyPI's only Linux aarch64 torch 2.13.0 wheel is the CUDA 13 build: libtorch_cpu.so itself lists
libcudart.so.13 and libcupti.so.13 as NEEDED, libtorch_cuda.so (NEEDED by libtorch.so) a dozen
more. `pip install torch` on a Pi pulls ~2.5 GB of NVIDIA wheels to satisfy the loader; nothing in
them runs on a machine without an NVIDIA GPU. This script writes, for each CUDA SONAME the torch
libraries need, a small aarch64 shared object that defines every symbol they import from it (under
the right symbol version) as a function returning 100 (cudaErrorNoDevice; an error for every other
NVIDIA API too), so `torch.cuda.is_available()` is False and the CPU code (libtorch_cpu.so, NVPL
BLAS, Arm Compute Library via oneDNN) is exactly the wheel's.

usage: make_cuda_stubs.py SITE_PACKAGES SYSROOT OUT_DIR   (needs aarch64-linux-gnu-as/-ld)
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# SONAME -> symbol version node name (when not the SONAME itself) and unversioned-name prefixes
STUBS = {
    "libcudart.so.13": ("cuda", "__cuda"),
    "libcupti.so.13": ("cupti", "Cupti"),
    "libcusparse.so.12": ("cusparse",),
    "libcufft.so.12": ("cufft",),
    "libcufile.so.0": ("cuFile",),
    "libcusparseLt.so.0": ("cusparseLt",),
    "libnccl.so.2": ("nccl", "pnccl"),
    "libcurand.so.10": ("curand",),
    "libcublas.so.13": ("cublas",),
    "libcublasLt.so.13": ("cublasLt",),
    "libcudnn.so.9": ("cudnn",),
    "libnvrtc.so.13": ("nvrtc",),
    "libnvshmem_host.so.3": ("nvshmem", "nvshmemx"),
    "libcusolver.so.12": ("cusolver",),
}
VERSION_NODE = {"libnvshmem_host.so.3": "NVSHMEM"}
SYM = re.compile(r"^\s*\d+:\s+\S+\s+(\S+)\s+(\w+)\s+(\w+)\s+\w+\s+(\S+)\s+(\S+)")


def dynsyms(lib: Path):
    out = subprocess.run(["readelf", "--dyn-syms", "-W", str(lib)], check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        m = SYM.match(line)
        if m:
            size, typ, bind, ndx, name = m.groups()
            yield typ, bind, ndx, name.split(" ")[0]


def needed(lib: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", "-W", str(lib)], check=True, capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def loaded_at_import(torch_dir: Path) -> list[Path]:
    """torch/_C*.so, torch/lib/libtorch_global_deps.so and the torch/lib libraries they NEED, recursively
    (libcaffe2_nvrtc.so and the like are dlopened only when CUDA is used)."""
    todo = sorted(torch_dir.glob("_C*.so")) + [torch_dir / "lib" / "libtorch_global_deps.so"]
    seen: dict[str, Path] = {}
    while todo:
        lib = todo.pop()
        if lib.name in seen:
            continue
        seen[lib.name] = lib
        todo += [torch_dir / "lib" / n for n in needed(lib) if (torch_dir / "lib" / n).is_file()]
    return sorted(seen.values())


def main(site: Path, sysroot: Path, out: Path) -> None:
    importers = loaded_at_import(site / "torch")
    system = [p for d in ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")
              for p in sorted((sysroot / d).glob("*.so*")) if p.is_file()]
    providers = importers + [sysroot / "usr/bin/python3.11"] + system  # python3.11: the C API
    defined: set[str] = set()
    for lib in providers:
        for _typ, _bind, ndx, name in dynsyms(lib):
            if ndx != "UND":
                defined.add(name.split("@")[0])
    wanted: dict[str, dict[str, str]] = {so: {} for so in STUBS}   # soname -> {symbol: type}
    node_to_so = {VERSION_NODE.get(so, so): so for so in STUBS}
    for lib in importers:
        for typ, bind, ndx, name in dynsyms(lib):
            if ndx != "UND" or bind == "WEAK":
                continue
            base, _, version = name.partition("@")
            version = version.lstrip("@")
            if version:
                if version in node_to_so:
                    wanted[node_to_so[version]][base] = typ
                continue
            if base in defined:
                continue
            owner = max((so for so, prefixes in STUBS.items() if base.startswith(prefixes)),
                        key=lambda so: max(len(p) for p in STUBS[so] if base.startswith(p)),
                        default=None)
            if owner is None:
                sys.exit(f"make_cuda_stubs: {lib.name} imports {base}, which no library defines and "
                         "no stub claims")
            wanted[owner][base] = typ
    out.mkdir(parents=True, exist_ok=True)
    for so, syms in wanted.items():
        node = VERSION_NODE.get(so, so)
        asm = [".text", ".p2align 2", ".globl __stub_error", ".type __stub_error,%function",
               "__stub_error:", "  mov w0, #100", "  ret"]
        data = [".data", ".p2align 4", "__stub_zero: .zero 256"]
        for name, typ in sorted(syms.items()):
            if typ == "OBJECT":
                data += [f".globl {name}", f".type {name},%object", f".size {name},256",
                         f".set {name}, __stub_zero"]
            else:
                asm += [f".globl {name}", f".type {name},%function", f".set {name}, __stub_error"]
        src, obj, script = out / f"{so}.s", out / f"{so}.o", out / f"{so}.map"
        src.write_text("\n".join(asm + data) + "\n")
        script.write_text(f"{node} {{ global: *; }};\n")
        subprocess.run(["aarch64-linux-gnu-as", "-o", str(obj), str(src)], check=True)
        subprocess.run(["aarch64-linux-gnu-ld", "-shared", "-soname", so, "--version-script", str(script),
                        "-o", str(out / so), str(obj)], check=True)
        for f in (src, obj, script):
            f.unlink()
        print(f"  {so}: {len(syms)} symbols (version {node})")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
