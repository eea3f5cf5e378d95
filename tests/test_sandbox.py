"""Hostile programs against the sandbox: after each, the caller is alive, nothing of it is left, nothing outside changed."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from reasonloop.graders.sandbox import SandboxLimits, run_sandboxed

LIMITS = SandboxLimits(wall_s=3.0, cpu_s=2, memory_mb=512, max_processes=16, max_file_mb=4, max_output_bytes=65536)
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the sandbox switches to its own uid")


def _live_processes(sid: int | None, uid: int | None) -> list[int]:
    """Live processes in the sandbox's session or with its uid, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        after = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        state, session = after[0], int(after[3])
        proc_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if state != "Z" and (session == sid or proc_uid == uid):
            found.append(int(entry.name))
    return found


def _snapshot(directory: Path) -> dict[str, tuple[int, float, bytes]]:
    return {str(p): (p.stat().st_mode, p.stat().st_mtime, p.read_bytes()) for p in directory.rglob("*") if p.is_file()}


@pytest.fixture
def guarded(tmp_path):
    """A caller-owned directory with a file; the test checks afterwards that both are untouched."""
    victim_dir = tmp_path / "caller"
    victim_dir.mkdir()
    victim = victim_dir / "precious.txt"
    victim.write_text("do not touch")
    before = _snapshot(victim_dir)
    sandboxes_before = {p.name for p in Path("/tmp").glob("reasonloop-sbx-*")}
    results = []

    def run(code: str, limits: SandboxLimits = LIMITS):
        code = textwrap.dedent(code).replace("VICTIM", str(victim))
        res = run_sandboxed([sys.executable, "-I", "main.py"], files={"main.py": code}, limits=limits)
        results.append(res)
        return res

    yield run
    assert os.getpid() > 0  # the caller is alive to get here
    for res in results:
        assert res.pid is not None
        assert _live_processes(res.pid, res.uid) == [], "a sandboxed process outlived its run"
    assert _snapshot(victim_dir) == before
    assert sorted(p.name for p in victim_dir.iterdir()) == ["precious.txt"]
    assert not list(Path("/tmp").glob("reasonloop-evil*"))
    assert {p.name for p in Path("/tmp").glob("reasonloop-sbx-*")} == sandboxes_before  # its directory is gone


def test_well_behaved_program_runs(guarded):
    res = guarded("import sys; print('hello'); print('oops', file=sys.stderr); open('out.txt', 'w').write('ok')")
    assert res.ok and res.stdout == b"hello\n" and res.stderr == b"oops\n" and res.error is None


def test_infinite_loop_is_killed_at_the_limit(guarded):
    res = guarded("while True:\n    pass", SandboxLimits(wall_s=1.0, cpu_s=5))
    assert res.timed_out and not res.ok and res.error == "timed out after 1 s"
    assert res.wall_s < 2.5


def test_cpu_limit_kills_before_wall_limit(guarded):
    res = guarded("while True:\n    pass", SandboxLimits(wall_s=5.0, cpu_s=1))
    assert not res.ok and not res.timed_out and "SIGXCPU" in res.error
    assert res.wall_s < 4


@ROOT_ONLY
def test_fork_bomb_is_contained(guarded):
    res = guarded(
        """
        import os
        while True:
            try:
                if os.fork() == 0:
                    os.setsid()  # try to escape the process group too
            except OSError:
                pass
        """,
        SandboxLimits(wall_s=2.0, cpu_s=2, max_processes=16),
    )
    assert not res.ok


def test_allocating_10_gb_fails_inside(guarded):
    res = guarded("x = bytearray(10 * 1024**3)\nprint('allocated')")
    assert not res.ok and b"allocated" not in res.stdout and b"MemoryError" in res.stderr


def test_writing_outside_its_directory_fails(guarded):
    res = guarded(
        """
        import os, pathlib
        results = []
        for path in ["VICTIM", os.path.dirname("VICTIM") + "/new.txt", "/tmp/reasonloop-evil", "/reasonloop-evil"]:
            try:
                with open(path, "a") as f:
                    f.write("pwned")
                results.append("wrote " + path)
            except OSError as e:
                results.append(type(e).__name__)
        open("inside.txt", "w").write("fine")
        print(results)
        """
    )
    # /tmp inside the sandbox is a private copy: writing there succeeds but never reaches the caller's /tmp
    assert res.ok and b"VICTIM" not in res.stdout
    assert b"wrote /reasonloop-evil" not in res.stdout


def test_deleting_reachable_files_fails(guarded):
    res = guarded(
        """
        import os, shutil, glob
        for attempt in (lambda: os.remove("VICTIM"), lambda: shutil.rmtree(os.path.dirname("VICTIM")),
                        lambda: [os.remove(p) for p in glob.glob("/tmp/*") + glob.glob("/root/*")]):
            try:
                attempt()
            except OSError as e:
                print(type(e).__name__)
        """
    )
    assert res.returncode == 0


def test_caller_environment_is_not_visible(guarded, monkeypatch):
    monkeypatch.setenv("REASONLOOP_TEST_SECRET", "hunter2-secret")
    res = guarded(
        """
        import os
        print(dict(os.environ))
        for pid in [os.getppid(), 1] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            try:
                print(open(f"/proc/{pid}/environ", "rb").read())
            except OSError:
                pass
        """
    )
    assert res.returncode == 0 and b"REASONLOOP_TEST_SECRET" not in res.stdout and b"hunter2" not in res.stdout


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
                print("blocked", e)
            """
        )
        assert b"blocked" in res.stdout and b"connected" not in res.stdout
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


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
            return f(n + 1) + 1
        f(0)
        """
    )
    assert not res.ok


def test_os_exit_and_a_daemonised_grandchild(guarded):
    res = guarded(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
        os._exit(3)
        """
    )
    assert res.returncode == 3 and not res.ok and res.wall_s < 2


@ROOT_ONLY
def test_killing_its_parent_fails(guarded):
    res = guarded(
        """
        import os, signal
        for kill in (lambda: os.kill(os.getppid(), signal.SIGKILL), lambda: os.killpg(os.getpgid(os.getppid()), 9)):
            try:
                kill()
            except OSError as e:
                print(type(e).__name__)
        """
    )
    assert res.returncode == 0 and res.stdout == b"PermissionError\nPermissionError\n"
