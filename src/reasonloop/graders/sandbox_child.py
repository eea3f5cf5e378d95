"""The sandbox's own processes: namespaces, mounts, limits and the seccomp filter, set up before the program runs.

`sandbox.py` runs this file as a top-level module of ``python -I -S`` with
arguments ``STAGE SPEC_FD``: a fresh interpreter that imports nothing but a few
built-in modules (no site packages, no environment variables), so it starts in
about 15 ms and shares no lock or thread with the caller. SPEC_FD holds the
spec (argv, files, limits, what to bind, the sandbox uid, the fds to report on)
as a Python literal (`repr` of a dict, read back with `eval` on no builtins:
no `json` import, which costs more than the rest). Stages:

- ``namespaces`` (our own containment; the fallback when bubblewrap is missing):
  ``unshare`` a mount, PID, network, IPC and UTS namespace, plus a user
  namespace when the caller is not root (mapping only the caller's own uid, so
  the program gets no capability over anything outside). The first child is
  PID 1 of the new PID namespace: it builds a new root (a read-only tmpfs with
  the system directories and the interpreter's paths bound read-only, a fresh
  ``/proc``, a minimal ``/dev``, private tmpfs ``/tmp``, ``/var/tmp``,
  ``/run/lock``, ``/dev/shm``), ``pivot_root``\\ s into it, forks the program
  and reaps. When the program exits, PID 1 exits, and the kernel kills every
  other process of the namespace: nothing a grade started outlives it.
- ``bwrap-root``: a root caller's step before bubblewrap. bubblewrap runs as the
  sandbox uid, which cannot enter a directory like ``/root`` that holds a pyenv;
  in a private mount namespace such a directory is covered by an empty tmpfs
  with only the needed paths bound back, then the uid is dropped and bubblewrap
  exec'd.
- ``inside``: runs as the first command inside bubblewrap: writes the files,
  sets the limits and the seccomp filter, execs the program.
- ``weak``: no namespaces (the user chose weaker isolation): limits, the seccomp
  filter (no sockets at all), a uid of its own when root; this process is a
  child subreaper and kills every descendant left when the program exits or when
  the caller sends SIGTERM.

Every stage writes one byte to the ``started`` fd just before exec'ing the
program, so the caller can tell "the sandbox could not start" from "the program
failed". An exit status above 128 means the program died of signal status-128
(what PID 1 and bubblewrap report).
"""

from __future__ import annotations

import _signal
import ctypes
import os
import resource
import struct
import sys
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
KEPT_MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096  # + noatime, nodiratime, relatime
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER = 1, 38, 22, 36
SECCOMP_MODE_FILTER = 2
SIGKILL, SIGTERM = 9, 15
FAILED_TO_START = 125  # exit status of a stage that could not set the sandbox up (its reason is on stderr)

