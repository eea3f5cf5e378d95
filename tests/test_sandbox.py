"""Hostile programs against the sandbox, under bubblewrap and under our own namespace code.

After each program: the caller is alive, no process of the grade is left (checked
within 1 s of the grade's end), nothing outside changed (the caller's files, a
directory on `sys.path`, the real `/tmp`, `/var/tmp`, `/run/lock`, `/dev/shm`).
Run as root (as CI does), `test_hostile_suite_as_an_unprivileged_user` runs this
whole file again as `nobody`, so both hold with and without root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from reasonloop.graders import sandbox
from reasonloop.graders.sandbox import SandboxLimits, SandboxUnavailable, run_sandboxed

LIMITS = SandboxLimits(wall_s=3.0, cpu_s=2, memory_mb=512, max_processes=16, max_file_mb=4, max_output_bytes=65536)
REAL_SHARED = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm")
ISOLATIONS = [
    pytest.param(  # CI installs bubblewrap (.ci/run): there a missing bwrap fails instead of skipping
        "bwrap",
        marks=pytest.mark.skipif(not sandbox.bwrap_path() and not os.environ.get("CI"), reason="no bubblewrap"),
    ),
    "namespaces",
]


def _live_processes(res) -> list[int]:
    """Live (not zombie) processes of a grade: in its PID namespace, its session, or with its uid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            uid = (entry / "status").stat().st_uid
            ns = os.readlink(entry / "ns" / "pid")
        except OSError:
            continue
        after = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        mine = ns == res.pid_namespace or int(after[3]) == res.pid or (res.uid is not None and uid == res.uid)
        if after[0] != "Z" and mine:
            found.append(int(entry.name))
    return found


def _snapshot(directory: Path) -> dict[str, tuple[int, float, bytes]]:
    return {str(p): (p.stat().st_mode, p.stat().st_mtime, p.read_bytes()) for p in directory.rglob("*") if p.is_file()}


def _evil_files() -> list[str]:
    return [str(p) for d in REAL_SHARED if os.path.isdir(d) for p in Path(d).glob("reasonloop-evil*")]


@pytest.fixture(params=ISOLATIONS)
def isolation(request) -> str:
    return request.param


