"""Runs a test script under each forced kernel path (RECOPT_ISA), in its own
process: the op library picks its ISA kernels once, at load time."""
import os
import subprocess
import sys

ISAS = ("generic", "avx2", "avx512")


def assert_script_passes(script, isa):
    """Runs `script` with RECOPT_ISA=isa (a path the CPU lacks falls back to
    the best it has); the script prints "ok" last when its checks pass."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "RECOPT_ISA": isa})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
