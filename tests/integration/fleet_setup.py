"""What the orchestrator tests share: a private sshd on 127.0.0.1 (started by the suite, with
its own host key), a second deploy root ("server") sharing the first one's database, and the
real CLI run with an orchestrator config that reaches both through that sshd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sshd_server
import yaml

REMOTE_DEPLOYER = str(Path(sys.executable).parent / "deployer")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = sshd_server.start(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def second(deployment, tmp_path):
    """A second deploy root beside `deployment` (a second "server"), sharing its database as
    app servers share one PostgreSQL server: migrations run once, from app1."""
    (tmp_path / "app2").mkdir()
    other = type(deployment)(tmp_path / "app2", deployment.source, deployment.python, deployment.uv_cache,
                            strategy=deployment.strategy)
    with other.env_file.open("a") as env:
        env.write(f"DJANGO_DB_PATH={deployment.database}\n")
    yield other
    other.stop()


class Orchestrator:
    """The real CLI run with an orchestrator config (servers reached through `sshd`)."""

    def __init__(self, root: Path, sshd: sshd_server.SshServer, configs: list[Path]) -> None:
        self.root = root
        self.sshd = sshd
        self.config_file = root / "servers.yml"
        self.write(configs)

    def write(self, configs: list[Path], known_hosts: Path | None = None, **server_overrides) -> None:
        servers = [{"name": f"app{i + 1}", "ssh": f"{self.sshd.user}@127.0.0.1", "port": self.sshd.port,
                    "roles": ["app", "migrations"] if i == 0 else ["app"], "config": str(config)}
                   for i, config in enumerate(configs)]
        for name, changes in server_overrides.items():
            next(s for s in servers if s["name"] == name).update(changes)
        self.config_file.write_text(yaml.safe_dump({
            "servers": servers,
            "deployer": REMOTE_DEPLOYER,
            "ssh": {"known_hosts": str(known_hosts or self.sshd.known_hosts),
                    "identity": str(self.sshd.client_key), "connect_timeout": 5},
        }, sort_keys=False))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "DEPLOYER_DEBUG", "SSH_AUTH_SOCK")}
        return subprocess.run([sys.executable, "-m", "deployer", "--config", str(self.config_file), *args],
                              capture_output=True, text=True, timeout=600, env=env)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The failure's one `deployer: error:` line, last on stderr (step lines may come before it)."""
    lines = result.stderr.splitlines()
    assert lines and lines[-1].startswith("deployer: error: "), result.stderr
    assert sum(line.startswith("deployer: error: ") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


@pytest.fixture
def orchestrator(tmp_path, sshd, deployment, second):
    return Orchestrator(tmp_path, sshd, [deployment.config_file, second.config_file])


def lock_of(d) -> dict | None:
    return json.loads(d.ok("status", "--json").stdout)["lock"]


def orchestrated_commands_of(d) -> list[str]:
    """Pids of commands an orchestrator started on this deploy root that still run (putting back)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if str(d.config_file).encode() in argv and b"--orchestrated" in argv:
            found.append(cmdline.parent.name)
    return found


def settled(*deployments) -> bool:
    """No lock held and no orchestrated command still unwinding (a lock lets go at once when the
    orchestrator goes; the command it ran may still be putting back for seconds)."""
    return all(lock_of(d) is None and not orchestrated_commands_of(d) for d in deployments)
