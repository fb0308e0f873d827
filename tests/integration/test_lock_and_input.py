"""A second deploy at the same time, kill -9, and bad input: one clear line, the right exit
code, and a live site that nothing touched."""

import os
import signal
import subprocess
import sys
import time

import pytest

HOLD_LOCK = """
import sys, time
from pathlib import Path
from deployer.lock import deploy_lock
from deployer.paths import Paths
with deploy_lock(Paths(Path(sys.argv[1])), "deployer deploy main (held by a test)"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(deployment, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(deployment.deploy_to), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_deploy_at_the_same_time_exits_3_naming_the_holder(deployment):
    holder = hold_lock(deployment, 30)
    try:
        result = deployment.deployer("deploy", "base")
        status = deployment.ok("status")
    finally:
        holder.kill()
        holder.wait()

    assert result.returncode == 3
    assert f"pid {holder.pid}" in result.stderr
    assert "held by a test" in result.stderr
    assert deployment.releases <= set()  # nothing was built
    assert f"pid {holder.pid}" in status.stdout


def test_wait_lets_a_deploy_queue_behind_the_lock(deployment):
    holder = hold_lock(deployment, 1.5)
    result = deployment.ok("release", "base", "--wait", "60")
    holder.wait()
    assert "waiting for the deploy lock" in result.stderr


def test_a_killed_deployer_leaves_no_lock_behind(deployment, source_repo, wait_until):
    proc = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(deployment.config_file),
                             "release", "base"], stderr=subprocess.PIPE, text=True)
    # Kill it in the middle of the build (the venv step takes seconds).
    for line in proc.stderr:
        if "create venv" in line or "[4/8]" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(name.startswith(".tmp-") for name in deployment.releases)

    result = deployment.ok("release", "base")

    assert "left by an interrupted build" in result.stderr
    assert deployment.releases == {source_repo.sha("base")}


@pytest.mark.parametrize("ref", ["no-such-branch", "0" * 40, "--upload-pack=touch /tmp/pwned", "-h",
                                 "../../etc/passwd", "/etc/passwd", "main; rm -rf /", "main\nrm", ""])
def test_release_of_an_unknown_or_malformed_ref_is_bad_input(deployment, ref):
    result = deployment.deployer("release", "--", ref) if ref.startswith("-") else deployment.deployer("release", ref)

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("deployer: error:", "Error:")), result.stderr
    assert "Traceback" not in result.stderr
    assert not [name for name in deployment.releases if not name.startswith(".")]
    assert not os.path.exists("/tmp/pwned")


@pytest.mark.parametrize("sha", ["../releases", "/etc", "abc", "g" * 40, "HEAD", "-rf", "0123abcd/.."])
def test_activate_of_a_malformed_sha_changes_nothing(deployment, source_repo, sha):
    deployment.ok("deploy", "base")
    before = deployment.history()

    result = deployment.deployer("activate", "--", sha)

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("deployer: error:")
    assert deployment.current == source_repo.sha("base")
    assert deployment.history() == before


def test_activate_of_an_unbuilt_sha_is_bad_input(deployment):
    result = deployment.deployer("activate", "0123456789abcdef")
    assert result.returncode == 2
    assert "no release matches" in result.stderr


def test_an_env_file_missing_a_required_variable_stops_the_build(deployment):
    lines = [line for line in deployment.env_file.read_text().splitlines()
             if not line.startswith("WAGTAILADMIN_BASE_URL=")]
    deployment.env_file.write_text("\n".join(lines) + "\n")

    result = deployment.deployer("release", "base")

    assert result.returncode == 2
    assert "WAGTAILADMIN_BASE_URL" in result.stderr
    assert deployment.releases <= set()


def test_a_world_readable_env_file_is_refused(deployment):
    deployment.env_file.chmod(0o644)

    result = deployment.deployer("release", "base")

    assert result.returncode == 2
    assert "readable or writable by other users" in result.stderr
    assert "chmod o-rwx" in result.stderr


def test_check_passes_on_a_healthy_deployment(deployment):
    deployment.ok("deploy", "base")
    result = deployment.ok("check")
    assert "FAIL" not in result.stdout
    assert "current is" in result.stdout


def test_check_reports_each_problem_and_exits_1(deployment):
    deployment.env_file.chmod(0o644)
    deployment.write_config(python="python2.9-not-here")

    result = deployment.deployer("check")

    assert result.returncode == 1
    assert "FAIL  env file" in result.stdout
    assert "FAIL  python" in result.stdout
