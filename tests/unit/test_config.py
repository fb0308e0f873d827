"""releases.yml validation: every mistake is exit 2 naming the key and the file (docs/design.md §4)."""

import os
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from deployer.cli import main
from deployer.config import load_config
from deployer.errors import BadInput

REPO_ROOT = Path(__file__).resolve().parents[2]


def valid() -> dict:
    return yaml.safe_load((REPO_ROOT / "releases.yml").read_text())


def write(tmp_path, data) -> Path:
    path = tmp_path / "releases.yml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_the_committed_production_config_is_valid():
    config = load_config(REPO_ROOT / "releases.yml")
    assert config.deploy_to == Path("/home/deploy")
    assert config.django.settings == "config.settings.production"
    assert config.required_env == ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS",
                                   "DJANGO_CSRF_TRUSTED_ORIGINS", "WAGTAILADMIN_BASE_URL")
    assert config.smoke.url == "https://skinmenu.example.com"
    assert config.smoke.check_static is True
    assert config.service.restart.startswith("sudo -n ")


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    data = valid() | {"deploy_to": "deploy", "env_file": "site.env", "repo": "src"}
    config = load_config(write(tmp_path, data))
    assert config.deploy_to == tmp_path / "deploy"
    assert config.env_file == tmp_path / "site.env"
    assert config.repo == str(tmp_path / "src")


def test_git_urls_stay_urls(tmp_path):
    for url in ("git@github.com:skinmenu/site.git", "https://example.com/site.git", "ssh://host/site"):
        assert load_config(write(tmp_path, valid() | {"repo": url})).repo == url


