"""Run untrusted code in a child process that cannot hurt the caller, and always get an answer back.

`run_sandboxed(argv, files=..., stdin=..., limits=...)` writes `files` into a
fresh temporary directory, runs `argv` there and returns a `SandboxResult`; it
never raises for anything the child does, never hangs past the wall limit and
leaves no process behind.

How each limit is enforced (all set in the child between fork and exec):

- wall time: the parent's read loop has a deadline; past it the child is killed.
- CPU time, address space, file size, open files: `resource.setrlimit`
  (RLIMIT_CPU soft/hard, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE; RLIMIT_CORE=0).
- processes: RLIMIT_NPROC. The kernel ignores it for uid 0, so when the caller is
  root the child also switches to a uid of its own (`setgroups([])`, `setgid`,
  `setuid` to a number no account uses, unique per run). That uid is also what
  makes cleanup airtight: a process can leave the process group with `setsid`
  but never change its uid back, so cleanup kills the group and then every
  process of that uid (`kill(-1, SIGKILL)` from a helper running as that uid).
- files: the unprivileged uid owns only the working directory, so the caller's
  files (and `/proc/<caller>/environ`) are out of reach by ordinary permissions.
  As root the child also gets a private mount namespace in which the shared
  world-writable directories (`/tmp`, `/var/tmp`, `/dev/shm`) are empty private
  tmpfs copies (it cannot leave files there), and a directory others cannot enter
  that holds the interpreter (e.g. a pyenv under `/root`) is covered by an empty
  tmpfs with only the interpreter's directories bound back, hiding the rest.
- network: as root, a new empty network namespace (`unshare(CLONE_NEWNET)`: only
  a loopback interface, down). Not root: `unshare(CLONE_NEWUSER|CLONE_NEWNET)`
  when unprivileged user namespaces are allowed; otherwise `SandboxResult.isolated`
  says the network was not cut and `require_isolation` makes that an error.
- environment: the child gets a fixed, minimal environment, nothing of the caller's.
- output: stdout and stderr are read through pipes; at most `max_output_bytes`
  of each are kept, the rest is read and dropped.

Without root (no uid switch) a hostile child can still signal processes of the
same user and escape cleanup with `setsid`; run graders as root in a container,
or in a throwaway VM, when the code is truly adversarial.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
SANDBOX_UID_BASE = 1_000_000_000  # far above any account; each run gets BASE + a unique offset
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded in the parent: the child only calls into it
_RUNS = itertools.count()


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandboxed run may use."""

    wall_s: float = 5.0  # wall-clock limit, enforced by the parent
    cpu_s: int = 5  # CPU seconds (RLIMIT_CPU); the kernel sends SIGXCPU, then SIGKILL a second later
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    max_processes: int = 32  # processes and threads of the sandbox uid (RLIMIT_NPROC)
    max_file_mb: int = 16  # largest file it may write (RLIMIT_FSIZE)
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_output_bytes: int = 1 << 20  # bytes of stdout and of stderr kept; the rest is dropped
    require_isolation: bool = False  # refuse to run where the network cannot be cut off


@dataclass
class SandboxResult:
    """What a sandboxed run did. `error` is None for a run that finished by itself within its limits."""

    returncode: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    channel: bytes = b""  # what the child wrote to the fd named in $REASONLOOP_RESULT_FD
    wall_s: float = 0.0
    timed_out: bool = False
    truncated: bool = False  # stdout or stderr exceeded max_output_bytes
    isolated: bool = True  # network namespace created
    error: str | None = None
    pid: int | None = None  # the child's pid, which is also its process group and session id
    uid: int | None = None  # the uid it ran as, when the caller is root

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0


# --- what the child does between fork and exec ----------------------------------


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_LIBC.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


