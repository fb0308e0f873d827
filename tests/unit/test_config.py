"""releases.yml validation: every mistake is exit 2 naming the key and the file (DESIGN §4)."""

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
    (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
    (lambda d: d["smoke"].update(retries=3), "unknown key 'smoke.retries'"),
    (lambda d: d.pop("deploy_to"), "missing required key 'deploy_to'"),
    (lambda d: d["django"].pop("settings"), "missing required key 'django.settings'"),
    (lambda d: d.update(keep_releases="five"), "key 'keep_releases' must be an integer"),
    (lambda d: d.update(keep_releases=True), "key 'keep_releases' must be an integer, not a boolean"),
    (lambda d: d.update(keep_releases=0), "key 'keep_releases' must be at least 1"),
    (lambda d: d["smoke"].update(check_static="yes"), "key 'smoke.check_static' must be true or false"),
    (lambda d: d["smoke"].update(timeout=-1), "key 'smoke.timeout' must be positive"),
    (lambda d: d["smoke"].update(url="skinmenu.example.com"), "key 'smoke.url' must start with http"),
    (lambda d: d.update(shared_dirs=["../etc"]), "'shared_dirs' entry '../etc'"),
    (lambda d: d.update(shared_dirs="media"), "key 'shared_dirs' must be a list"),
    (lambda d: d.update(required_env=["NOT A NAME"]), "'required_env' entry"),
    (lambda d: d["django"].update(project_dir="../../elsewhere"), "'django.project_dir' must be a path inside"),
    (lambda d: d.update(service="systemctl restart x"), "'service' must be a mapping"),
    (lambda d: d.update(python=""), "key 'python' must not be empty"),
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
