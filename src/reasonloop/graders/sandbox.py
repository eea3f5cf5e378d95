"""Run untrusted code in a child process that cannot hurt the caller, and always get an answer back.

`run_sandboxed(argv, files=..., stdin=..., limits=...)` runs `argv` in a fresh
private directory holding `files` and returns a `SandboxResult`; it never raises
for anything the child does, never hangs past the wall limit and leaves no
process behind. It holds the same with or without root.

Isolation (`SandboxLimits.isolation`, or `$REASONLOOP_SANDBOX` when that is `auto`):

- `bwrap`: bubblewrap (Debian/Ubuntu package `bubblewrap`) builds the sandbox.
- `namespaces`: our own code does the same with `unshare` (`sandbox_child.py`).
- `auto` (default): bwrap when it is installed and works here, else namespaces.
  Where the kernel refuses both (unprivileged user namespaces disabled),
  `run_sandboxed` raises `SandboxUnavailable` with one line saying so and what to
  do; nothing is run half-contained unless the user asks for
- `weak`: no namespaces, a warning once per process. See "weak" below.

What the program sees and cannot do (bwrap and namespaces alike):

- processes: its own PID namespace. Every process it starts dies when the grade
  ends (the namespace's PID 1 is killed and the kernel kills the rest, `setsid`
  or not); the caller is not visible, so it cannot be signalled
  (`os.getppid()` is 0 or the namespace's PID 1).
- files: a new root, read-only: `/usr`, `/etc`, `/bin`, `/lib*` and the
  interpreter's directories (`sys.prefix`, `sys.base_prefix`, every `sys.path`
  entry, wherever it is, even under a directory others cannot enter) bound
  read-only; nothing else of the caller's filesystem. `/tmp`, `/var/tmp`,
  `/run/lock` and `/dev/shm` are private, size-limited tmpfs; the working
  directory (`/tmp/sandbox`, also `$HOME` and `$TMPDIR`) lives in that `/tmp`,
  so nothing it writes reaches the disk. A `sys.path` entry that is one of those
  directories (or above one, like `/`) is not bound: the private one takes its
  place. A fresh `/proc` (only its own processes) and a minimal `/dev`.
- network: a new network namespace (only loopback). Unix sockets: a seccomp
  filter refuses `socket(AF_UNIX)` (a read-only bind does not stop a `connect`),
  `io_uring`, the kernel keyrings and new user namespaces.
- uid: not root, it keeps the caller's uid, inside a user namespace that maps
  only that uid (no capability outside). As root, it gets a uid of its own (a
  number no account uses, unique per run), so `RLIMIT_NPROC` counts only its
  processes and root's files are out of reach.
- limits: CPU time, address space, file size, open files, processes
  (`setrlimit`, set inside the namespaces), wall time (the caller kills it).
- environment: a fixed, minimal one; nothing of the caller's.
- output: stdout and stderr through pipes, at most `max_output_bytes` of each kept.

weak (only when chosen): limits, the minimal environment, a private working
directory, a seccomp filter refusing every socket (no network, no Unix socket),
a uid of its own when root, and a subreaper that kills every descendant when the
program ends. Not contained: the program sees the whole filesystem and may write
wherever the caller may, sees other processes and may signal the caller's (same
uid, when not root). Use it only for code you would run yourself.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from reasonloop.core import ReasonloopError
from reasonloop.graders import sandbox_child

SANDBOX_UID_BASE = 1_000_000_000  # far above any account; each run gets BASE + a unique offset
ISOLATION = ("auto", "bwrap", "namespaces", "weak")
WORKDIR = "/tmp/sandbox"  # the program's working directory, in its private /tmp
PRIVATE = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm")  # a private tmpfs each
SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # bound read-only (or symlinked)
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# Never bound, even when on sys.path: they, or what is under them, are made private or fresh.
NOT_BOUND = ("/", "/proc", "/dev", "/run", "/var", "/sys", *PRIVATE)
# The stages run as the top-level module `sandbox_child` (its cached bytecode is reused: compiling it costs more
# than starting the interpreter).
CHILD_DIR = os.path.dirname(os.path.abspath(sandbox_child.__file__))
STAGE = f"import sys; sys.path.append({CHILD_DIR!r}); import sandbox_child; sandbox_child.main(sys.argv[1:])"
_RUNS = itertools.count()


class SandboxUnavailable(ReasonloopError):
    """This machine cannot isolate a program the way the chosen isolation needs (no user namespaces, ...)."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandboxed run may use."""

    wall_s: float = 5.0  # wall-clock limit, enforced by the parent
    cpu_s: int = 5  # CPU seconds (RLIMIT_CPU); the kernel sends SIGXCPU, then SIGKILL a second later
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    max_processes: int = 32  # processes and threads (RLIMIT_NPROC, counted inside the sandbox's namespace)
    max_file_mb: int = 16  # largest file it may write (RLIMIT_FSIZE); each private tmpfs holds 4x this
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_output_bytes: int = 1 << 20  # bytes of stdout and of stderr kept; the rest is dropped
    isolation: str = "auto"  # auto, bwrap, namespaces or weak (see the module docstring)


