"""Output never decides what happens to the site (docs/design.md §3).

The operator's terminal closes, the SSH session drops, the CI job is cancelled, or the output
goes into `head`: whatever the deployer can no longer write, it carries on, and a failing
activation still puts the previous release back, serving it, its history saying so.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import termios
import time

import pytest

FRONT_DOOR_SMOKE = "smoke test .."  # the step label, printed before the step runs (no newline yet)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "DEPLOYER_DEBUG")}


def _argv(deployment, *args: str) -> list[str]:
    return [sys.executable, "-m", "deployer", "--config", str(deployment.config_file), *args]


def _failing_front_door_smoke(deployment, timeout: float) -> None:
    """The new release boots (a standby passes its socket's smoke test) but its front door fails:
    the smoke URL names a port nothing listens on."""
    deployment.write_config(smoke={"url": "http://127.0.0.1:9", "check_static": False, "timeout": timeout})


def _read_until(fd: int, marker: str, timeout: float = 300) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in seen:
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        chunk = os.read(fd, 1024)
        assert chunk, f"output ended before {marker!r}:\n{seen.decode(errors='replace')}"
        seen += chunk
    return seen.decode(errors="replace")


def _back_on(deployment, base: str, sha: str, result: str) -> None:
    assert deployment.current == base
    assert deployment.healthz()["release"] == base
    entry = deployment.history()[-1]
    assert (entry["to"], entry["result"]) == (sha, result), entry


STRATEGIES = [pytest.param(name, marks=pytest.mark.strategy(name)) for name in ("restart", "standby")]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failing_activate_whose_stderr_reader_goes_away_still_puts_the_previous_release_back(
        deployment, source_repo, strategy):
    deployment.ok("deploy", "base")
    base, sha = source_repo.sha("base"), deployment.release("second")
    _failing_front_door_smoke(deployment, timeout=3)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(_argv(deployment, "activate", sha), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=write_end, env=_env())
    os.close(write_end)
    _read_until(read_end, FRONT_DOOR_SMOKE)
    os.close(read_end)  # the SSH session, the CI job or `| head` is gone

    assert proc.wait(timeout=120) == 1
    _back_on(deployment, base, sha, "failed-smoke")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_terminal_closed_during_a_failing_smoke_test_still_gets_the_previous_release_back(
        deployment, source_repo, strategy):
    deployment.ok("deploy", "base")
    base, sha = source_repo.sha("base"), deployment.release("second")
    _failing_front_door_smoke(deployment, timeout=10)
    master, slave = os.openpty()
    proc = subprocess.Popen(_argv(deployment, "activate", sha), stdin=slave, stdout=slave, stderr=slave,
                            env=_env(), start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # its terminal
    os.close(slave)
    _read_until(master, FRONT_DOOR_SMOKE)
    os.close(master)  # the terminal window closes: SIGHUP, then every write fails with EIO

    assert proc.wait(timeout=120) == 1
    _back_on(deployment, base, sha, "failed")  # interrupted by the hang-up, not judged by its smoke test


@pytest.mark.parametrize("args", [("list", "--json"), ("list",), ("status",), ("status", "--json"),
                                  ("check",), ("--help",), ("--version",), ("activate", "--plan", "base")])
def test_output_into_a_pipe_nobody_reads_is_dropped_and_the_command_still_succeeds(deployment, source_repo, args):
    deployment.ok("deploy", "base")
    args = tuple(source_repo.sha("base") if arg == "base" else arg for arg in args)
    proc = subprocess.Popen(_argv(deployment, *args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()  # as `| head -1` that has already exited
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert b"Broken pipe" not in stderr and b"Traceback" not in stderr
