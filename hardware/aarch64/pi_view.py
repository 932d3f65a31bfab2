#!/usr/bin/env python3
"""Write what a Raspberry Pi's kernel shows a program about its CPU: /proc/cpuinfo and the
/sys/devices/system/cpu tree (MIDR_EL1, caches, topology, clocks), for run.sh to put in place of the
host's under emulation.

Why: qemu user mode passes the x86 host's /proc/cpuinfo and /sys through. The cpuinfo library inside
onnxruntime crashes on the x86 /proc/cpuinfo (SIGSEGV at import), and NVPL BLAS (torch's aarch64 BLAS),
oneDNN / Arm Compute Library and MLAS size their blocking and pick kernels from the CPU part and the
cache sizes they read there, so the host's caches would make the emulated run something no Pi runs.
Cache geometry: the `cache-size`/`cache-sets`/`cache-line-size` of the bcm2837, bcm2711 and bcm2712
device trees the Pi kernels expose through cacheinfo.

usage: pi_view.py pi3|pi4|pi5 OUT_DIR [NCPU]    (NCPU default 4, as on every Pi 3/4/5)
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

K = 1024
# cache: (level, type, size, sets, shared by all cores?)
PIS = {
    "pi3": dict(model="Raspberry Pi 3 Model B Plus Rev 1.3", revision="a020d3", variant=0x0, part=0xd03,
                rev=4, features="fp asimd evtstrm crc32 cpuid", khz=(600000, 1400000),
                caches=[(1, "Data", 32 * K, 128, False), (1, "Instruction", 32 * K, 256, False),
                        (2, "Unified", 512 * K, 512, True)]),
    "pi4": dict(model="Raspberry Pi 4 Model B Rev 1.4", revision="c03114", variant=0x0, part=0xd08,
                rev=3, features="fp asimd evtstrm crc32 cpuid", khz=(600000, 1500000),
                caches=[(1, "Data", 32 * K, 256, False), (1, "Instruction", 48 * K, 256, False),
                        (2, "Unified", 1024 * K, 1024, True)]),
    "pi5": dict(model="Raspberry Pi 5 Model B Rev 1.0", revision="d04170", variant=0x4, part=0xd0b,
                rev=1, features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                                "asimdrdm lrcpc dcpop asimddp", khz=(1500000, 2400000),
                caches=[(1, "Data", 64 * K, 256, False), (1, "Instruction", 64 * K, 256, False),
                        (2, "Unified", 512 * K, 1024, False), (3, "Unified", 2048 * K, 2048, True)]),
}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def main(name: str, out: Path, ncpu: int) -> None:
    pi = PIS[name]
    midr = (0x41 << 24) | (pi["variant"] << 20) | (0xF << 16) | (pi["part"] << 4) | pi["rev"]
    every = f"0-{ncpu - 1}" if ncpu > 1 else "0"
    mask = format((1 << ncpu) - 1, "x")
    shutil.rmtree(out / "proc", ignore_errors=True)
    shutil.rmtree(out / "sys", ignore_errors=True)
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {pi['features']}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: {pi['variant']:#x}\nCPU part\t: {pi['part']:#x}\n"
              f"CPU revision\t: {pi['rev']}\n" for i in range(ncpu)]
    write(out / "proc/cpuinfo", "\n".join(blocks) + f"\nHardware\t: BCM2835\nRevision\t: {pi['revision']}\n"
          f"Serial\t\t: 0000000000000000\nModel\t\t: {pi['model']}\n")
    cpu = out / "sys/devices/system/cpu"
    for f, v in (("possible", every), ("present", every), ("online", every), ("offline", ""),
                 ("kernel_max", "255")):
        write(cpu / f, v)
    for i in range(ncpu):
        c = cpu / f"cpu{i}"
        write(c / "online", "1")
        write(c / "regs/identification/midr_el1", f"0x{midr:016x}")
        write(c / "regs/identification/revidr_el1", f"0x{0:016x}")
        for f, v in (("physical_package_id", "0"), ("core_id", str(i)), ("cluster_id", "0"),
                     ("cluster_cpus_list", every), ("core_siblings_list", every),
                     ("package_cpus_list", every), ("thread_siblings_list", str(i)),
                     ("core_cpus_list", str(i))):
            write(c / "topology" / f, v)
        for f, v in (("cpuinfo_min_freq", pi["khz"][0]), ("cpuinfo_max_freq", pi["khz"][1]),
                     ("scaling_min_freq", pi["khz"][0]), ("scaling_max_freq", pi["khz"][1]),
                     ("scaling_cur_freq", pi["khz"][1])):
            write(c / "cpufreq" / f, str(v))
        for idx, (level, kind, size, sets, shared) in enumerate(pi["caches"]):
            d = c / "cache" / f"index{idx}"
            for f, v in (("level", level), ("type", kind), ("size", f"{size // K}K"),
                         ("number_of_sets", sets), ("coherency_line_size", 64),
                         ("ways_of_associativity", size // (sets * 64)),
                         ("physical_line_partition", 1), ("id", 0 if shared else i),
                         ("shared_cpu_list", every if shared else str(i)),
                         ("shared_cpu_map", mask if shared else format(1 << i, "x"))):
                write(d / f, str(v))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in PIS:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 4)
