"""The orchestrator against real SSH (docs/design.md §13): a private sshd on 127.0.0.1 that the
suite starts, two deploy roots reached through it as two "servers", each with its own
releases.yml, and the real `deployer` installed in this venv answering on the far side.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import sshd_server

from deployer.lock import token_id

from fleet_setup import REMOTE_DEPLOYER, lock_of as _lock_of, one_error_line as _one_error_line


def test_status_across_two_servers_has_a_row_each_and_says_when_they_agree(orchestrator, deployment, second):
    deployment.ok("deploy", "base")
    second.ok("deploy", "base")
    base = deployment.source.sha("base")

    result = orchestrator.run("status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [row["name"] for row in data["servers"]] == ["app1", "app2"]
    assert [row["current"] for row in data["servers"]] == [base, base]
    assert data["agree"] is True and data["current"] == base
    assert all(row["status"]["health"]["serves_current"] for row in data["servers"])

    human = orchestrator.run("status")
    assert human.returncode == 0, human.stderr
    assert f"servers agree: all on {base[:12]}" in human.stdout
    assert human.stdout.count(base[:12]) >= 2


def test_status_says_plainly_when_servers_are_on_different_releases(orchestrator, deployment, second):
    deployment.ok("deploy", "base")
    second.ok("deploy", "second")

    data = json.loads(orchestrator.run("status", "--json").stdout)
    assert data["agree"] is False and data["current"] is None
    human = orchestrator.run("status").stdout
    assert (f"SERVERS DISAGREE: app1 on {deployment.source.sha('base')[:12]}, "
            f"app2 on {deployment.source.sha('second')[:12]}") in human


def test_check_runs_every_servers_own_check_prefixed_by_its_name(orchestrator):
    result = orchestrator.run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("app1", "app2"):
        assert f"[{name}] ok    ssh " in result.stdout
        assert f"[{name}] ok    config " in result.stdout
    assert "FAIL" not in result.stdout


def test_check_names_the_server_whose_own_check_fails(orchestrator, second):
    second.env_file.write_text("DJANGO_SECRET_KEY=x\n")  # the required variables are gone
    result = orchestrator.run("check")
    assert result.returncode == 1
    assert "[app2] FAIL" in result.stdout and "[app1] FAIL" not in result.stdout
    assert "problems on 1 of 2 server(s)" in result.stderr


def test_an_unknown_host_key_is_refused_with_exit_2(orchestrator, deployment, second, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    orchestrator.write([deployment.config_file, second.config_file], known_hosts=empty)
    result = orchestrator.run("status")
    assert result.returncode == 2
    line = _one_error_line(result)
    assert "app1: host key of 127.0.0.1" in line and "not verified" in line


def test_a_changed_host_key_is_refused_with_exit_2_even_by_check(orchestrator, deployment, second, tmp_path):
    impostor = sshd_server.keygen(tmp_path / "impostor_key")
    wrong = orchestrator.sshd.known_hosts_with("changed_known_hosts", sshd_server.public_line(impostor))
    orchestrator.write([deployment.config_file, second.config_file], known_hosts=wrong)
    for command in ("status", "check"):
        result = orchestrator.run(command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "host key of 127.0.0.1" in _one_error_line(result)


def test_a_known_key_of_another_type_is_a_changed_host_key_exit_2_not_unreachable(
        orchestrator, deployment, second, tmp_path):
    """known_hosts lists an RSA key for 127.0.0.1 (another host's), the server's key is ed25519:
    that is a key that does not match, not a server that cannot be reached."""
    deployment.ok("deploy", "base")
    other_host = sshd_server.keygen(tmp_path / "other_host_rsa", kind="rsa")
    rsa_only = orchestrator.sshd.known_hosts_with("rsa_known_hosts", sshd_server.public_line(other_host))
    orchestrator.write([deployment.config_file, second.config_file], known_hosts=rsa_only)
    for command in (("status",), ("deploy", "second")):
        result = orchestrator.run(*command)
        assert result.returncode == 2, result.stdout + result.stderr
        line = _one_error_line(result)
        assert "app1: host key of 127.0.0.1" in line and "not verified" in line, line
        assert result.stderr.splitlines() == [line]  # nothing else: no library warning either
    assert deployment.current == deployment.source.sha("base") and second.current is None
    assert second.releases == set() and _lock_of(deployment) is None


def test_a_server_running_another_deployer_version_is_refused(orchestrator, deployment, second, tmp_path):
    old = tmp_path / "old-deployer"
    old.write_text("#!/bin/sh\necho 'deployer, version 0.0.1'\n")
    old.chmod(old.stat().st_mode | stat.S_IXUSR)
    orchestrator.write([deployment.config_file, second.config_file], app2={"deployer": str(old)})
    result = orchestrator.run("status")
    assert result.returncode == 2
    assert "app2: runs deployer 0.0.1, this orchestrator is" in _one_error_line(result)


def test_a_server_without_a_deployer_is_refused(orchestrator, deployment, second, tmp_path):
    orchestrator.write([deployment.config_file, second.config_file], app1={"deployer": str(tmp_path / "nothing")})
    result = orchestrator.run("status")
    assert result.returncode == 2
    assert "app1: " in _one_error_line(result) and "does not answer --version" in result.stderr


def test_an_unreachable_server_is_exit_1_and_named(orchestrator, deployment, second):
    orchestrator.write([deployment.config_file, second.config_file], app2={"port": sshd_server._free_port()})
    result = orchestrator.run("status", "--json")
    assert result.returncode == 1
    assert "app2: cannot reach 127.0.0.1" in _one_error_line(result)
    data = json.loads(result.stdout)
    assert data["agree"] is False and data["servers"][1]["error"]


def test_release_builds_the_same_release_on_every_server_and_changes_nothing_live(orchestrator, deployment, second):
    sha = deployment.source.sha("second")
    result = orchestrator.run("release", "second")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sha
    for name in ("app1", "app2"):
        assert f"[{name}] [1/8] fetch mirror" in result.stderr
    for d in (deployment, second):
        assert sha in d.releases and d.current is None
        assert _lock_of(d) is None  # every lock was let go
    rows = [json.loads(d.ok("list", "--json").stdout)["releases"][0] for d in (deployment, second)]
    assert rows[0]["tree_digest"] == rows[1]["tree_digest"] and rows[0]["tree_digest"]
    assert rows[0]["requirements_key"] == rows[1]["requirements_key"]


def test_a_lock_held_on_one_server_releases_the_others_and_exits_3_naming_it(orchestrator, deployment, second):
    holder = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(second.config_file), "hold-lock"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdin.write("someone-else\n")  # its token, then the heartbeat would follow
        holder.stdin.flush()
        assert '"locked": true' in holder.stdout.readline()
        result = orchestrator.run("release", "second")
        assert result.returncode == 3, result.stderr
        line = _one_error_line(result)
        assert "app2: another deploy holds the lock" in line and f"pid {holder.pid}" in line
        assert _lock_of(deployment) is None  # app1's lock, taken first, was released
        assert deployment.releases == set() and second.releases == set()  # nothing was built
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _lock_of(second) is None


def test_the_orchestrators_lock_goes_when_its_ssh_connection_is_killed(orchestrator, deployment, wait_until):
    sshd = orchestrator.sshd
    client = subprocess.Popen(
        ["ssh", "-F", "/dev/null", "-i", str(sshd.client_key), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(sshd.port), f"{sshd.user}@127.0.0.1",
         REMOTE_DEPLOYER, "--config", str(deployment.config_file), "hold-lock"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client.stdin.write("orchestrator\n")
        client.stdin.flush()
        assert '"locked": true' in client.stdout.readline()
        assert _lock_of(deployment)["orchestrator"]  # held for an orchestrator (its token's digest)
        blocked = deployment.deployer("release", "base")
        assert blocked.returncode == 3 and "another deploy holds the lock" in blocked.stderr
    finally:
        client.kill()  # kill -9 of the side holding the connection
        client.wait()
    wait_until(lambda: _lock_of(deployment) is None, timeout=30)


def test_a_build_failure_on_one_server_changes_nothing_live_anywhere(orchestrator, deployment, second):
    base = deployment.source.sha("base")
    deployment.ok("deploy", "base")
    second.ok("deploy", "base")
    second.write_config(hooks={"after_build": ["false"]})  # app2's build fails after its release is made
    result = orchestrator.run("release", "second")
    assert result.returncode == 1, result.stderr
    line = _one_error_line(result)
    assert line.startswith("deployer: error: app2: step 'hook after_build: false' failed")
    assert line.endswith("— nothing live was changed on any server")
    assert deployment.current == base and second.current == base
    assert deployment.healthz()["release"] == base and second.healthz()["release"] == base
    assert _lock_of(deployment) is None and _lock_of(second) is None


def test_an_orchestrator_killed_during_the_build_leaves_no_lock_and_the_next_release_completes(
        orchestrator, deployment, second, wait_until):
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "SSH_AUTH_SOCK")}
    killed = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(orchestrator.config_file),
                               "release", "second"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: (_lock_of(deployment) or {}).get("orchestrator")
                   and (_lock_of(second) or {}).get("orchestrator"), timeout=60)
        time.sleep(1.0)  # inside the builds
    finally:
        killed.kill()
        killed.wait()
    wait_until(lambda: _lock_of(deployment) is None and _lock_of(second) is None, timeout=30)

    status = orchestrator.run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["agree"] is True  # nothing went live anywhere
    again = orchestrator.run("release", "second")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == deployment.source.sha("second")


def test_a_command_claiming_an_orchestrators_lock_that_is_not_held_is_exit_3(deployment):
    result = deployment.deployer("--held-lock", "release", "base", input="not-a-real-token\n")
    assert result.returncode == 3
    assert "the orchestrator's lock on this server is not held" in _one_error_line(result)
    assert deployment.releases == set()


def test_a_server_named_local_is_run_without_ssh_beside_one_over_ssh(orchestrator, deployment, second):
    orchestrator.write([deployment.config_file, second.config_file], app1={"ssh": "local"})
    result = orchestrator.run("status", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["servers"]
    assert [(row["name"], row["destination"]) for row in rows] == [
        ("app1", "local"), ("app2", f"{orchestrator.sshd.user}@127.0.0.1:{orchestrator.sshd.port}")]
    assert all(row["error"] is None and row["status"]["lock"] is None for row in rows)


BAD_REFS = ["--help", "-x", "", "a b", "..", "refs/../x", "r" * 300, b"\xff\xfe-not-utf-8", "main\nrm"]


def _asked_with(command: str, ref: str | bytes) -> list[str | bytes]:
    """How an operator passes `ref` to `command` (after `--`, so that `--help` is the ref)."""
    return ["rollback", "--to", ref] if command == "rollback" else [command, "--", ref]


def _what_is_there(d) -> tuple:
    return d.releases, d.current, d.history(), _lock_of(d)


def test_a_bad_ref_is_refused_by_the_orchestrator_before_any_server_is_asked(orchestrator, deployment, second):
    deployment.ok("deploy", "base")
    before = [_what_is_there(d) for d in (deployment, second)]
    for command in ("release", "deploy", "activate", "rollback"):
        for ref in BAD_REFS:
            result = orchestrator.run(*_asked_with(command, ref))
            asked = f"{command} {ref!r}"
            assert result.returncode == 2, (asked, result.stdout, result.stderr)
            line = _one_error_line(result)
            assert "[app" not in result.stderr and "app1" not in line and "app2" not in line, (asked, result.stderr)
            assert result.stdout == "", (asked, result.stdout)  # no help text, no sha
    assert [_what_is_there(d) for d in (deployment, second)] == before


_HEX32 = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")  # secrets.token_hex(16), as a token is made


def _command_lines_naming(*paths: Path) -> list[str]:
    """The command line of every process that names one of `paths`, as any user of the machine
    can read it in /proc/PID/cmdline."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(str(path) in line for path in paths):
            found.append(line)
    return found


def test_the_lock_token_is_in_no_command_line_and_the_lock_still_holds(orchestrator, deployment, second,
                                                                       wait_until):
    for d in (deployment, second):
        d.write_config(hooks={"after_build": ["sleep 8"]})  # each build holds its lock a while
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "DEPLOYER_DEBUG", "SSH_AUTH_SOCK")}
    deploying = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(orchestrator.config_file),
                                  "deploy", "base"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: set[str] = set()

    def watch() -> None:
        while deploying.poll() is None:
            seen.update(_command_lines_naming(deployment.config_file, second.config_file, orchestrator.config_file))
            time.sleep(0.02)
    watching = threading.Thread(target=watch)
    watching.start()
    try:
        assert wait_until(lambda: (_lock_of(deployment) or {}).get("orchestrator")
                          and (_lock_of(second) or {}).get("orchestrator"), timeout=120)
        digest = _lock_of(deployment)["orchestrator"]

        another = orchestrator.run("release", "base")
        assert another.returncode == 3, another.stderr
        assert "app1: another deploy holds the lock" in _one_error_line(another)
        wrong = second.deployer("--held-lock", "release", "base", input="0123456789abcdef" * 2 + "\n")
        assert wrong.returncode == 3 and "the orchestrator's lock on this server is not held" in wrong.stderr
        none = second.deployer("--held-lock", "release", "base", input="")
        assert none.returncode == 2 and "not a lock token" in _one_error_line(none)

        out, err = deploying.communicate(timeout=600)
    finally:
        if deploying.poll() is None:
            deploying.kill()
        watching.join()
    assert deploying.returncode == 0, err
    assert deployment.current == second.current == deployment.source.sha("base")

    assert any(" hold-lock" in line for line in seen) and any("--orchestrated" in line for line in seen), seen
    assert any(" --held-lock " in line and " release -- base" in line for line in seen), seen
    assert not [line for line in seen if _HEX32.search(line)]
    assert not [word for word in _HEX32.findall(out + err) if token_id(word) == digest]