def test_optional_keys_may_be_left_out(tmp_path):
    data = valid()
    del data["install"], data["keep_releases"], data["smoke"]["resolve"], data["smoke"]["cacert"]
    config = load_config(write(tmp_path, data))
    assert config.keep_releases == 5
    assert config.smoke.resolve is None and config.install.offline is False


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(backups={"keep": 0}), "key 'backups.keep' must be at least 1"),
    (lambda d: d.update(backups={"keep": "ten"}), "key 'backups.keep' must be an integer"),
    (lambda d: d.update(backups={"pg_dump": ""}), "key 'backups.pg_dump' must not be empty"),
    (lambda d: d.update(backups={"gzip": True}), "unknown key 'backups.gzip'"),
    (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
    (lambda d: d["smoke"].update(retries=3), "unknown key 'smoke.retries'"),
    (lambda d: d.pop("deploy_to"), "missing required key 'deploy_to'"),
    (lambda d: d["django"].pop("settings"), "missing required key 'django.settings'"),
    (lambda d: d.update(keep_releases="five"), "key 'keep_releases' must be an integer"),
    (lambda d: d.update(keep_releases=True), "key 'keep_releases' must be an integer, not a boolean"),
    (lambda d: d.update(keep_releases=0), "key 'keep_releases' must be at least 1"),
    (lambda d: d["smoke"].update(check_static="yes"), "key 'smoke.check_static' must be true or false"),
    (lambda d: d["smoke"].update(url="skinmenu.example.com"), "key 'smoke.url' must start with http"),
    (lambda d: d.update(shared_dirs=["../etc"]), "'shared_dirs' entry '../etc'"),
    (lambda d: d.update(shared_dirs="media"), "key 'shared_dirs' must be a list"),
    (lambda d: d.update(required_env=["NOT A NAME"]), "'required_env' entry"),
    (lambda d: d["django"].update(project_dir="../../elsewhere"), "'django.project_dir' must be a path inside"),
    (lambda d: d.update(service="systemctl restart x"), "'service' must be a mapping"),
    (lambda d: d.update(python=""), "key 'python' must not be empty"),
    (lambda d: d["service"].update(restart="/path/restart.sh 'oops"), "key 'service.restart' is not a usable command"),
    (lambda d: d["service"].update(is_active='systemctl is-active "x'), "key 'service.is_active' is not a usable command"),
    (lambda d: d["service"].update(restart="''"), "names no program"),
    (lambda d: d["smoke"].update(url="http://127.0.0.1:99999"), "key 'smoke.url' is not a valid URL"),
    (lambda d: d["smoke"].update(url="http://127.0.0.1:0"), "key 'smoke.url' has port 0"),
    (lambda d: d["smoke"].update(url="http://"), "key 'smoke.url' has no host"),
    (lambda d: d["smoke"].update(url="https://:443/"), "key 'smoke.url' has no host"),
    (lambda d: d["smoke"].update(url="https://bad_host!/"), "key 'smoke.url' has an invalid host"),
    (lambda d: d["smoke"].update(url="https://user:secret@skinmenu.example.com"), "must not contain a user name"),
    (lambda d: d["smoke"].update(url="https://skinmenu.example.com/?a=1"), "must not have a query or a fragment"),
    (lambda d: d["smoke"].update(url="https://skinmenu.example.com/#top"), "must not have a query or a fragment"),
    (lambda d: d["smoke"].update(url="https://skin menu.example.com"), "must not contain spaces"),
    (lambda d: d["smoke"].update(url="ftp://skinmenu.example.com"), "must start with http"),
    (lambda d: d["smoke"].update(resolve="127.0.0.1:443"), "key 'smoke.resolve' must be an IP address or a host name"),
    (lambda d: d["smoke"].update(resolve="999.1.1.1"), "key 'smoke.resolve' must be an IP address or a host name"),
    (lambda d: d["smoke"].update(cacert="no-such-ca.pem"), "key 'smoke.cacert' names"),
    (lambda d: d.update(keep_releases=2.5), "key 'keep_releases' must be an integer"),
    (lambda d: d.update(deploy_to="/"), "key 'deploy_to' must not be the filesystem root"),
    (lambda d: d.update(deploy_to="/usr/.."), "key 'deploy_to' must not be the filesystem root"),
    (lambda d: d.update(deploy_to=str(REPO_ROOT / "README.md")), "exists and is not a directory"),
    (lambda d: d.update(shared_dirs=["venv"]), "'shared_dirs' entry 'venv' is not allowed"),
    (lambda d: d.update(shared_dirs=["staticfiles"]), "'shared_dirs' entry 'staticfiles' is not allowed"),
    (lambda d: d.update(shared_dirs=["RELEASE.json"]), "'shared_dirs' entry 'RELEASE.json' is not allowed"),
    (lambda d: d.update(shared_dirs=["REVISION"]), "'shared_dirs' entry 'REVISION' is not allowed"),
    (lambda d: d.update(shared_dirs=["app"]), "'shared_dirs' entry 'app' is not allowed"),
    (lambda d: d.update(shared_dirs=["media", "media"]), "key 'shared_dirs' lists 'media' twice"),
    (lambda d: d.update(shared_dirs=["media/uploads"]), "must be a plain directory name"),
    (lambda d: d.update(shared_dirs=[".hidden"]), "must be a plain directory name"),
    (lambda d: d.update(shared_dirs=[""]), "key 'shared_dirs' must not be empty"),
    (lambda d: d.update(required_env=["1ST"]), "'required_env' entry '1ST' is not a variable name"),
    (lambda d: d.update(required_env=["CAF\u00c9"]), "is not a variable name"),
    (lambda d: d["django"].update(settings="config/settings/production"), "'django.settings' must be a dotted module name"),
    (lambda d: d["django"].update(project_dir="venv/app"), "'django.project_dir' must not be inside 'venv'"),
    (lambda d: d.update(app="skin\x00menu"), "key 'app' must not contain control characters"),
    (lambda d: d.update(deploy_to="/home/deploy\n"), "key 'deploy_to' must not contain control characters"),
    (lambda d: d.update({"a\nb": 1}), "unknown key 'a\\nb'"),
])
def test_a_broken_config_names_the_key_and_the_file(tmp_path, mutate, message):
    data = valid()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(BadInput) as excinfo:
        load_config(path)
    assert message in excinfo.value.message
    assert str(path) in excinfo.value.message


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "app: skinmenu\nrepo: [unclosed\n")
    with pytest.raises(BadInput, match="line"):
        load_config(path)


@pytest.mark.parametrize("content", ["", "- a list\n", "just a string\n"])
def test_a_config_that_is_not_a_mapping_is_refused(tmp_path, content):
    with pytest.raises(BadInput, match="must be a mapping|missing"):
        load_config(write(tmp_path, content))


