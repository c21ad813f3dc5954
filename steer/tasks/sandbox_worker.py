"""The program that runs inside the sandbox (as `python -I -S -B -c <this file's text>`).

It is the only code of ours that shares a process with model-written code, so it is given
nothing worth stealing or forging: it loads the solution, calls the requested functions with
literal arguments, and reports what came back. The expected values never enter the sandbox;
the caller compares them (`steer.tasks.testexpr`), so a program that rewrites this worker or
forges its lines can at most choose its own return values, which is what its code does anyway.

Protocol: one JSON line on stdin, `{"nonce", "code", "calls": [[name, [arg source, ...]], ...],
"limits": {...}, "roots": [...], "fd": N}`; answers on descriptor `fd`, one line per event,
each prefixed with the nonce: `load` (ok|error|exit), `call` (index, value|error|exit), `done`.
Only the standard library is importable here (no site-packages).
"""

import ast
import json
import os
import resource
import sys


def _limit(spec: dict) -> None:
    mem = spec["memory_mb"] * 1024 * 1024
    cpu = spec["cpu_s"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["file_mb"] * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _guard(roots_read: tuple, root_write: str) -> None:
    """Second layer only (the sandbox's namespaces and seccomp filter are the boundary): an
    audit hook that refuses process creation, sockets, native code loading and file access
    outside the working directory and the standard library, so that honest-but-careless code
    gets a clear `sandbox:` error."""
    block = {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn",
             "os.spawn", "os.exec", "pty.spawn", "socket.__new__", "socket.connect",
             "socket.bind", "socket.getaddrinfo", "ctypes.dlopen", "ctypes.dlsym", "os.kill",
             "os.killpg", "signal.pthread_kill", "os.chroot", "os.setuid", "sys.addaudithook"}
    writes = {"os.remove", "os.rmdir", "os.rename", "os.replace", "os.mkdir", "os.chmod",
              "os.chown", "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree",
              "shutil.copyfile", "shutil.move"}
    realpath, fsdecode, sep = os.path.realpath, os.fsdecode, os.sep

    def inside(path, roots):
        try:
            p = realpath(fsdecode(path))
        except Exception:
            return False
        return any(p == r or p.startswith(r + sep) for r in roots)

    def hook(event, args):
        if event in block:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            if (mode and any(c in mode for c in "wax+")) or (flags & 3) != 0:
                if not inside(path, (root_write,)):
                    raise PermissionError(f"sandbox: writing {path} is not allowed")
            elif not inside(path, (root_write,) + roots_read):
                raise PermissionError(f"sandbox: reading {path} is not allowed")
        elif event in ("os.listdir", "os.scandir", "os.chdir"):
            path = args[0] if args else "."
            if path is not None and not isinstance(path, int) \
                    and not inside(path, (root_write,) + roots_read):
                raise PermissionError(f"sandbox: {event} {path} is not allowed")
        elif event in writes:
            for a in args:
                if isinstance(a, (str, bytes, os.PathLike)) and not inside(a, (root_write,)):
                    raise PermissionError(f"sandbox: {event} {a} is not allowed")

    sys.addaudithook(hook)


def _encode(v, depth=0, budget=None):
    """Plain data as tagged JSON; anything else as its type name (the caller treats such a
    value as unequal to every expected value)."""
    budget = budget if budget is not None else [100_000]
    budget[0] -= 1
    if budget[0] < 0 or depth > 50:
        raise ValueError("the returned value is too large")
    t = type(v)
    if v is None or t in (bool, int, str):
        if t is int and v.bit_length() > 4096:
            raise ValueError("the returned integer is too large")
        if t is str and len(v) > 100_000:
            raise ValueError("the returned string is too long")
        return v
    if t is float:
        return {"float": repr(v)}
    if t in (list, tuple, set, frozenset):
        items = [_encode(x, depth + 1, budget) for x in v]
        if t in (set, frozenset):
            items.sort(key=lambda x: json.dumps(x, sort_keys=True))
        return {t.__name__: items}
    if t is dict:
        return {"dict": [[_encode(k, depth + 1, budget), _encode(x, depth + 1, budget)]
                         for k, x in v.items()]}
    return {"opaque": t.__name__[:80]}


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    sys.stdin.close()
    out = os.fdopen(spec["fd"], "w", encoding="utf-8")
    nonce = spec["nonce"]

    def emit(**kw):
        out.write(nonce + json.dumps(kw) + "\n")
        out.flush()

    _limit(spec["limits"])
    _guard(tuple(spec["roots"]), os.path.realpath(os.getcwd()))
    ns = {"__name__": "solution"}
    try:
        exec(compile(spec["code"], "solution.py", "exec"), ns)
    except SystemExit:
        emit(stage="load", status="exit")
        os._exit(0)
    except BaseException as e:  # noqa: B036 - everything the code raises is its own failure
        emit(stage="load", status="error", detail=f"{type(e).__name__}: {e}"[:500])
        emit(stage="done")
        return
    emit(stage="load", status="ok")
    for i, (name, args) in enumerate(spec["calls"]):
        try:
            fn = ns.get(name)
            if not callable(fn):
                raise NameError(f"name {name!r} is not defined")
            value = _encode(fn(*[ast.literal_eval(a) for a in args]))
        except SystemExit:
            emit(stage="call", index=i, status="exit")
            os._exit(0)
        except BaseException as e:  # noqa: B036
            emit(stage="call", index=i, status="error", detail=f"{type(e).__name__}: {e}"[:500])
        else:
            emit(stage="call", index=i, status="value", value=value)
    emit(stage="done")


if __name__ == "__main__":
    main()
