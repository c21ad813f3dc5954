"""The corpus of hostile programs (benchmarks/sandbox_attacks.py) against the sandbox: every one
contained, none scored as an honest failure with the hidden tests passed. The corpus and its
checker are the benchmark's own, imported from its path; the programs run for real, in real
sandboxes, from a real child process, and the host is inspected after each."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steer.tasks.sandbox import isolation_problem

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sandbox_attacks",
                                               ROOT / "benchmarks" / "sandbox_attacks.py")
attacks = importlib.util.module_from_spec(_spec)
sys.modules["sandbox_attacks"] = attacks  # its dataclasses look the module up
_spec.loader.exec_module(attacks)

pytestmark = pytest.mark.skipif(isolation_problem() is not None,
                                reason=f"no OS-level isolation here: {isolation_problem()}")

FAMILIES = {"files-write", "files-read", "network", "processes", "time", "memory-output", "disk",
            "forging"}


@pytest.fixture(scope="module")
def rows():
    return {r.program: r for r in attacks.run_corpus("os")}


@pytest.mark.parametrize("name", [a.name for a in attacks.CORPUS])
def test_hostile_program_is_contained(rows, name):
    r = rows[name]
    assert r.contained, f"{r.family}/{name} escaped: {'; '.join(r.leaks)}"
    assert not (r.cls == "honest_fail" and r.spec_pass == 1.0), (r.cls, r.spec_pass)
    assert all(s <= attacks.Attack.timeout_s + 60 for s in r.seconds)  # sanity: it did run
    assert len(r.seconds) == 2, "both the visible and the hidden tests ran"


def test_the_corpus_covers_every_family_and_sidesteps_the_hook():
    by_family = {}
    for a in attacks.CORPUS:
        by_family.setdefault(a.family, []).append(a)
    assert set(by_family) == FAMILIES
    assert len(attacks.CORPUS) >= 60
    assert len({a.name for a in attacks.CORPUS}) == len(attacks.CORPUS)
    for family, items in by_family.items():
        if family != "forging":  # forging works on the worker itself, no hook in the way
            assert any(a.sidestep for a in items), family
            assert any(not a.sidestep for a in items), family


def _unshare_works() -> bool:
    exe = shutil.which("unshare")
    if not exe:
        return False
    r = subprocess.run([exe, "--user", "--map-root-user", "--pid", "--ipc", "--fork",
                        "--mount-proc", "true"], capture_output=True, timeout=30)
    return r.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare (user + PID namespaces)")
def test_the_checker_sees_what_escapes_without_isolation():
    """The same checks, with the worker run without OS-level isolation (inside a namespace of
    the harness's own): programs that first disable the audit hook are caught escaping, so the
    containment above is the sandbox's doing and not a blind checker's."""
    names = {"open-write-canary-unhooked": "changed canaries/canary.txt",
             "read-ssh-key-unhooked": "ssh key read",
             "signal-parent-usr1-unhooked": "the parent got SIGUSR1",
             "daemon-double-fork-setsid": "alive",  # reparented to the caller, or marked
             "tcp-connect-unhooked": "tcp listener reached"}
    picked = [a for a in attacks.CORPUS if a.name in names]
    got = {r.program: r for r in attacks.run_corpus("none", picked)}
    for name, phrase in names.items():
        r = got[name]
        assert not r.contained, name
        assert any(phrase in leak for leak in r.leaks), (name, r.leaks)