# Per architecture: seccomp's AUDIT_ARCH and the system call numbers used here.
_NAMES = ("audit", "socket", "clone", "unshare", "clone3", "io_uring_setup", "add_key", "request_key", "keyctl")
_NAMES += ("pivot_root", "mount_setattr")
ARCHES = {
    "x86_64": dict(zip(_NAMES, (0xC000003E, 41, 56, 272, 435, 425, 248, 249, 250, 155, 442))),
    "aarch64": dict(zip(_NAMES, (0xC00000B7, 198, 220, 97, 435, 425, 217, 218, 219, 41, 442))),
}
ARCH = ARCHES.get(os.uname().machine)

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_LIBC.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _prctl(option: int, arg: int) -> None:
    _check(_LIBC.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl {option}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# --- seccomp ------------------------------------------------------------------------


def seccomp_program(deny_all_sockets: bool, arch: dict[str, int] | None = ARCH) -> bytes:
    """A classic-BPF seccomp filter (`struct sock_filter[]`, native byte order) for the sandboxed program.

    Refused: `socket(AF_UNIX, ...)` (or every `socket()` with `deny_all_sockets`), so
    no Unix socket on a bound path is reachable (a read-only mount does not stop a
    `connect`); new namespaces (`unshare`, `clone` with CLONE_NEWUSER, `clone3`,
    which the C library then replaces with `clone`); `io_uring` (it opens sockets
    without the `socket` call); the kernel keyrings. Another architecture's calls
    (i386 `int 0x80`, x32) kill the process. Everything else is allowed.
    """
    if arch is None:
        raise OSError(f"no seccomp filter for {os.uname().machine}")
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, eacces, enosys = 0x50000 | 1, 0x50000 | 13, 0x50000 | 38
    rules = [  # (syscall, argument check or None, action)
        ("socket", None if deny_all_sockets else ("eq", 0, 1), eacces),  # 1 = AF_UNIX
        ("unshare", None, eperm),
        ("clone", ("set", 0, CLONE_NEWUSER), eperm),
        ("clone3", None, enosys),
        ("io_uring_setup", None, enosys),
        ("add_key", None, enosys),
        ("request_key", None, enosys),
        ("keyctl", None, enosys),
    ]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    code: list[tuple[int, str | int, str | int, int]] = []  # (op, jt, jf, k); jumps are label names or 0

    def emit(op: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        code.append((op, jt, jf, k))

    labels: dict[str, int] = {}
    emit(ld, 4)  # seccomp_data.arch
    emit(jeq, arch["audit"], 0, "kill")
    emit(ld, 0)  # seccomp_data.nr
    if arch["audit"] == ARCHES["x86_64"]["audit"]:
        emit(jge, 0x40000000, "kill", 0)  # x32 system calls
    for i, (name, check, action) in enumerate(rules):
        emit(jeq, arch[name], 0, f"next{i}")
        if check is not None:
            kind, arg, value = check
            emit(ld, 16 + 8 * arg)  # low 32 bits of seccomp_data.args[arg] (little-endian)
            emit(jeq if kind == "eq" else jset, value, 0, "allow")
        emit(ret, action)
        labels[f"next{i}"] = len(code)
    labels["allow"] = len(code)
    emit(ret, allow)
    labels["kill"] = len(code)
    emit(ret, kill)
    out = b""
    for i, (op, jt, jf, k) in enumerate(code):
        jt, jf = (labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        out += struct.pack("=HBBI", op, jt, jf, k)
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp(program: bytes) -> None:
    """Install `program` for this process and its children (no_new_privs first, as an unprivileged filter needs)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check(_LIBC.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog), 0, 0), "seccomp")


# --- what every stage does last: become the program ---------------------------------


def _set_limits(lim: dict[str, int]) -> None:
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["max_file_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"],) * 2)


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _become_program(spec: dict, *, deny_all_sockets: bool) -> None:
    """Write the files, set the limits and the filter, say `started`, exec the program. Never returns."""
    try:
        if spec["uid"] is not None and os.geteuid() == 0:
            _drop_to(spec["uid"])
        os.chdir(spec["workdir"])
        for name, text in spec["files"].items():
            d = os.path.dirname(name)
            if d:
                os.makedirs(d, exist_ok=True)
            with open(name, "w", encoding="utf-8") as f:
                f.write(text)
        _set_limits(spec["limits"])
        install_seccomp(seccomp_program(deny_all_sockets))
        for fd in (spec["spec_fd"], spec["info_fd"]):
            _close(fd)
        os.write(spec["started_fd"], b"x")
        os.close(spec["started_fd"])
    except OSError as e:
        _fail(f"could not set up the program: {e}")
    try:
        os.execvp(spec["argv"][0], spec["argv"])
    except OSError as e:
        os.write(2, f"cannot run {spec['argv'][0]}: {e.strerror}\n".encode())
        os._exit(127)


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _fail(message: str) -> None:
    os.write(2, f"reasonloop sandbox: {message}\n".encode())
    os._exit(FAILED_TO_START)


def exit_status(status: int) -> int:
    """A wait status as one exit code: the code itself, or 128 + the signal that killed the process."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


# --- namespaces: our own containment ------------------------------------------------


def _bind_read_only(fd: int, target: str) -> None:
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    attr = struct.pack("=QQQQ", MS_RDONLY, 0, 0, 0)  # struct mount_attr: MOUNT_ATTR_RDONLY
    buf = ctypes.create_string_buffer(attr, len(attr))
    at_fdcwd, at_recursive = -100, 0x8000
    if ARCH and _LIBC.syscall(ARCH["mount_setattr"], at_fdcwd, target.encode(), at_recursive, buf, len(attr)) == 0:
        return
    # Older kernels: remount the top mount read-only, keeping the flags the kernel locks (nosuid, nodev, ...).
    kept = os.statvfs(target).f_flag & KEPT_MOUNT_FLAGS
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def _make_mountpoint(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _loopback_up() -> None:
    """Bring `lo` up in the new network namespace (as bubblewrap does), through libc: importing `socket` costs
    more than the rest of this stage."""
    fd = _LIBC.socket(2, 2, 0)  # AF_INET, SOCK_DGRAM
    _check(0 if fd >= 0 else -1, "socket")
    ifreq = ctypes.create_string_buffer(struct.pack("16sh", b"lo", 0x1 | 0x8 | 0x40), 40)  # UP|LOOPBACK|RUNNING
    try:
        _check(_LIBC.ioctl(fd, 0x8914, ifreq), "SIOCSIFFLAGS lo")
    finally:
        os.close(fd)


def build_root(spec: dict) -> None:
    """In a fresh mount namespace: assemble the new root on a tmpfs and pivot into it."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the caller
    # Open every source first: once the new root covers the old one, only these fds reach them.
    sources: dict[str, int] = {}
    for path in [p for p, kind, _ in spec["system"] if kind == "bind"] + spec["binds"] + spec["devices"]:
        try:
            sources[path] = os.open(path, os.O_PATH)
        except OSError:
            pass  # gone or unreadable: the program will not see it
    new = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path, kind, target in spec["system"]:
        if kind == "symlink":
            os.symlink(target, new + path)
        elif path in sources:
            _make_mountpoint(new + path, True)
            _bind_read_only(sources[path], new + path)
    os.mkdir(new + "/proc")
    try:
        _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:  # some containers forbid a fresh /proc: an empty one then, never the caller's
        _mount("tmpfs", new + "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555,size=4k")
    os.mkdir(new + "/dev")
    _mount("tmpfs", new + "/dev", "tmpfs", MS_NOSUID, "mode=0755,size=64k")
    for dev in spec["devices"]:
        if dev in sources:
            _make_mountpoint(new + dev, False)
            _mount(f"/proc/self/fd/{sources[dev]}", new + dev, None, MS_BIND)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{new}/dev/{name}")
    os.symlink("/proc/self/fd", new + "/dev/fd")
    for path, mode, size_mb in spec["private"]:
        os.makedirs(new + path, exist_ok=True)
        _mount("tmpfs", new + path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size={size_mb}m")
    os.makedirs(new + spec["workdir"], mode=0o700)
    if spec["uid"] is not None:
        os.chown(new + spec["workdir"], spec["uid"], spec["uid"])
    for path in spec["binds"]:
        if path in sources:
            _make_mountpoint(new + path, os.path.isdir(f"/proc/self/fd/{sources[path]}"))
            _bind_read_only(sources[path], new + path)
    for fd in sources.values():
        os.close(fd)
    _mount(None, new, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(new)
    _check(_LIBC.syscall(ARCH["pivot_root"] if ARCH else -1, b".", b"."), "pivot_root")
    _check(_LIBC.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def stage_namespaces(spec: dict) -> None:
    root = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | (0 if root else CLONE_NEWUSER)
    try:
        _check(_LIBC.unshare(flags), "unshare")
        if not root:  # map only our own uid and gid: the program gains nothing over anything outside
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as e:
        _fail(f"cannot create namespaces: {e}")
    init = os.fork()
    if init == 0:  # PID 1 of the new namespace
        try:
            _close(spec["info_fd"])
            # The caller kills this stage: the namespace goes with it. (getppid() is 0 in a new PID namespace,
            # so a stage that died before this line cannot be detected here; the caller kills PID 1 itself too.)
            _prctl(PR_SET_PDEATHSIG, SIGKILL)
            _loopback_up()
            build_root(spec)
        except OSError as e:
            _fail(f"cannot build the sandbox's root: {e}")
        _reap(spec)
    for fd in (spec["channel_fd"], spec["started_fd"], spec["spec_fd"]):
        _close(fd)
    os.write(spec["info_fd"], b'{"child-pid": %d}' % init)  # what bubblewrap's --info-fd says
    os.close(spec["info_fd"])
    _, status = os.waitpid(init, 0)
    os._exit(exit_status(status))


def _reap(spec: dict) -> None:
    """PID 1: fork the program, reap everything until it exits, then exit (which ends the namespace)."""
    program = os.fork()
    if program == 0:
        _become_program(spec, deny_all_sockets=False)
    for fd in (spec["channel_fd"], spec["started_fd"], spec["spec_fd"], 0):
        _close(fd)
    devnull = os.open("/dev/null", os.O_WRONLY)
    os.dup2(devnull, 1)  # PID 1 keeps nothing of the program's pipes open
    os.dup2(devnull, 2)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(FAILED_TO_START)
        if pid == program:
            os._exit(exit_status(status))


# --- bubblewrap as root: make the needed paths reachable for the sandbox uid -----------


def hidden_ancestor(path: str) -> str | None:
    """The highest directory above or at `path` that others cannot enter (no o+x), or None."""
    parts = path.split("/")
    for i in range(2, len(parts) + 1):
        d = "/".join(parts[:i])
        try:
            if not os.stat(d).st_mode & 0o001:
                return d
        except OSError:
            return None
    return None


def reveal(paths: list[str]) -> None:
    """In a private mount namespace: cover each hidden directory above `paths` with an enterable tmpfs and
    bind the needed paths back, so a user that cannot enter, say, `/root` reaches `/root/.pyenv/...`."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = [(p, hidden_ancestor(p)) for p in paths]
    keep = [(p, h) for p, h in keep if h is not None]
    fds = [(p, os.open(p, os.O_PATH)) for p, _ in keep]
    covers = sorted({h for _, h in keep})
    covers = [c for c in covers if not any(c.startswith(o + "/") for o in covers)]
    for cover in covers:
        _mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    for path, fd in fds:
        _make_mountpoint(path, os.path.isdir(f"/proc/self/fd/{fd}"))
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)


def stage_bwrap_root(spec: dict) -> None:
    try:
        _check(_LIBC.unshare(CLONE_NEWNS), "unshare")
        reveal(spec["binds"])
        _drop_to(spec["uid"])
    except OSError as e:
        _fail(f"cannot prepare bubblewrap: {e}")
    os.execv(spec["bwrap"][0], spec["bwrap"])


# --- weak: no namespaces ------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _kill_descendants() -> None:
    """As a child subreaper, every orphaned descendant becomes our child: kill children until none are left."""
    me = os.getpid()
    for _ in range(500):
        kids = _children(me)
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.002)


def stage_weak(spec: dict) -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if spec["uid"] is not None:  # root: the sandbox uid may need the interpreter revealed (best effort)
        try:
            _check(_LIBC.unshare(CLONE_NEWNS), "unshare")
            reveal(spec["binds"])
        except OSError:
            pass
    if spec["uid"] is None:  # RLIMIT_NPROC counts all of this user's processes: leave room for them
        spec["limits"]["nproc"] += sum(
            1 for pid in os.listdir("/proc") if pid.isdigit() and _uid_of(pid) == os.getuid()
        )
    program = os.fork()
    if program == 0:
        _become_program(spec, deny_all_sockets=True)
    for fd in (spec["channel_fd"], spec["started_fd"], spec["spec_fd"], spec["info_fd"]):
        _close(fd)

    def stop(signum: int, frame: object) -> None:
        raise InterruptedError

    _signal.signal(SIGTERM, stop)
    code = FAILED_TO_START
    try:
        _, status = os.waitpid(program, 0)
        code = exit_status(status)
    except InterruptedError:
        code = 128 + SIGKILL
    finally:
        _signal.signal(SIGTERM, _signal.SIG_IGN)
        _kill_descendants()
    os._exit(code)


def _uid_of(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


STAGES = {"namespaces": stage_namespaces, "bwrap-root": stage_bwrap_root, "weak": stage_weak}


def main(argv: list[str]) -> None:
    stage, spec_fd = argv[0], int(argv[1])
    os.lseek(spec_fd, 0, os.SEEK_SET)
    with os.fdopen(os.dup(spec_fd), "rb") as f:
        spec = eval(f.read(), {"__builtins__": {}})  # noqa: S307 - a literal written by sandbox.py
    if stage == "inside":
        _become_program(spec, deny_all_sockets=False)
    STAGES[stage](spec)


if __name__ == "__main__":
    main(sys.argv[1:])