@dataclass
class SandboxResult:
    """What a sandboxed run did. `error` is None for a run that finished by itself within its limits."""

    returncode: int | None  # exit status; -N when it died of signal N (reported as 128 + N by PID 1)
    stdout: bytes = b""
    stderr: bytes = b""
    channel: bytes = b""  # what the child wrote to the fd named in $REASONLOOP_RESULT_FD
    wall_s: float = 0.0
    timed_out: bool = False
    truncated: bool = False  # stdout or stderr exceeded max_output_bytes
    error: str | None = None
    isolation: str = ""  # which isolation ran it: bwrap, namespaces or weak
    pid: int | None = None  # the first process started (its session and process group id)
    init_pid: int | None = None  # PID 1 of the sandbox's PID namespace, as the caller sees it
    pid_namespace: str | None = None  # that namespace ("pid:[...]"), to check that nothing of it is left
    uid: int | None = None  # the uid it ran as, when the caller is root

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0


# --- which isolation ------------------------------------------------------------------


def bwrap_path() -> str | None:
    return shutil.which("bwrap", path=os.environ.get("PATH", "") + ":/usr/bin:/bin")


_PROBED: dict[tuple[str, int], str | None] = {}  # (isolation, euid) -> None when it works, else why not
_WARNED: list[bool] = []


def _probe(isolation: str) -> str | None:
    """None when `isolation` runs a trivial program here, else the reason it does not (tried once per process)."""
    key = (isolation, os.geteuid())
    if key not in _PROBED:
        if isolation == "bwrap" and not bwrap_path():
            _PROBED[key] = "bwrap is not installed (apt-get install bubblewrap)"
        else:
            argv = [sys.executable, "-I", "-S", "-c", "print('ok')"]
            res = _run(argv, {}, b"", SandboxLimits(wall_s=20), isolation)
            ok = res.ok and res.stdout == b"ok\n"
            lines = res.stderr.decode("utf-8", "replace").strip().splitlines()
            _PROBED[key] = None if ok else (lines[-1] if lines else res.error or f"exit status {res.returncode}")
    return _PROBED[key]


def _userns_settings() -> str:
    """The kernel settings that refuse unprivileged user namespaces, as found here."""
    found = []
    for path, bad in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
    ):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value == bad:
            found.append(f"{path.removeprefix('/proc/sys/').replace('/', '.')}={value}")
    return ", ".join(found) or "a security policy (container seccomp, AppArmor, SELinux)"


