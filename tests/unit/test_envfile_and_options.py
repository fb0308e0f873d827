"""The env file and the command-line options: every mistake is one line of bad input (exit 2),
and an env file's values never appear in a message."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from deployer import envfile
from deployer.cli import main
from deployer.errors import BadInput, OperationFailed, one_line, shown
from deployer.proc import split_command

SECRET = "s3cr3t-value-never-shown"


def env_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "site.env"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("content, message", [
    (f"A={SECRET}\nB=caf\xe9\n".encode("latin-1"), "line 2 is not UTF-8 text"),
    (f"A={SECRET}\nnot a pair\n".encode(), "line 2: expected KEY=VALUE"),
    (f"A={SECRET}\n\u00c9T\u00c9=1\n".encode(), "line 2: expected KEY=VALUE"),
    (f"A={SECRET}\nB=x\x00y\n".encode(), "line 2: the value of B contains a NUL character"),
    (f"A={SECRET}\n".encode(), "missing required variable(s): B"),
])
def test_a_bad_env_file_is_bad_input_that_never_shows_a_value(tmp_path, content, message):
    path = env_file(tmp_path, content)
    with pytest.raises(BadInput) as excinfo:
        envfile.load(path, ("A", "B"))
    assert message in excinfo.value.message
    assert str(path) in excinfo.value.message
    assert SECRET not in excinfo.value.message + excinfo.value.hint


def test_an_env_file_that_is_a_directory_is_bad_input(tmp_path):
    directory = tmp_path / "site.env"
    directory.mkdir(mode=0o700)
    with pytest.raises(BadInput, match="is not a regular file"):
        envfile.load(directory, ())


def test_an_env_file_path_through_a_regular_file_is_bad_input(tmp_path):
    path = env_file(tmp_path, b"A=1\n") / "child.env"
    with pytest.raises(BadInput, match="cannot be read: Not a directory"):
        envfile.load(path, ())


def test_messages_stay_on_one_line_whatever_the_input():
    exc = BadInput("config /tmp/a\nb: bad\x1b[2J", hint="fix\r\nit")
    assert exc.message == "config /tmp/a\\nb: bad\\x1b[2J"
    assert exc.hint == "fix\\r\\nit"
    exc.hint = "later\nhint"
    assert exc.hint == "later\\nhint"
    failed = OperationFailed("x", details="line one\r\nline\x07 two\n")
    assert failed.details.splitlines() == ["line one", "line\\x07 two"]
    assert one_line("caf\u00e9 \u2028") == "caf\u00e9 \\u2028"
    assert shown("\udcff") == "'\\udcff'"


@pytest.mark.parametrize("command, message", [
    ("/path/restart.sh 'oops", "cannot be split"),
    ("''", "names no program"),
    ("   ", "names no program"),
])
def test_a_command_that_cannot_be_split_is_bad_input(command, message):
    with pytest.raises(BadInput, match=message):
        split_command(command)


@pytest.mark.parametrize("args, message", [
    (["release", "main", "--wait", "nan"], "--wait must be a finite number of seconds"),
    (["release", "main", "--wait", "inf"], "--wait must be a finite number of seconds"),
    (["release", "main", "--wait", "-1"], "--wait must be a finite number of seconds"),
    (["release", "main", "--wait", "1e999"], "--wait must be a finite number of seconds"),
    (["activate", "abcd", "--wait", "soon"], "--wait takes a number of seconds"),
    (["rollback", "--to", ""], "--to was given an empty sha"),
    (["rollback", "--to", "   "], "--to was given an empty sha"),
    (["rollback", "--to", "../etc"], "is not a sha or sha prefix"),
    (["rollback", "--migrate", "--force"], "--migrate and --force exclude each other"),
    (["prune", "--keep", "0"], "--keep must be at least 1, got 0"),
    (["prune", "--keep", "-2"], "--keep must be at least 1, got -2"),
    (["prune", "--keep", "two"], "--keep takes a whole number"),
    (["prune", "--keep", "1.5"], "--keep takes a whole number"),
    (["prune", "--keep", "9" * 5000], "--keep takes a whole number"),
    (["--config", "", "status"], "--config was given an empty file name"),
])
def test_bad_options_are_one_line_of_bad_input_before_the_config_is_read(tmp_path, args, message):
    # The config file does not exist: an option error must come first.
    missing = ["--config", str(tmp_path / "missing.yml")] if args[0] != "--config" else []
    result = CliRunner().invoke(main, missing + args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deployer: error: "), result.output
    assert message in lines[0]


def test_a_long_value_in_a_message_keeps_its_start_and_its_file_name():
    path = "/srv/" + "deep/" * 40 + "restart.sh"
    quoted = shown(path)
    assert quoted.startswith("'/srv/deep/") and quoted.endswith("/restart.sh'") and "…" in quoted
    assert len(quoted) == 80 + len("''…")