def test_the_cli_exits_2_with_one_line_for_a_bad_config(tmp_path):
    path = write(tmp_path, valid() | {"colour": "blue"})
    result = CliRunner().invoke(main, ["--config", str(path), "list"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"deployer: error: {path}: unknown key 'colour'"]


def test_the_cli_finds_its_config_through_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_CONFIG", str(tmp_path / "missing.yml"))
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 2
    assert "missing.yml not found" in result.output


def test_every_command_has_help():
    for command in ("release", "activate", "deploy", "rollback", "prune", "list", "status", "check"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Usage: " in result.output


def test_usage_errors_exit_2():
    assert CliRunner().invoke(main, ["release"]).exit_code == 2
    assert CliRunner().invoke(main, ["no-such-command"]).exit_code == 2


@pytest.mark.parametrize("content, message", [
    (b"app: skin\xffmenu\n", "line 1: not UTF-8 text"),
    ("app: " + "[" * 20000, "nested too deeply"),
    ("app: " + "{" * 20000, "nested too deeply"),
    ("app: x\nrepo: \x07\n", "line 2: not valid YAML (unacceptable character U+0007)"),
    ("app: x\napp: y\n", "line 2: not valid YAML (key 'app' appears twice)"),
    ("app: !!python/object:os.system x\n", "not valid YAML"),
    ("keep_releases: " + "9" * 5000 + "\n", "cannot be loaded: ValueError"),
])
def test_a_config_that_is_not_yaml_we_can_read_is_one_line_of_bad_input(tmp_path, content, message):
    path = tmp_path / "releases.yml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BadInput) as excinfo:
        load_config(path)
    assert message in excinfo.value.message
    assert str(path) in excinfo.value.message
    assert "\n" not in excinfo.value.message


def test_a_config_file_that_is_a_directory_or_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        with pytest.raises(BadInput, match="not a regular file"):
            load_config(path)


def test_service_commands_are_split_like_a_shell_would(tmp_path):
    data = valid()
    data["service"]["restart"] = "sudo -n '/usr/local/bin/restart site' --now"
    config = load_config(write(tmp_path, data))
    assert config.service.restart_argv == ["sudo", "-n", "/usr/local/bin/restart site", "--now"]
    assert config.service.restart == data["service"]["restart"]


def test_a_readable_cacert_and_an_ipv6_front_door_are_accepted(tmp_path):
    (tmp_path / "ca.pem").write_text("not checked here\n")
    data = valid()
    data["smoke"].update(url="https://[::1]:8443/", resolve="::1", cacert="ca.pem")
    config = load_config(write(tmp_path, data))
    assert config.smoke.cacert == tmp_path / "ca.pem"
    assert config.smoke.url == "https://[::1]:8443"


def test_an_empty_config_option_is_bad_input_not_the_default_file():
    result = CliRunner().invoke(main, ["--config", "", "list"])
    assert result.exit_code == 2
    assert "empty file name" in result.output


def test_backups_default_to_ten_and_pg_dump_on_path(tmp_path):
    config = load_config(write(tmp_path, valid()))
    assert (config.backups.keep, config.backups.pg_dump) == (10, "pg_dump")
    config = load_config(write(tmp_path, valid() | {"backups": {"keep": 3, "pg_dump": "bin/pg_dump"}}))
    assert (config.backups.keep, config.backups.pg_dump) == (3, str(tmp_path / "bin" / "pg_dump"))


# --- durations: one check for every duration key (deployer/config.py `Seconds`) ----------------

# key -> (the most it may be, whether 0 is allowed)
DURATIONS = {
    "service.standby_seconds": (86400, True),
    "smoke.timeout": (3600, False),
    "hooks.timeout": (86400, False),
    "notify.timeout": (300, False),
    "django.migrate_timeout": (86400, False),
}
# Written into the YAML as they are: how an operator would spell them.
BAD_DURATIONS = [
    ("1.0e+300", "must be at most"),
    ("1e300", "must be a number of seconds, got str '1e300'"),  # YAML 1.1: no dot, a string
    ("-1", None),  # "more than 0" or "0 (...) or more", per key
    (".nan", "must be a finite number of seconds, got nan"),
    (".inf", "must be a finite number of seconds, got inf"),
    ("-.inf", "must be a finite number of seconds, got -inf"),
    ("true", "must be a number of seconds, not a boolean"),
    ('"10"', "must be a number of seconds, got str '10'"),
    ("1" + "0" * 400, "must be at most"),  # an int no float can hold
    ("[10]", "must be a number of seconds, got list"),
]


def with_duration(tmp_path, key: str, text: str) -> Path:
    """releases.yml with `key` set to the YAML text `text`, written as it is."""
    data = valid()
    data.setdefault("notify", {"webhook_env": "SKINMENU_WEBHOOK"})
    section, name = key.split(".")
    data.setdefault(section, {})[name] = "DURATION_GOES_HERE"
    rendered = yaml.safe_dump(data, sort_keys=False)
    assert rendered.count("DURATION_GOES_HERE") == 1
    return write(tmp_path, rendered.replace("DURATION_GOES_HERE", text))


def duration_of(config, key: str) -> float:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


@pytest.mark.parametrize("text, message", BAD_DURATIONS, ids=[text[:12] for text, _ in BAD_DURATIONS])
@pytest.mark.parametrize("key", DURATIONS)
def test_a_bad_duration_is_one_line_naming_the_key(tmp_path, key, text, message):
    path = with_duration(tmp_path, key, text)
    with pytest.raises(BadInput) as caught:
        load_config(path)
    got = caught.value.message
    if message is None:
        message = "must be 0 (" if DURATIONS[key][1] else "must be more than 0 seconds, got -1"
    assert got.startswith(f"{path}: key '{key}' "), got
    assert message in got
    assert "\n" not in got and len(got) < 300


@pytest.mark.parametrize("key", DURATIONS)
def test_a_duration_is_refused_just_past_its_most_and_kept_at_it(tmp_path, key):
    most, zero = DURATIONS[key]
    with pytest.raises(BadInput, match=re.escape(f"key '{key}' must be at most {most} seconds")):
        load_config(with_duration(tmp_path, key, str(most + 0.5)))
    assert duration_of(load_config(with_duration(tmp_path, key, str(most))), key) == most
    assert duration_of(load_config(with_duration(tmp_path, key, "0.25")), key) == 0.25
    if zero:
        assert duration_of(load_config(with_duration(tmp_path, key, "0")), key) == 0
    else:
        with pytest.raises(BadInput, match=re.escape(f"key '{key}' must be more than 0 seconds, got 0")):
            load_config(with_duration(tmp_path, key, "0"))


def test_durations_are_floats_with_their_defaults(tmp_path):
    data = valid()
    del data["service"]["standby_seconds"], data["smoke"]["timeout"]
    assert "migrate_timeout" not in data["django"]
    data["notify"] = {"webhook_env": "SKINMENU_WEBHOOK"}
    config = load_config(write(tmp_path, data))
    assert (config.service.standby_seconds, config.smoke.timeout, config.hooks.timeout, config.notify.timeout,
            config.django.migrate_timeout) == (600.0, 30.0, 300.0, 5.0, 3600.0)
    config = load_config(with_duration(tmp_path, "hooks.timeout", "7"))
    assert isinstance(config.hooks.timeout, float) and config.hooks.timeout == 7.0


def test_the_cli_exits_2_with_one_line_for_a_huge_hook_timeout(tmp_path):
    path = with_duration(tmp_path, "hooks.timeout", "1.0e+300")
    result = CliRunner().invoke(main, ["--config", str(path), "list"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"deployer: error: {path}: key 'hooks.timeout' must be at most 86400 seconds (24 h), got 1e+300"]


def test_migrate_timeout_reaches_every_migrate_the_schema_runs(tmp_path, monkeypatch):
    """schema.py's migrate and unapply commands run through django.manage with the configured
    timeout; proc.run turns one that runs past it into an ordinary migrate failure."""
    from deployer import proc, schema
    from deployer.errors import OperationFailed

    config = load_config(with_duration(tmp_path, "django.migrate_timeout", "0.5"))
    assert config.django.migrate_timeout == 0.5
    seen = []

    def fake_run(argv, **kwargs):
        seen.append((argv[1:], kwargs["timeout"]))
        return proc.run(["sleep", "5"], what=kwargs["what"], timeout=kwargs["timeout"])

    monkeypatch.setattr("deployer.django.run", fake_run)
    paths = type("Paths", (), {"release": lambda self, sha: tmp_path / sha})()
    with pytest.raises(OperationFailed) as caught:
        schema._run(config, paths, {}, "a" * 40, "/backups/before.sqlite3", "migrate", "treatments", "0001", "--noinput")
    assert seen == [(["manage.py", "migrate", "treatments", "0001", "--noinput"], 0.5)]
    assert caught.value.message == "migrate treatments 0001: timed out after 0.5s"
    assert caught.value.hint == "the backup taken before it is /backups/before.sqlite3"
