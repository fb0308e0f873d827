"""The orchestrator's config (docs/design.md §13): servers, roles, SSH settings, validated at load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployer.errors import BadInput
from deployer.fleet import TIMEOUT_KEYS, is_fleet_file, load_fleet

REPO_ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, **overrides) -> Path:
    (tmp_path / "known_hosts").write_text("")
    config = {
        "servers": [
            {"name": "app1", "ssh": "deploy@app1.internal", "roles": ["app", "migrations"],
             "config": "/home/deploy/releases.yml"},
            {"name": "app2", "ssh": "deploy@app2.internal", "port": 2222, "roles": ["app"],
             "config": "/home/deploy/releases.yml"},
        ],
        "ssh": {"known_hosts": "known_hosts", "connect_timeout": 5},
    }
    config.update(overrides)
    path = tmp_path / "servers.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _refused(path: Path) -> str:
    with pytest.raises(BadInput) as caught:
        load_fleet(path)
    return caught.value.message


def test_a_two_server_config_loads_in_its_order_with_one_migrations_server(tmp_path):
    fleet = load_fleet(_write(tmp_path))
    assert [server.name for server in fleet.servers] == ["app1", "app2"]
    assert fleet.migrations_server.name == "app1"
    assert fleet.servers[1].destination == "deploy@app2.internal:2222"
    assert fleet.servers[0].deployer == "deployer"
    assert fleet.ssh.known_hosts == (tmp_path / "known_hosts").resolve()
    assert fleet.parallel == 2  # every server at once unless `parallel` says otherwise


def test_a_servers_own_releases_yml_is_not_an_orchestrator_config():
    assert not is_fleet_file(REPO_ROOT / "releases.yml")
    assert is_fleet_file(REPO_ROOT / "docs" / "servers.example.yml")


def test_the_documented_example_for_two_app_servers_and_postgresql_loads(tmp_path):
    text = (REPO_ROOT / "docs" / "servers.example.yml").read_text()
    (tmp_path / "known_hosts").write_text("")
    path = tmp_path / "servers.yml"
    path.write_text(text.replace("~/.ssh/skinmenu_known_hosts", str(tmp_path / "known_hosts"))
                    .replace("~/.ssh/skinmenu_deploy", str(tmp_path / "known_hosts")))
    fleet = load_fleet(path)
    assert [s.name for s in fleet.servers] == ["app1", "app2"]
    assert fleet.migrations_server.name == "app1"


def test_no_migrations_server_or_two_of_them_is_refused(tmp_path):
    servers = yaml.safe_load(_write(tmp_path).read_text())["servers"]
    servers[0]["roles"] = ["app"]
    assert "exactly one server the 'migrations' role (found: none)" in _refused(_write(tmp_path, servers=servers))
    servers[0]["roles"] = servers[1]["roles"] = ["app", "migrations"]
    assert "(found: app1, app2)" in _refused(_write(tmp_path, servers=servers))


@pytest.mark.parametrize("change, named", [
    ({"name": "app 1"}, "servers[0].name"),
    ({"roles": ["app", "web"]}, "servers[0].roles"),
    ({"ssh": "-oProxyCommand=x"}, "servers[0].ssh"),
    ({"port": 70000}, "servers[0].port"),
    ({"config": "releases.yml"}, "servers[0].config"),
    ({"colour": "blue"}, "servers[0].colour"),
    ({"port": "22"}, "servers[0].port"),
])
def test_a_bad_server_entry_is_refused_naming_its_key(tmp_path, change, named):
    servers = yaml.safe_load(_write(tmp_path).read_text())["servers"]
    servers[0].update(change)
    assert named in _refused(_write(tmp_path, servers=servers))


def test_an_empty_server_list_or_a_missing_known_hosts_is_refused(tmp_path):
    assert "'servers' must list at least one server" in _refused(_write(tmp_path, servers=[]))
    assert "'ssh.known_hosts'" in _refused(_write(tmp_path, ssh={"known_hosts": "missing"}))
    assert "missing required key 'ssh.known_hosts'" in _refused(_write(tmp_path, ssh={"connect_timeout": 3}))


@pytest.mark.parametrize("text, message", [
    ("1.0e+300", "must be at most 300 seconds (5 min), got 1e+300"),
    ("1e300", "must be a number of seconds, got str '1e300'"),
    ("-1", "must be more than 0 seconds, got -1"),
    ("0", "must be more than 0 seconds, got 0"),
    ("300.5", "must be at most 300 seconds"),
    (".nan", "must be a finite number of seconds, got nan"),
    (".inf", "must be a finite number of seconds, got inf"),
    ("true", "must be a number of seconds, not a boolean"),
    ('"10"', "must be a number of seconds, got str '10'"),
])
def test_a_bad_connect_timeout_is_refused_naming_the_key(tmp_path, text, message):
    path = _write(tmp_path, ssh={"known_hosts": "known_hosts", "connect_timeout": "TIMEOUT_GOES_HERE"})
    path.write_text(path.read_text().replace("TIMEOUT_GOES_HERE", text))
    refused = _refused(path)
    assert refused.startswith(f"{path}: key 'ssh.connect_timeout' ") and message in refused, refused


def test_the_connect_timeout_is_a_float_defaulting_to_10(tmp_path):
    assert load_fleet(_write(tmp_path)).ssh.connect_timeout == 5.0
    assert load_fleet(_write(tmp_path, ssh={"known_hosts": "known_hosts"})).ssh.connect_timeout == 10.0
    assert load_fleet(_write(tmp_path, ssh={"known_hosts": "known_hosts", "connect_timeout": 300})).ssh.connect_timeout == 300.0


def test_a_server_named_twice_is_refused(tmp_path):
    servers = yaml.safe_load(_write(tmp_path).read_text())["servers"]
    servers[1]["name"] = "app1"
    assert "names 'app1' twice" in _refused(_write(tmp_path, servers=servers))


def test_a_command_that_runs_on_one_server_refuses_an_orchestrator_config_with_exit_2(tmp_path):
    path = _write(tmp_path)
    for argv in (["expire-standby"], ["release", "main", "--rebuild"], ["deploy", "main", "--wait", "5"]):
        result = subprocess.run([sys.executable, "-m", "deployer", "--config", str(path), *argv],
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("deployer: error: ")


def test_a_bad_orchestrator_config_is_one_line_and_exit_2(tmp_path):
    path = _write(tmp_path, servers=[{"name": "app1", "ssh": "app1", "roles": ["app"], "config": "/r.yml"}])
    result = subprocess.run([sys.executable, "-m", "deployer", "--config", str(path), "status"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("deployer: error: ") and result.stderr.count("\n") == 1
    assert "migrations" in result.stderr


def test_every_wait_of_the_orchestrator_has_a_deadline_which_the_config_can_shorten(tmp_path):
    defaults = load_fleet(_write(tmp_path)).timeouts
    assert all(getattr(defaults, key) > 0 for key in TIMEOUT_KEYS)
    fleet = load_fleet(_write(tmp_path, timeouts={"prepare": 20, "put_back": 45.5}))
    assert (fleet.timeouts.prepare, fleet.timeouts.put_back) == (20.0, 45.5)
    assert fleet.timeouts.live == defaults.live
    # A server waits at its barrier for the others' slowest phases and their put-back.
    assert fleet.timeouts.barrier(batches=2) == 20 + 2 * defaults.live + 45.5 + 60


@pytest.mark.parametrize("value", [0, -1, 1e300, float("nan"), float("inf"), True, "10"])
@pytest.mark.parametrize("key", ["lock", "migrate", "live", "put_back"])
def test_a_deadline_that_is_not_a_sane_number_of_seconds_is_refused_naming_its_key(tmp_path, key, value):
    assert f"timeouts.{key}" in _refused(_write(tmp_path, timeouts={key: value}))


def test_an_unknown_deadline_is_refused(tmp_path):
    assert "timeouts.smoke" in _refused(_write(tmp_path, timeouts={"smoke": 10}))


def test_a_fleet_webhook_names_an_env_file_and_a_variable(tmp_path):
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("FLEET_WEBHOOK_URL=https://hooks.example/x\n")
    fleet = load_fleet(_write(tmp_path, notify={"env_file": "orchestrator.env", "webhook_env": "FLEET_WEBHOOK_URL"}))
    assert (fleet.notify.env_file, fleet.notify.webhook.webhook_env, fleet.notify.webhook.timeout) == (
        env_file, "FLEET_WEBHOOK_URL", 5.0)
    assert load_fleet(_write(tmp_path)).notify is None
    assert "'notify.env_file' names" in _refused(_write(tmp_path, notify={"env_file": "missing.env", "webhook_env": "X"}))
    assert "'notify.webhook_env' must name an env-file variable" in _refused(
        _write(tmp_path, notify={"env_file": "orchestrator.env", "webhook_env": "https://hooks.example/x"}))
    assert "missing required key 'notify.env_file'" in _refused(_write(tmp_path, notify={"webhook_env": "X"}))
