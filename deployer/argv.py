"""What the orchestrator asks a server to run (docs/design.md §13): plain functions that only
build argv lists, one per `deployer` command; deployer/remote.py runs them, locally or over SSH.
"""

from __future__ import annotations

import shlex
from typing import Sequence

from deployer.fleet import Server

def deployer_argv(server: Server, *args: str) -> list[str]:
    return [server.deployer, "--config", server.config, *args]


def command(name: str, *options: str, operands: Sequence[str] = ()) -> list[str]:
    """A deployer command with its options, then `--`, then the user's input (a ref, a sha): an
    operand after `--` is never read as an option, whatever it looks like (`--help`, `-x`)."""
    return [name, *options, *(["--", *operands] if operands else [])]


def with_options(argv: list[str], *options: str) -> list[str]:
    """`argv` with more options, placed before its `--` (after it they would be operands)."""
    at = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:at], *options, *argv[at:]]


def version_argv(server: Server) -> list[str]:
    return [server.deployer, "--version"]


def status_argv(server: Server) -> list[str]:
    return deployer_argv(server, "status", "--json")


def check_argv(server: Server) -> list[str]:
    return deployer_argv(server, "check")


def list_argv(server: Server) -> list[str]:
    return deployer_argv(server, "list", "--json")


def hold_lock_argv(server: Server) -> list[str]:
    """Takes the lock for the token on its first stdin line (deployer/remote.py writes it)."""
    return deployer_argv(server, "hold-lock")


def command_of(argv: list[str]) -> str:
    """What a deployer argv does, for messages: its command and first argument."""
    words, skip = [], False
    for word in argv[1:]:
        if skip or word == "--config":
            skip = not skip
            continue
        if word not in ("--", "--held-lock"):
            words.append(word)
    return shlex.join(words[:2])


def shown_command(words: list[str]) -> str:
    """A command as the operator typed it (without the `--` put before its operands)."""
    return shlex.join(word for word in words if word != "--")


def under_lock(argv: list[str]) -> list[str]:
    """A deployer argv that runs under the lock the orchestrator holds. The token is never in
    argv (any user of the server can read /proc/PID/cmdline): deployer/remote.py writes it as
    the first line of the command's stdin."""
    return [argv[0], "--held-lock", *argv[1:]]


def release_argv(server: Server, ref: str) -> list[str]:
    return under_lock(deployer_argv(server, *command("release", operands=[ref])))


def orchestrated(argv: list[str], deploy_id: str, owns_schema: bool, *,
                 barrier_timeout: float, put_back_timeout: float) -> list[str]:
    """An activate/rollback argv that stops at the orchestrator's barrier (deployer/gate.py)."""
    return under_lock(with_options(argv, "--orchestrated", deploy_id, "--barrier-timeout", f"{barrier_timeout:g}",
                                   "--put-back-timeout", f"{put_back_timeout:g}",
                                   *([] if owns_schema else ["--schema-elsewhere"])))


def activate_argv(server: Server, sha: str) -> list[str]:
    return deployer_argv(server, *command("activate", operands=[sha]))


def rollback_command(to: str | None, migrate: bool, force: bool) -> list[str]:
    """`rollback`'s words; the target as `--to=SHA`, one word that no value can split."""
    return command("rollback", *([f"--to={to}"] if to else []), *(["--migrate"] if migrate else []),
                   *(["--force"] if force else []))


def rollback_argv(server: Server, to: str, migrate: bool, force: bool) -> list[str]:
    return deployer_argv(server, *rollback_command(to, migrate, force))


def plan_argv(server: Server, words: list[str]) -> list[str]:
    return deployer_argv(server, *with_options(words, "--plan", "--json"))


def prune_argv(server: Server, keep: int | None, dry_run: bool) -> list[str]:
    return under_lock(deployer_argv(server, "prune", *(["--keep", str(keep)] if keep is not None else []),
                                    *(["--dry-run"] if dry_run else [])))