@pytest.fixture
def guarded(tmp_path, isolation, monkeypatch):
    """Run hostile code; afterwards check that the caller's files, a sys.path directory and the real shared
    directories are untouched and that no process of the grade is alive 1 s after it returned."""
    victim_dir = tmp_path / "caller"
    victim_dir.mkdir()
    (victim_dir / "precious.txt").write_text("do not touch")
    on_path = tmp_path / "lib"  # a directory on the caller's sys.path (as root: under a directory others cannot enter)
    on_path.mkdir()
    (on_path / "module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(on_path))
    before = {**_snapshot(victim_dir), **_snapshot(on_path)}
    sandboxes_before = {p.name for p in Path("/tmp").glob("reasonloop-sbx-*")}
    results = []

    def run(code: str, limits: SandboxLimits = LIMITS):
        code = textwrap.dedent(code)
        for name, value in (("VICTIM", victim_dir / "precious.txt"), ("ON_PATH", on_path), ("CALLER", os.getpid())):
            code = code.replace(name, str(value))
        limits = dataclasses.replace(limits, isolation=isolation)
        res = run_sandboxed([sys.executable, "-I", "main.py"], files={"main.py": code}, limits=limits)
        assert res.isolation == isolation and res.error != "could not start the sandbox", res.stderr
        results.append((res, time.monotonic()))
        return res

    yield run
    for res, ended in results:
        assert res.pid_namespace is not None  # the grade had a PID namespace of its own
        while _live_processes(res) and time.monotonic() - ended < 1.0:
            time.sleep(0.02)
        assert _live_processes(res) == [], "a process of the grade outlived it by more than 1 s"
    assert {**_snapshot(victim_dir), **_snapshot(on_path)} == before
    assert sorted(p.name for p in victim_dir.iterdir()) == ["precious.txt"]
    assert sorted(p.name for p in on_path.iterdir()) == ["module.py"]
    assert _evil_files() == []
    assert {p.name for p in Path("/tmp").glob("reasonloop-sbx-*")} == sandboxes_before


def test_well_behaved_program_runs(guarded):
    res = guarded(
        """
        import sys
        sys.path.insert(0, "ON_PATH")  # bound read-only, as every sys.path entry of the caller is
        import module
        print('hello', module.VALUE)
        print('oops', file=sys.stderr)
        open('out.txt', 'w').write('ok')
        """
    )
    assert res.ok and res.stdout == b"hello 1\n" and res.stderr == b"oops\n" and res.error is None


def test_infinite_loop_is_killed_at_the_limit(guarded):
    res = guarded("while True:\n    pass", SandboxLimits(wall_s=1.0, cpu_s=5))
    assert res.timed_out and not res.ok and res.error == "timed out after 1 s"
    assert res.wall_s < 2.5


def test_cpu_limit_kills_before_wall_limit(guarded):
    res = guarded("while True:\n    pass", SandboxLimits(wall_s=5.0, cpu_s=1))
    assert not res.ok and not res.timed_out and res.error == "killed by SIGXCPU (CPU limit of 1 s)"
    assert res.wall_s < 4


def test_fork_bomb_hits_the_process_limit_and_dies_with_the_grade(guarded):
    res = guarded(
        """
        import errno, os, time
        made, error = 0, None
        while made < 1000:
            try:
                pid = os.fork()
            except OSError as e:
                error = errno.errorcode[e.errno]
                break
            if pid == 0:
                os.setsid()  # leave the process group and session too
                while True:
                    try:
                        os.fork()
                    except OSError:
                        time.sleep(0.01)
            made += 1
        print(made, error, flush=True)
        """,
        SandboxLimits(wall_s=3.0, cpu_s=3, max_processes=16),
    )
    made, error = res.stdout.split()
    # the limit stops the bomb: the parent's forks fail within the 16 slots (the children's forks take slots too; a
    # slot freed while the kernel reaps can let one more through, seen once on a loaded machine)
    assert res.ok and error == b"EAGAIN" and 1 <= int(made) <= 16
    assert res.wall_s < 2.5  # the grade ended when the main program did, bomb or not


def test_allocating_10_gb_fails_inside(guarded):
    res = guarded("x = bytearray(10 * 1024**3)\nprint('allocated')")
    assert not res.ok and b"allocated" not in res.stdout and b"MemoryError" in res.stderr


def test_writing_outside_its_directory_fails(guarded, tmp_path):
    res = guarded(
        """
        import errno, json, os
        paths = ["VICTIM", os.path.dirname("VICTIM") + "/new.txt", "ON_PATH/module.py", "ON_PATH/new.py",
                 "/reasonloop-evil", "/usr/reasonloop-evil", "/etc/reasonloop-evil",
                 "/tmp/reasonloop-evil", "/var/tmp/reasonloop-evil", "/run/lock/reasonloop-evil",
                 "/dev/shm/reasonloop-evil", "inside.txt"]
        out = {}
        for path in paths:
            try:
                with open(path, "a") as f:
                    f.write("pwned")
                out[path] = "wrote"
            except OSError as e:
                out[path] = errno.errorcode[e.errno]
        print(json.dumps(out))
        """
    )
    out = json.loads(res.stdout)
    assert out[str(tmp_path / "caller" / "precious.txt")] == "ENOENT"  # the caller's files are not there at all
    assert out[str(tmp_path / "caller" / "new.txt")] == "ENOENT"
    read_only = [str(tmp_path / "lib" / "module.py"), str(tmp_path / "lib" / "new.py")]
    read_only += ["/reasonloop-evil", "/usr/reasonloop-evil", "/etc/reasonloop-evil"]
    assert all(out[p] in ("EROFS", "EACCES") for p in read_only), out  # its root and every bind are read-only
    private = [f"{d}/reasonloop-evil" for d in REAL_SHARED] + ["inside.txt"]
    assert all(out[p] == "wrote" for p in private), out  # private copies; the fixture checks the real ones


def test_deleting_reachable_files_fails(guarded):
    res = guarded(
        """
        import errno, glob, json, os, shutil, sys
        attempts = {
            "victim": lambda: os.remove("VICTIM"),
            "victim_dir": lambda: shutil.rmtree(os.path.dirname("VICTIM")),
            "on_path": lambda: os.remove("ON_PATH/module.py"),
            "interpreter": lambda: os.remove(sys.executable),
            "real_tmp": lambda: [os.remove(p) for p in glob.glob("/tmp/*") if os.path.isfile(p)],
        }
        out = {}
        for name, attempt in attempts.items():
            try:
                attempt()
                out[name] = "done"
            except OSError as e:
                out[name] = errno.errorcode[e.errno]
        print(json.dumps(out))
        """
    )
    out = json.loads(res.stdout)
    assert out["victim"] == "ENOENT" and out["victim_dir"] == "ENOENT"
    assert out["on_path"] in ("EROFS", "EACCES") and out["interpreter"] in ("EROFS", "EACCES")
    assert out["real_tmp"] == "done"  # it only sees its private /tmp; the fixture checks the real one


def test_caller_environment_and_processes_are_not_visible(guarded, monkeypatch):
    monkeypatch.setenv("REASONLOOP_TEST_SECRET", "hunter2-secret")
    res = guarded(
        """
        import json, os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        environs = []
        for pid in pids + [CALLER]:
            try:
                environs.append(open(f"/proc/{pid}/environ", "rb").read().decode())
            except OSError:
                pass
        print(json.dumps({"env": dict(os.environ), "pids": pids, "environs": environs}))
        """
    )
    out = json.loads(res.stdout)
    assert out["pids"] == [1, 2]  # its PID namespace: PID 1 and itself, nothing of the caller's
    assert "REASONLOOP_TEST_SECRET" not in out["env"] and not any("hunter2" in e for e in out["environs"])
    assert set(out["env"]) <= {*sandbox._env("", 0), "LC_CTYPE", "PWD"}


def test_no_connection_reaches_a_local_listener(guarded):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        res = guarded(
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"leak")
                print("connected")
            except OSError as e:
                print("blocked", e.errno)
            """
        )
        assert res.stdout == b"blocked 111\n"  # ECONNREFUSED: its own loopback has no listener
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_no_unix_socket_is_reachable_in_tmp_or_on_sys_path(guarded, tmp_path):
    paths = [f"/tmp/reasonloop-test-{uuid.uuid4().hex[:8]}.sock", str(tmp_path / "lib" / "agent.sock")]
    listeners = []
    for path in paths:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(1)
        s.setblocking(False)
        listeners.append(s)
    try:
        res = guarded(
            f"""
            import errno, socket
            for path in {paths!r}:
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(path)
                    s.sendall(b"leak")
                    print("connected")
                except OSError as e:
                    print(errno.errorcode[e.errno])
            """
        )
        assert res.stdout == b"EACCES\nEACCES\n"  # the seccomp filter refuses socket(AF_UNIX)
        for s in listeners:
            with pytest.raises(BlockingIOError):
                s.accept()
    finally:
        for s in listeners:
            s.close()
        for path in paths:
            Path(path).unlink(missing_ok=True)


def test_printing_1_gb_is_capped(guarded):
    res = guarded(
        """
        import sys
        chunk = b"x" * (1 << 20)
        for _ in range(1024):
            sys.stdout.buffer.write(chunk)
        """,
        SandboxLimits(wall_s=5.0, cpu_s=5, max_output_bytes=65536),
    )
    assert res.truncated and len(res.stdout) == 65536


def test_deep_recursion_dies_inside(guarded):
    res = guarded(
        """
        import sys
        sys.setrecursionlimit(10**8)
        def f(n):
            return list(map(f, [n + 1]))  # each level also recurses in C: the C stack overflows
        f(0)
        """
    )
    assert (
        res.returncode == -11 and res.error == "killed by SIGSEGV (segmentation fault (stack overflow or memory limit))"
    )
    assert res.wall_s < 2


def test_daemons_and_detached_children_die_with_the_grade(guarded):
    res = guarded(
        """
        import os, subprocess, time
        subprocess.Popen(["sleep", "600"], start_new_session=True)
        if os.fork() == 0:  # double fork + setsid: a classic daemon that writes later
            os.setsid()
            if os.fork() == 0:
                time.sleep(1.5)
                open("/tmp/reasonloop-evil-late", "w").write("late")
                open("VICTIM", "a").write("late")
            os._exit(0)
        time.sleep(0.2)
        os._exit(3)
        """
    )
    assert res.returncode == 3 and not res.ok and res.wall_s < 1.5
    time.sleep(1.6)  # past the daemon's write: the fixture checks it never happened


def test_killing_the_caller_fails(guarded):
    res = guarded(
        """
        import errno, json, os, signal
        out = {"parent": os.getppid()}
        for name, kill in (("ppid", lambda: os.kill(os.getppid(), signal.SIGKILL)),
                           ("caller", lambda: os.kill(CALLER, signal.SIGKILL)),
                           ("everyone", lambda: os.kill(-1, signal.SIGKILL))):
            try:
                kill()
                out[name] = "sent"
            except OSError as e:
                out[name] = errno.errorcode[e.errno]
        print(json.dumps(out))
        """
    )
    out = json.loads(res.stdout)
    assert out["parent"] in (0, 1) and out["caller"] == "ESRCH", out  # the caller's pid does not exist in there
    assert res.ok  # kill(-1) reached nobody but its own namespace's processes, which PID 1 shrugs off


def test_tmp_itself_on_sys_path_still_runs(guarded, monkeypatch):
    marker = Path(f"/tmp/reasonloop-marker-{uuid.uuid4().hex[:8]}")
    marker.write_text("real /tmp")
    monkeypatch.syspath_prepend("/tmp")
    try:
        res = guarded(f"import os; print(os.path.exists({str(marker)!r}), {marker.name!r} in os.listdir('/tmp'))")
        assert res.ok and res.stdout == b"False False\n"  # its /tmp is the private one
    finally:
        marker.unlink()


# --- choosing the isolation -------------------------------------------------------------


def test_unknown_isolation_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("REASONLOOP_SANDBOX", "chroot")
    with pytest.raises(SandboxUnavailable, match="sandbox isolation 'chroot' is not one of auto, bwrap, namespaces"):
        run_sandboxed([sys.executable, "-c", "pass"])


def test_weak_isolation_is_chosen_explicitly_and_still_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "_WARNED", [])
    code = """
        import os, socket, subprocess, time
        subprocess.Popen(["sleep", "600"], start_new_session=True)
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1)
        except OSError as e:
            print(e.errno)
        """
    with pytest.warns(UserWarning, match="weak isolation"):
        res = run_sandboxed(
            [sys.executable, "-I", "main.py"],
            files={"main.py": textwrap.dedent(code)},
            limits=dataclasses.replace(LIMITS, isolation="weak"),
        )
    assert res.ok and res.isolation == "weak" and res.stdout == b"13\n"  # EACCES: no socket at all
    assert res.pid_namespace is None and _live_processes(res) == []
    assert not list(Path("/tmp").glob("reasonloop-sbx-*"))


NO_USERNS = """
import os, sys, warnings
from reasonloop.graders.sandbox_child import install_seccomp, seccomp_program
install_seccomp(seccomp_program(False))  # as a kernel or container refusing namespaces does: unshare is EPERM
from reasonloop.core import Problem
from reasonloop.graders.python_grader import PythonConfig, python_grade
warnings.simplefilter("ignore")
try:
    print(python_grade(PythonConfig(tests="assert f() == 1"), Problem("1", "", ""), "def f():\\n    return 1").score)