def resolve_isolation(requested: str = "auto") -> str:
    """The isolation to use: `requested`, or for `auto` `$REASONLOOP_SANDBOX`, else the best that works here.

    Raises `SandboxUnavailable` (one line: why, and the choices) when nothing contained works.
    """
    choice = requested if requested != "auto" else (os.environ.get("REASONLOOP_SANDBOX") or "auto")
    if choice not in ISOLATION:
        raise SandboxUnavailable(f"sandbox isolation '{choice}' is not one of {', '.join(ISOLATION)}")
    if choice == "weak":
        if not _WARNED:
            _WARNED.append(True)
            warnings.warn(
                "python grader: weak isolation (no namespaces): the graded code can read and write what you can; "
                "see the docstring of reasonloop.graders.sandbox",
                stacklevel=2,
            )
        return "weak"
    reasons = []
    for candidate in ("bwrap", "namespaces") if choice == "auto" else (choice,):
        why = _probe(candidate)
        if why is None:
            return candidate
        reasons.append(f"{candidate}: {why}")
    raise SandboxUnavailable(
        f"cannot sandbox graded code here ({'; '.join(reasons)}); the kernel refuses unprivileged user namespaces "
        f"({_userns_settings()}). Allow them, run as root, or accept weaker isolation with REASONLOOP_SANDBOX=weak "
        "(or 'isolation: weak' in the grader config)"
    )


# --- what the sandbox binds -------------------------------------------------------------


def _is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def interpreter_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """The interpreter's directories and every `sys.path` entry, resolved, that the program needs bound.

    Entries inside a system directory (already bound) are dropped, as are the
    private directories and anything above them (`/tmp` on `sys.path` is replaced
    by the private `/tmp`), and entries inside another kept entry.
    """
    wanted = [sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(sys.executable), *sys.path, *extra]
    found: set[str] = set()
    for p in wanted:
        if not p or not os.path.exists(p):
            continue
        for q in {os.path.abspath(p), os.path.realpath(p)}:
            if any(_is_within(q, s) for s in SYSTEM) or any(_is_within(n, q) for n in NOT_BOUND):
                continue
            found.add(q)
    return sorted(p for p in found if not any(p != o and _is_within(p, o) for o in found))


def _system_view() -> list[list[str]]:
    """[path, "bind" | "symlink", symlink target] for each system directory present here."""
    out = []
    for path in SYSTEM:
        if os.path.islink(path):
            out.append([path, "symlink", os.readlink(path)])
        elif os.path.isdir(path):
            out.append([path, "bind", ""])
    return out


def _bwrap_argv(spec: dict) -> list[str]:
    argv = [bwrap_path() or "bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    argv += ["--hostname", "sandbox", "--info-fd", str(spec["info_fd"])]
    for path, kind, target in spec["system"]:
        argv += ["--symlink", target, path] if kind == "symlink" else ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for path, mode, size in spec["private"]:
        argv += ["--perms", mode, "--size", str(size * 1024 * 1024), "--tmpfs", path]
    argv += ["--perms", "0700", "--dir", WORKDIR, "--chdir", WORKDIR]
    for path in spec["binds"]:
        argv += ["--ro-bind-try", path, path]
    argv += ["--remount-ro", "/"]
    inner = [sys.executable, "-I", "-S", "-c", STAGE, "inside", str(spec["spec_fd"])]
    return [*argv, "--", *inner]


# --- running ----------------------------------------------------------------------------


def _env(workdir: str, channel_fd: int) -> dict[str, str]:
    # Nothing of the caller's environment: only what a Python program needs to start.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "REASONLOOP_RESULT_FD": str(channel_fd),
    }


def run_sandboxed(
    argv: list[str],
    *,
    files: dict[str, str] | None = None,
    stdin: bytes = b"",
    limits: SandboxLimits = SandboxLimits(),
) -> SandboxResult:
    """Run `argv` in a fresh directory holding `files`, under `limits`. Never raises for what the child does;
    raises `SandboxUnavailable` when this machine cannot give the isolation asked for.

    >>> r = run_sandboxed([sys.executable, "-I", "-c", "print(6 * 7)"])
    >>> (r.ok, r.stdout)
    (True, b'42\\n')
    >>> r = run_sandboxed([sys.executable, "-I", "-c", "while True: pass"], limits=SandboxLimits(wall_s=0.5))
    >>> (r.ok, r.timed_out, r.error)
    (False, True, 'timed out after 0.5 s')
    """
    return _run(argv, files or {}, stdin, limits, resolve_isolation(limits.isolation))


