"""custom_ops/core's plain C++ tests (custom_ops/core_tests), built against
the core objects alone and run here so `make test` runs them; and the one
ISA flag table both builds read."""
import os
import pathlib
import re
import subprocess

import pytest

from custom_ops import build

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("isa", ["", "generic"])
def test_core_tests_pass(isa):
    """On this CPU's kernels and on the portable ones (RECOPT_ISA=generic):
    QuantizeRows must give the same integers on both."""
    binary = build.build_core_tests()
    env = dict(os.environ, RECOPT_ISA=isa) if isa else None
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    checks = int(re.search(r"core tests: (\d+) checks, 0 failed", run.stdout).group(1))
    assert checks > 1000   # the loops ran: a reference check per id, integer and top-k entry


def test_core_has_no_tensorflow_include():
    offenders = [p.name for p in (ROOT / "custom_ops" / "core").glob("*.*")
                 if re.search(r'#include\s*[<"]tensorflow/', p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_one_isa_flag_table_for_both_builds():
    bzl = (ROOT / "custom_ops" / "recopt.bzl").read_text(encoding="utf-8")
    assert 'load(":custom_ops/isa_flags.bzl", "ISA_COPTS")' in bzl
    assert "-mavx" not in bzl   # no second copy of the flags
    table = build._isa_copts()
    assert build.ISA_FLAGS == {f"isa_{isa}.cc": flags for isa, flags in table.items()}
    for isa in table:
        assert (ROOT / "custom_ops" / "core" / f"isa_{isa}.cc").exists()
