"""Runs on a device with the device's own interpreter: what it has, and whether the deployed suite works.

`suite deploy` uploads this file and runs it twice; each run prints one JSON object:

    python device_probe.py env WHEEL CONSTRAINTS   before installing (standard library only): the
        Python version, whether pip and venv exist, and whether this interpreter already has every
        dependency of the wheel at the pinned versions (pip resolves it offline, installing nothing)
    python device_probe.py check PROFILE           after installing, with the deployed suite first
        on the path: versions, backend flags, free memory, where `suite` is imported from,
        whether the device's profile loads with that suite, and what decides its arithmetic
        (`suite.doctor.host_facts`) with where its `suite doctor` verdicts are cached
"""

import importlib.util
import json
import platform
import subprocess
import sys


def env(wheel: str, constraints: str) -> dict:
    found = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "machine": platform.machine(),
        "pip": importlib.util.find_spec("pip") is not None,
        "venv": all(importlib.util.find_spec(m) is not None for m in ("venv", "ensurepip")),
    }
    if not found["pip"]:
        return found | {"satisfied": False, "missing": ["pip"]}
    resolve = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            "-",
            "-c",
            constraints,
            wheel,
        ],
        capture_output=True,
        text=True,
    )
    if resolve.returncode != 0:
        said = [ln.strip() for ln in resolve.stderr.splitlines() if ln.startswith("ERROR")]
        return found | {"satisfied": False, "missing": said[-1:] or [f"pip exited with {resolve.returncode}"]}
    wanted = [i["metadata"]["name"] for i in json.loads(resolve.stdout)["install"]]
    missing = [name for name in wanted if name.lower() != "suite"]
    return found | {"satisfied": not missing, "missing": missing}


def check(profile: str) -> dict:
    found = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "mem_available_bytes": _memory(),
    }
    try:
        import importlib.metadata

        import torch

        import suite
        from suite.doctor import cache_path, host_facts
        from suite.fleet import load_profile
    except Exception as exc:  # report it: deploy names the device and what is missing
        return found | {"error": f"{type(exc).__name__}: {exc}"}
    found |= {
        "torch": torch.__version__,
        "suite": importlib.metadata.version("suite"),
        "suite_path": suite.__file__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "nnpack": torch.backends.nnpack.is_available(),
        "threads": torch.get_num_threads(),
        "arithmetic": host_facts(),
    }
    found["doctor_cache"] = str(cache_path(found["arithmetic"]))
    try:
        found["profile"] = load_profile(profile).name
    except Exception as exc:
        found["profile_error"] = str(exc)
    return found


def _memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), in bytes."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    print(json.dumps({"env": env, "check": check}[command](*args)))