def _run(argv: list[str], files: dict[str, str], stdin: bytes, limits: SandboxLimits, isolation: str) -> SandboxResult:
    t0 = time.perf_counter()
    root = os.geteuid() == 0
    uid = SANDBOX_UID_BASE + (os.getpid() % 4_194_304) * 64 + next(_RUNS) % 64 if root else None
    base = None
    workdir = WORKDIR
    if isolation == "weak":  # no private /tmp: a real directory, removed afterwards
        base = tempfile.mkdtemp(prefix="reasonloop-sbx-")
        os.chmod(base, 0o711)
        workdir = os.path.join(base, "work")
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
    pipes = {name: os.pipe() for name in ("channel", "info", "started")}
    spec_fd = os.memfd_create("reasonloop-sandbox-spec")
    size_mb = 4 * limits.max_file_mb + sum(len(t) for t in files.values()) // (1 << 20) + 1
    spec = {
        "argv": argv,
        "files": files,
        "workdir": workdir,
        "uid": uid,
        "limits": {
            "cpu_s": limits.cpu_s,
            "memory_mb": limits.memory_mb,
            "max_file_mb": limits.max_file_mb,
            "max_open_files": limits.max_open_files,
            "nproc": limits.max_processes + 2,  # PID 1 and, under bwrap, its monitor run as the same user
        },
        "system": _system_view(),
        "devices": list(DEVICES),
        "private": [[p, "1777", size_mb] for p in PRIVATE],
        "binds": interpreter_paths((CHILD_DIR,)),
        "spec_fd": spec_fd,
        "channel_fd": pipes["channel"][1],
        "info_fd": pipes["info"][1],
        "started_fd": pipes["started"][1],
    }
    stage = [sys.executable, "-I", "-S", "-c", STAGE]
    if isolation == "bwrap":
        spec["bwrap"] = _bwrap_argv(spec)
        cmd = [*stage, "bwrap-root", str(spec_fd)] if root else spec["bwrap"]
    else:
        cmd = [*stage, isolation, str(spec_fd)]
    os.write(spec_fd, repr(spec).encode())
    stdin_file = tempfile.TemporaryFile()
    stdin_file.write(stdin)
    stdin_file.seek(0)
    try:
        try:
            proc = subprocess.Popen(
                cmd,
                env=_env(workdir, pipes["channel"][1]),
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(spec_fd, *(w for _, w in pipes.values())),
                start_new_session=True,  # its own process group and session, killed as one
            )
        except OSError as e:
            for r, _ in pipes.values():
                os.close(r)
            return SandboxResult(None, error=f"could not start the sandbox: {e}", isolation=isolation)
        finally:
            for _, w in pipes.values():
                os.close(w)
            os.close(spec_fd)
            stdin_file.close()
        result = _collect(proc, {name: r for name, (r, _) in pipes.items()}, isolation, limits, t0)
        result.isolation, result.pid, result.uid = isolation, proc.pid, uid
        return result
    finally:
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


