"""The ``dockyard`` executable's quick exit: output flushed, atexit handlers run, exit codes
kept, and a normal exit when another thread is still running."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys, threading, time
import dockyard.cli.main as m
atexit.register(lambda: print("atexit ran", flush=False))
if "--thread" in sys.argv:
    sys.argv.remove("--thread")
    t = threading.Thread(target=lambda: (time.sleep(0.3), print("thread done")))
    t.start()
m.sys.argv = ["dockyard", *sys.argv[1:]]
print("buffered line", end="\\n", flush=False)
m.entry()
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True,
                          text=True, timeout=60)


def test_output_and_atexit_survive_the_quick_exit() -> None:
    proc = _run("--version")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0] == "buffered line"
    assert lines[1].startswith("dockyard ")
    assert lines[2] == "atexit ran"


def test_exit_codes_are_kept() -> None:
    proc = _run("no-such-command")
    assert proc.returncode == 2
    assert "unknown command" in proc.stderr
    assert "atexit ran" in proc.stdout


def test_a_running_thread_is_waited_for() -> None:
    proc = _run("--thread", "--version")
    assert proc.returncode == 0
    assert "thread done" in proc.stdout