except Exception as e:
    print(type(e).__name__, e)
"""


HIDDEN_INTERPRETER = os.geteuid() == 0 and any(map(sandbox.sandbox_child.hidden_ancestor, sandbox.interpreter_paths()))


@pytest.mark.parametrize(
    "choice",
    [
        "",
        pytest.param(
            "weak",
            marks=pytest.mark.skipif(
                HIDDEN_INTERPRETER,
                reason="as root, weak mode runs the program as a uid of its own, which cannot enter the directory "
                "holding this interpreter when namespaces are refused; the unprivileged run of this file covers it",
            ),
        ),
    ],
)
def test_without_namespaces_the_grader_refuses_or_runs_weak_as_asked(choice):
    env = {**os.environ, "REASONLOOP_SANDBOX": choice, "PYTHONPATH": str(Path(sandbox.__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", NO_USERNS], env=env, capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 1, out.stderr
    if choice == "weak":
        assert lines == ["1.0"]
    else:
        assert lines[0].startswith("SandboxUnavailable cannot sandbox graded code here (bwrap: ")
        assert "REASONLOOP_SANDBOX=weak" in lines[0] and "unprivileged user namespaces" in lines[0]


# --- the same, without root ------------------------------------------------------------------


AS_USER = """
import os, runpy, sys
child_file, reveal, pythonpath, *args = sys.argv[1:]
child = runpy.run_path(child_file)
child["_check"](child["_LIBC"].unshare(child["CLONE_NEWNS"]), "unshare")
child["reveal"](reveal.split(":"))  # the interpreter may live under /root, which nobody cannot enter
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.chdir("/tmp")
env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": pythonpath}
os.execve(sys.executable, [sys.executable, *args], env)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="not root: this whole file already ran as an unprivileged user")
def test_hostile_suite_as_an_unprivileged_user():
    """This file again as `nobody` (uid 65534), in a subprocess that drops root."""
    repo = Path(__file__).resolve().parents[1]
    src = str(Path(sandbox.__file__).parents[2])
    reveal = ":".join(sorted({*sandbox.interpreter_paths(), str(repo), src}))
    child = sandbox.sandbox_child.__file__
    pytest_args = ["-m", "pytest", str(Path(__file__)), "-q", "-p", "no:cacheprovider", "--noconftest"]
    out = subprocess.run(
        [sys.executable, "-I", "-c", AS_USER, child, reveal, src, *pytest_args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary


# --- graded as completions: every hostile program scores 0 -------------------------------------------------------

HOSTILE = {
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nos._exit(0)",
    "detached sleep": "import subprocess\nsubprocess.Popen(['sleep', '600'], start_new_session=True)",
    "kill the parent": "import os\nos.kill(os.getppid(), 9)\nos.kill(-1, 9)",
    "fake verdict": "import os, sys\nprint('tests passed')\nos.write(int(os.environ.get('REASONLOOP_RESULT_FD', 1)), b'1')",
    "write outside": "for p in ['/tmp/reasonloop-evil', '/reasonloop-evil']:\n    try:\n        open(p, 'w')\n    except OSError:\n        pass",
    "10 GB": "x = bytearray(10 * 1024**3)",
    "infinite loop": "while True:\n    pass",
    "unix socket": "import socket\nsocket.socket(socket.AF_UNIX).connect('/tmp/.X11-unix/X0')",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_hostile_program_scores_zero_as_a_graded_completion(name):
    from reasonloop.core import Problem
    from reasonloop.graders.python_grader import PythonConfig, python_grade

    cfg = PythonConfig(tests="assert answer() == 42", timeout_s=2.0, cpu_s=2, memory_mb=512, max_processes=16)
    started = time.monotonic()
    grade = python_grade(cfg, Problem("p", "Write answer().", ""), f"```python\n{HOSTILE[name]}\n```")
    assert grade.score == 0.0 and grade.reason.startswith("tests failed"), grade
    assert time.monotonic() - started < 4
    assert _evil_files() == []