class _Init:
    """The sandbox's PID 1, held by a pidfd (no pid-reuse race): killing it ends the whole namespace."""

    def __init__(self, info: bytes, parent: int):
        self.pid: int | None = None
        self.fd: int | None = None
        self.namespace: str | None = None
        try:
            pid = int(json.loads(info.decode())["child-pid"])
            fd = os.pidfd_open(pid)
        except (ValueError, KeyError, TypeError, OSError):
            return
        try:  # the pidfd is ours only if that pid is still the child of the process we started
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) != parent:
                raise OSError
            self.namespace = os.readlink(f"/proc/{pid}/ns/pid")
        except (OSError, ValueError):
            os.close(fd)
            return
        self.pid, self.fd = pid, fd

    def kill_and_wait(self, timeout: float = 1.0) -> None:
        if self.fd is None:
            return
        try:
            signal.pidfd_send_signal(self.fd, signal.SIGKILL)
            select.select([self.fd], [], [], timeout)  # readable once it exited, after the kernel killed the rest
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _collect(proc: subprocess.Popen, fds: dict[str, int], isolation: str, limits: SandboxLimits, t0: float):
    """Read the child's output under the caps until it exits or the wall limit passes, then kill what is left."""
    caps = {"stdout": limits.max_output_bytes, "stderr": limits.max_output_bytes, "channel": 1 << 16}
    caps.update(info=1 << 12, started=16)
    bufs = {k: bytearray() for k in caps}
    streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}  # type: ignore[union-attr]
    streams.update({fd: name for name, fd in fds.items()})
    sel = selectors.DefaultSelector()
    for fd, name in streams.items():
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
    deadline = t0 + limits.wall_s
    timed_out = truncated = False
    exited_at: float | None = None
    init: _Init | None = None
    try:
        while sel.get_map():
            now = time.perf_counter()
            if now >= deadline:
                timed_out = proc.poll() is None
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.2:
                break  # the main process is gone; a leftover holding the pipes open is killed below
            for key, _ in sel.select(timeout=min(0.05, deadline - now)):
                name = key.data
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    if name == "info":
                        init = _Init(bytes(bufs["info"]), proc.pid)
                    continue
                room = caps[name] - len(bufs[name])
                if room > 0:
                    bufs[name] += chunk[:room]
                if len(chunk) > room:
                    truncated = truncated or name in ("stdout", "stderr")
        if not timed_out and proc.poll() is None:  # it closed its pipes but runs on
            try:
                proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if init is None and bufs["info"]:
            init = _Init(bytes(bufs["info"]), proc.pid)
        _kill_all(proc, init, isolation)
    finally:
        sel.close()
        for fd in fds.values():
            os.close(fd)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    wall = time.perf_counter() - t0
    code = proc.returncode
    if code is not None and 128 < code <= 128 + 64:  # PID 1 and bubblewrap report a death by signal N as 128 + N
        code = 128 - code
    started = bool(bufs["started"])
    if timed_out:
        error: str | None = f"timed out after {limits.wall_s:g} s"
    elif not started:
        lines = bufs["stderr"].decode("utf-8", "replace").strip().splitlines()
        error = "could not start the sandbox: " + (lines[-1] if lines else f"exit status {proc.returncode}")
    else:
        error = _describe(code, limits)
    return SandboxResult(
        returncode=None if timed_out else code,
        stdout=bytes(bufs["stdout"]),
        stderr=bytes(bufs["stderr"]),
        channel=bytes(bufs["channel"]),
        wall_s=wall,
        timed_out=timed_out,
        truncated=truncated,
        error=error,
        init_pid=init.pid if init else None,
        pid_namespace=init.namespace if init else None,
    )


def _kill_all(proc: subprocess.Popen, init: _Init | None, isolation: str) -> None:
    """End the grade: PID 1 of its namespace (the kernel kills the rest), or in weak mode ask the subreaper
    stage to kill its descendants; then the process group we started."""
    if init is not None:
        init.kill_and_wait()
    elif isolation == "weak" and proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=1.0)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _describe(returncode: int | None, limits: SandboxLimits) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    sig = -returncode
    why = {
        signal.SIGXCPU: f"CPU limit of {limits.cpu_s} s",
        signal.SIGXFSZ: f"file size limit of {limits.max_file_mb} MB",
        signal.SIGSEGV: "segmentation fault (stack overflow or memory limit)",
    }.get(sig, "")
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    return f"killed by {name}" + (f" ({why})" if why else "")
