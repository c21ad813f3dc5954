"""Run model-written Python in a sandboxed subprocess.

Layers of containment, each enough for the common case and together for the hostile one:
- a fresh temporary directory as working directory and HOME, an empty environment, and
  `python -I -S` (no site-packages, no user paths: only the standard library imports);
- resource limits: CPU seconds, address space (memory), file size, open files, and a
  wall-clock timeout after which the whole process group is killed;
- where the kernel allows unprivileged user namespaces, a new network namespace with no
  interfaces (`unshare --net`), so no connection can be made at all;
- an audit hook (PEP 578) installed before the code runs that refuses process creation,
  sockets, reading files outside the temporary directory and the standard library, and
  writing or deleting anything outside the temporary directory.

The harness prints one JSON line per test, tagged with a random nonce that the code under
test never sees, and a final line once every test has run; a process that ends without it
exited early.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from functools import lru_cache

_HARNESS = r'''
import sys, json, os
_NONCE = sys.stdin.readline().strip()
_SPEC = json.loads(sys.stdin.readline())
sys.stdin.close()
_out = sys.__stdout__
def _emit(**kw):
    _out.write(_NONCE + json.dumps(kw) + "\n"); _out.flush()
_TMP = os.path.realpath(os.getcwd())
_STD = tuple(os.path.realpath(p) for p in _SPEC["stdlib"])
def _inside(path, roots):
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return any(p == r or p.startswith(r + os.sep) for r in roots)
_BLOCK = {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn",
          "os.spawn", "os.exec", "os.startfile", "pty.spawn", "socket.__new__",
          "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
          "ctypes.dlopen", "ctypes.dlsym", "os.kill", "os.killpg", "signal.pthread_kill",
          "os.chroot", "os.setuid", "sys.addaudithook"}
_WRITE = {"os.remove", "os.rmdir", "os.rename", "os.replace", "os.mkdir", "os.chmod",
          "os.chown", "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree",
          "shutil.copyfile", "shutil.move"}
def _hook(event, args):
    if event in _BLOCK:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        writing = (mode and any(c in mode for c in "wax+")) or (flags & 3) != 0
        if writing:
            if not _inside(path, (_TMP,)):
                raise PermissionError(f"sandbox: writing {path} is not allowed")
        elif not _inside(path, (_TMP,) + _STD):
            raise PermissionError(f"sandbox: reading {path} is not allowed")
    elif event in ("os.listdir", "os.scandir", "os.chdir"):
        path = args[0] if args else "."
        if path is not None and not isinstance(path, int) and not _inside(path, (_TMP,) + _STD):
            raise PermissionError(f"sandbox: {event} {path} is not allowed")
    elif event in _WRITE:
        for a in args:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a, (_TMP,)):
                raise PermissionError(f"sandbox: {event} {a} is not allowed")
sys.addaudithook(_hook)
_ns = {"__name__": "solution"}
try:
    exec(compile(_SPEC["code"], "solution.py", "exec"), _ns)
except SystemExit as e:
    _emit(stage="load", status="exit", detail=repr(e.code)); os._exit(0)
except BaseException as e:
    _emit(stage="load", status="error", detail=f"{type(e).__name__}: {e}"[:500])
    _ns = None
if _ns is not None:
    for _i, _t in enumerate(_SPEC["tests"]):
        try:
            exec(compile(_t, f"test_{_i}", "exec"), dict(_ns))
            _emit(stage="test", index=_i, status="pass")
        except AssertionError as e:
            _emit(stage="test", index=_i, status="fail", detail=str(e)[:300])
        except SystemExit as e:
            _emit(stage="test", index=_i, status="exit", detail=repr(e.code)); os._exit(0)
        except BaseException as e:
            _emit(stage="test", index=_i, status="error", detail=f"{type(e).__name__}: {e}"[:500])
_emit(stage="done")
'''


@dataclass
class SandboxResult:
    """What happened: `tests` maps test index -> pass|fail|error|exit; `status` is one of
    complete (every test ran), exited (the code ended the process early), timeout, killed
    (a signal, e.g. out of memory), crashed (died without finishing)."""

    status: str
    tests: dict[int, str] = field(default_factory=dict)
    details: dict[int, str] = field(default_factory=dict)
    load_error: str | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    stderr: str = ""

    @property
    def all_passed(self) -> bool:
        return self.status == "complete" and bool(self.tests) and all(
            v == "pass" for v in self.tests.values())

    @property
    def exited_early(self) -> bool:
        return self.status == "exited" or "exit" in self.tests.values()

    def summary(self, tests: list[str]) -> str:
        """Failing tests and errors as a short text (fed back to the model on retry)."""
        if self.status == "timeout":
            return "The code did not finish in time."
        if self.load_error:
            return f"The code failed to load: {self.load_error}"
        lines = []
        for i, st in sorted(self.tests.items()):
            if st != "pass":
                lines.append(f"{tests[i]}  -> {st.upper()} {self.details.get(i, '')}".rstrip())
        return "\n".join(lines) or f"The run ended with status {self.status}."


@lru_cache(maxsize=1)
def network_isolation() -> list[str]:
    """The command prefix that gives the child an empty network namespace, if the kernel lets
    this user create one; [] otherwise (the audit hook still refuses sockets)."""
    exe = shutil.which("unshare")
    if not exe:
        return []
    for prefix in ([exe, "--net", "--map-root-user"], [exe, "--net"]):
        try:
            r = subprocess.run(prefix + ["true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return prefix
    return []


def _limits(cpu_s: int, memory_mb: int):
    def apply():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_tests(code: str, tests: list[str], timeout_s: float = 5.0, memory_mb: int = 512,
              network: bool = False) -> SandboxResult:
    """Run `code`, then each test (a statement such as `assert f(1) == 2`), in a sandbox."""
    stdlib = sorted({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
                    | {os.path.dirname(os.__file__)})
    nonce = secrets.token_hex(16)
    spec = json.dumps({"code": code, "tests": tests, "stdlib": stdlib})
    prefix = [] if network else network_isolation()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steer-sandbox-") as tmp:
        harness = os.path.join(tmp, "harness.py")
        with open(harness, "w") as f:
            f.write(textwrap.dedent(_HARNESS))
        cmd = prefix + [sys.executable, "-I", "-S", "-B", harness]
        env = {"HOME": tmp, "TMPDIR": tmp, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_limits(max(1, int(timeout_s) + 1), memory_mb))
        timed_out = False
        try:
            out, err = proc.communicate(f"{nonce}\n{spec}\n".encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
        _kill_group(proc)  # nothing the code started may outlive it
    res = SandboxResult("crashed", exit_code=proc.returncode,
                        seconds=time.perf_counter() - t0,
                        stderr=err.decode(errors="replace")[-2000:])
    done = False
    for line in out.decode(errors="replace").splitlines():
        if not line.startswith(nonce):
            continue
        try:
            ev = json.loads(line[len(nonce):])
        except json.JSONDecodeError:
            continue
        if ev.get("stage") == "done":
            done = True
        elif ev.get("stage") == "load":
            if ev["status"] == "exit":
                res.status = "exited"
            res.load_error = ev.get("detail")
        elif ev.get("stage") == "test":
            res.tests[int(ev["index"])] = ev["status"]
            if ev.get("detail"):
                res.details[int(ev["index"])] = ev["detail"]
    if timed_out:
        res.status = "timeout"
    elif done:
        res.status = "complete"
    elif res.status == "exited" or "exit" in res.tests.values():
        res.status = "exited"
    elif proc.returncode is not None and proc.returncode < 0:
        res.status = "killed"
    elif proc.returncode == 0:
        res.status = "exited"  # ended cleanly before the harness finished: os._exit & co.
    return res


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