@dataclass(frozen=True)
class _ChildPlan:
    """Everything the child needs, computed in the parent so the child only makes system calls."""

    limits: SandboxLimits
    uid: int | None  # switch to this uid (root callers only)
    netns: int  # unshare flags for the network (0: none)
    covers: tuple[tuple[str, str], ...]  # (directory, tmpfs mode) hidden under an empty private tmpfs
    keep: tuple[str, ...]  # directories under a cover that stay visible (interpreter, working directory)
    workdir: str

    def __call__(self) -> None:
        flags = self.netns | (CLONE_NEWNS if self.covers else 0)
        if flags:
            _check(_LIBC.unshare(flags), "unshare")
        if self.covers:
            _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the caller
            # Hold each kept directory by an fd, cover its ancestors, then bind it back from the fd.
            fds = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in self.keep]
            size = 4 * self.limits.max_file_mb
            for cover, mode in self.covers:
                _mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size={size}m")
            for path, fd in zip(self.keep, fds):
                os.makedirs(path, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
                os.close(fd)
            os.chdir(self.workdir)
        lim = self.limits
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_s, lim.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb * mb, lim.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.max_file_mb * mb, lim.max_file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.max_open_files, lim.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (lim.max_processes, lim.max_processes))
        if self.uid is not None:
            os.setgroups([])
            os.setgid(self.uid)
            os.setuid(self.uid)


# --- the parent side --------------------------------------------------------------


def _probe_userns_net() -> bool:
    """Can this (non-root) process make a user + network namespace? Tried in a throwaway child."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _LIBC.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # world-writable: private, empty copies in the child


def _hidden_paths() -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """Directories to cover in the child, and the directories under them the interpreter needs kept visible.

    Covered: the shared world-writable directories (so the child cannot leave files
    there) and any directory others cannot enter that holds the interpreter or its
    packages (e.g. `/root` holding a pyenv), which is then made enterable.
    """
    needed = {sys.base_prefix, sys.prefix, *(p for p in sys.path if p and os.path.isdir(p))}
    covers = {d: "1777" for d in SHARED_TMP if os.path.isdir(d) and not os.path.islink(d)}
    keep: set[str] = set()
    for path in sorted(os.path.realpath(p) for p in needed):
        parts = Path(path).parts
        for i in range(2, len(parts) + 1):
            d = str(Path(*parts[:i]))
            if d in covers or not os.stat(d).st_mode & 0o001:  # covered, or others lack search permission
                covers.setdefault(d, "755")
                keep.add(path)
                break
    nested = [c for c in covers if any(c.startswith(o + "/") for o in covers)]
    for c in nested:
        del covers[c]
    keep = {k for k in keep if not any(k.startswith(o + "/") for o in keep)}
    return tuple(sorted(covers.items())), tuple(sorted(keep))


_PLATFORM: dict[str, object] = {}


def _platform() -> dict[str, object]:
    """What this machine allows, found once per process."""
    if not _PLATFORM:
        root = os.geteuid() == 0
        _PLATFORM["root"] = root
        _PLATFORM["netns"] = CLONE_NEWNET if root else (CLONE_NEWUSER | CLONE_NEWNET if _probe_userns_net() else 0)
        _PLATFORM["hidden"] = _hidden_paths() if root else ((), ())
    return _PLATFORM


def _uid_processes(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is `uid`."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 ").split()[0]) == uid and not fields.get("State", "").strip().startswith("Z"):
            pids.append(int(entry.name))
    return pids


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid`, from a helper that takes that uid (kill(-1) spares only the sender)."""
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if not _uid_processes(uid):
            return
        time.sleep(0.01)


