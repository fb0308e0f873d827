"""service.strategy and the standby keys (docs/design.md §16): checked at load, exit 2 before anything."""

import pytest
from test_config import valid, write

from deployer.config import load_config
from deployer.errors import BadInput


def test_the_shipped_config_runs_two_colours_with_a_ten_minute_standby(tmp_path):
    service = load_config(write(tmp_path, valid())).service
    assert service.standby and service.standby_seconds == 600
    assert service.colour_argv(service.start, "green") == [
        "sudo", "-n", "/usr/bin/systemctl", "start", "skinmenu@green.service"]
    assert str(service.socket_of("blue")) == "/run/skinmenu/blue.sock"


def test_a_config_without_a_strategy_keeps_the_restart_strategy(tmp_path):
    data = valid()
    data["service"] = {"restart": "systemctl restart x.service"}
    service = load_config(write(tmp_path, data)).service
    assert not service.standby and service.restart_argv == ["systemctl", "restart", "x.service"]


def test_a_colour_never_changes_how_a_command_splits(tmp_path):
    data = valid()
    data["service"]["start"] = "/usr/local/bin/start 'one {colour}'"
    service = load_config(write(tmp_path, data)).service
    assert service.colour_argv(service.start, "blue; rm -rf /") == ["/usr/local/bin/start", "one blue; rm -rf /"]


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(strategy="bluegreen"), "key 'service.strategy' must be one of restart, standby"),
    (lambda s: s.update(standby_seconds=-1), "key 'service.standby_seconds' must be 0"),
    (lambda s: s.update(standby_seconds=float("nan")), "must be a finite number"),
    (lambda s: s.pop("stop"), "missing required key 'service.stop' (service.strategy is standby)"),
    (lambda s: s.update(start="systemctl start skinmenu.service"), "key 'service.start' must name the instance as {colour}"),
    (lambda s: s.update(socket="/run/" + "x" * 120 + "/{colour}.sock"), "longer than a unix socket path may be"),
    (lambda s: (s.pop("restart"), s.update(strategy="restart")), "missing required key 'service.restart'"),
])
def test_bad_standby_settings_are_refused_at_load(tmp_path, mutate, message):
    data = valid()
    mutate(data["service"])
    with pytest.raises(BadInput) as caught:
        load_config(write(tmp_path, data))
    assert message in caught.value.message