def _kill_all(proc: subprocess.Popen, uid: int | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        _kill_uid(uid)
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
    """Run `argv` in a fresh directory holding `files`, under `limits`. Never raises for what the child does.

    >>> r = run_sandboxed([sys.executable, "-I", "-c", "print(6 * 7)"])
    >>> (r.ok, r.stdout)
    (True, b'42\\n')
    >>> r = run_sandboxed([sys.executable, "-I", "-c", "while True: pass"], limits=SandboxLimits(wall_s=0.5))
    >>> (r.ok, r.timed_out, r.error)
    (False, True, 'timed out after 0.5 s')
    """
    plat = _platform()
    isolated = bool(plat["netns"])
    if limits.require_isolation and not isolated:
        return SandboxResult(None, isolated=False, error="cannot cut off the network here (require_isolation)")
    base = tempfile.mkdtemp(prefix="reasonloop-sbx-")
    uid = SANDBOX_UID_BASE + (os.getpid() % 4_194_304) * 64 + next(_RUNS) % 64 if plat["root"] else None
    t0 = time.perf_counter()
    try:
        os.chmod(base, 0o711)  # the sandbox uid may pass through to work/, not list or write base/
        workdir = os.path.join(base, "work")
        os.mkdir(workdir, 0o700)
        for name, text in (files or {}).items():
            target = Path(workdir, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        covers, keep = plat["hidden"]  # type: ignore[misc]
        if any(workdir.startswith(c + "/") for c, _ in covers):
            keep = (*keep, workdir)
        if uid is not None:
            for dirpath, _, names in os.walk(workdir):
                for p in [dirpath, *(os.path.join(dirpath, n) for n in names)]:
                    os.chown(p, uid, uid)
        stdin_file = tempfile.TemporaryFile(dir=base)
        stdin_file.write(stdin)
        stdin_file.seek(0)
        chan_r, chan_w = os.pipe()
        plan = _ChildPlan(limits, uid, int(plat["netns"]), covers, keep, workdir)  # type: ignore[arg-type]
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=_env(workdir, chan_w),
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(chan_w,),
                start_new_session=True,  # its own process group and session, killed as one
                preexec_fn=plan,
            )
        except (OSError, subprocess.SubprocessError) as e:
            os.close(chan_r)
            return SandboxResult(None, isolated=isolated, error=f"could not start the sandbox: {e}")
        finally:
            os.close(chan_w)
            stdin_file.close()
        result = _collect(proc, chan_r, uid, limits, t0)
        result.isolated, result.pid, result.uid = isolated, proc.pid, uid
        return result
    finally:
        if uid is not None and _uid_processes(uid):
            _kill_uid(uid)
        shutil.rmtree(base, ignore_errors=True)


def _collect(proc: subprocess.Popen, chan_r: int, uid: int | None, limits: SandboxLimits, t0: float) -> SandboxResult:
    """Read the child's output under the caps until it exits or the wall limit passes, then kill what is left."""
    caps = {"stdout": limits.max_output_bytes, "stderr": limits.max_output_bytes, "channel": 1 << 16}
    bufs = {k: bytearray() for k in caps}
    streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr", chan_r: "channel"}  # type: ignore[union-attr]
    sel = selectors.DefaultSelector()
    for fd, name in streams.items():
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
    deadline = t0 + limits.wall_s
    timed_out = truncated = False
    exited_at: float | None = None
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
                    continue
                room = caps[name] - len(bufs[name])
                if room > 0:
                    bufs[name] += chunk[:room]
                if len(chunk) > room:
                    truncated = truncated or name != "channel"
        if not timed_out and proc.poll() is None:  # it closed its pipes but runs on
            try:
                proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                timed_out = True
        _kill_all(proc, uid)
    finally:
        sel.close()
        os.close(chan_r)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    wall = time.perf_counter() - t0
    error = f"timed out after {limits.wall_s:g} s" if timed_out else _describe(proc.returncode, limits)
    return SandboxResult(
        returncode=None if timed_out else proc.returncode,
        stdout=bytes(bufs["stdout"]),
        stderr=bytes(bufs["stderr"]),
        channel=bytes(bufs["channel"]),
        wall_s=wall,
        timed_out=timed_out,
        truncated=truncated,
        error=error,
    )
