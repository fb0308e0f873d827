"""The orchestrator's config: the servers one deploy drives over SSH (docs/design.md §13).

A config file with a top-level `servers` key is an orchestrator config; any other file is a
server's own releases.yml (§4), read as before. Validated at load like deployer/config.py: an
unknown key, a wrong type or a missing key is exit 2 naming the key and the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.config import DAY, MINUTE, NotifyConfig, Seconds, _check_notify, _parse, _read, _validate
from deployer.errors import BadInput, shown

ROLES = ("app", "migrations")
MIGRATIONS = "migrations"
LOCAL = "local"  # `ssh: local`: the orchestrator's own machine, no SSH

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}")


@dataclass(frozen=True)
class SshConfig:
    known_hosts: Path  # always verified: an unknown or changed host key is exit 2
    identity: Path | None = None  # None: the SSH agent, then ~/.ssh's default keys
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class Server:
    name: str
    host: str  # LOCAL for the orchestrator's own machine
    user: str | None
    port: int
    roles: tuple[str, ...]
    config: str  # the server's own releases.yml, a path on that server
    deployer: str  # the `deployer` program on that server

    @property
    def local(self) -> bool:
        return self.host == LOCAL

    @property
    def destination(self) -> str:
        if self.local:
            return LOCAL
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


@dataclass(frozen=True)
class Timeouts:
    """How long the orchestrator waits for a server in each phase (docs/design.md §13). Each is
    far above the measured time of its phase and above the server's own timeouts in it, so a
    server that fails by itself says why first; a server silent past one has failed."""

    lock: float = 180.0  # taking its lock (a disconnected orchestrator's command may take 120 s to stop)
    command: float = 600.0  # version, status, list, prune
    build: float = 1800.0  # `release`: clone, venv, requirements, collectstatic
    migrate: float = 3900.0  # backup and migrations on the migrations server (django.migrate_timeout: 3600)
    prepare: float = 900.0  # before_switch hooks, start and smoke-test the idle colour
    live: float = 600.0  # switch, restart, smoke test through its front door
    commit: float = 900.0  # record, leave the standby, after_live hooks
    put_back: float = 300.0  # a server told to put back until it has

    def barrier(self, batches: int) -> float:
        """How long a server waits for the next word: the others' slowest phases, then their put-back."""
        return min(self.prepare + batches * self.live + self.put_back + 60, MAX_BARRIER)


MAX_BARRIER = 30 * DAY  # the hidden --barrier-timeout's bound, far above any configured phase


TIMEOUT_KEYS = tuple(Timeouts.__dataclass_fields__)


@dataclass(frozen=True)
class FleetNotify:
    """The orchestrator's own webhook: one notification for a whole deploy across servers. Its
    URL is a secret in an env file on the orchestrator's machine (servers.yml holds only names)."""

    env_file: Path
    webhook: NotifyConfig


@dataclass(frozen=True)
class FleetConfig:
    path: Path
    servers: tuple[Server, ...]  # in the config's order: the fixed order locks are taken in
    ssh: SshConfig
    parallel: int  # how many servers at once (builds, restart batches)
    timeouts: Timeouts = Timeouts()
    notify: FleetNotify | None = None

    @property
    def migrations_server(self) -> Server:
        return next(server for server in self.servers if MIGRATIONS in server.roles)


_SERVER = {
    "name": (str, True),
    "ssh": (str, True),
    "port": (int, False),
    "roles": (list, True),
    "config": (str, True),
    "deployer": (str, False),
}
_SSH = {"known_hosts": (str, True), "identity": (str, False), "connect_timeout": (Seconds(most=5 * MINUTE), False)}
_TIMEOUTS = {key: (Seconds(most=DAY), False) for key in TIMEOUT_KEYS}
_NOTIFY = {"env_file": (str, True), "webhook_env": (str, True), "timeout": (Seconds(most=5 * MINUTE), False)}
_TOP = {"servers": (list, True), "ssh": (_SSH, True), "parallel": (int, False), "deployer": (str, False),
        "timeouts": (_TIMEOUTS, False), "notify": (_NOTIFY, False)}


def is_fleet_file(path: Path) -> bool:
    """True when `path` is an orchestrator config (it lists `servers`). Any problem reading it
    is left to the loader that runs next, which reports it."""
    try:
        raw = _parse(_read(path), path)
    except Exception:
        return False
    return isinstance(raw, dict) and "servers" in raw


def load_fleet(path: Path) -> FleetConfig:
    raw = _parse(_read(path), path)
    servers_raw = raw.get("servers") if isinstance(raw, dict) else None
    top = _validate({**raw, "servers": []} if isinstance(servers_raw, list) else raw, _TOP, path, prefix="")
    if not isinstance(servers_raw, list) or not servers_raw:
        raise BadInput(f"{path}: key 'servers' must list at least one server",
                       hint="remove the key to deploy this machine only (a server's own releases.yml)")
    base = path.resolve().parent

    def resolve(value: str) -> Path:
        return (base / os.path.expanduser(value)).resolve()

    default_deployer = top.get("deployer", "deployer")
    servers = tuple(_server(path, index, item, default_deployer) for index, item in enumerate(servers_raw))
    _check_servers(path, servers)
    ssh = top["ssh"]
    timeout = ssh.get("connect_timeout", 10.0)
    known_hosts = resolve(ssh["known_hosts"])
    if not known_hosts.is_file() or not os.access(known_hosts, os.R_OK):
        raise BadInput(f"{path}: key 'ssh.known_hosts' names {known_hosts}, which is not a readable file",
                       hint="host keys are always verified: put each server's key there (docs/server-guide.md)")
    identity = resolve(ssh["identity"]) if ssh.get("identity") else None
    if identity is not None and (not identity.is_file() or not os.access(identity, os.R_OK)):
        raise BadInput(f"{path}: key 'ssh.identity' names {identity}, which is not a readable file")
    parallel = top.get("parallel", len(servers))
    if parallel < 1:
        raise BadInput(f"{path}: key 'parallel' must be at least 1")
    return FleetConfig(path=path.resolve(), servers=servers,
                       ssh=SshConfig(known_hosts, identity, timeout), parallel=parallel,
                       timeouts=Timeouts(**top.get("timeouts", {})),
                       notify=_notify(path, top.get("notify"), resolve))


def _notify(path: Path, notify: dict | None, resolve) -> FleetNotify | None:
    if notify is None:
        return None
    _check_notify(path, notify)
    env_file = resolve(notify["env_file"])
    if not env_file.is_file():
        raise BadInput(f"{path}: key 'notify.env_file' names {env_file}, which is not a file",
                       hint="it holds the webhook URL, readable by the orchestrator's user only (mode 0600)")
    return FleetNotify(env_file, NotifyConfig(notify["webhook_env"], notify.get("timeout", 5.0)))


def _server(path: Path, index: int, item: Any, default_deployer: str) -> Server:
    prefix = f"servers[{index}]."
    data = _validate(item, _SERVER, path, prefix=prefix)
    name = data["name"]
    if not _NAME.fullmatch(name):
        raise BadInput(f"{path}: key '{prefix}name' must be a plain name like app1, got {shown(name)}")
    user, host = _destination(path, prefix, data["ssh"])
    port = data.get("port", 22)
    if not 0 < port < 65536:
        raise BadInput(f"{path}: key '{prefix}port' must be a TCP port (1-65535), got {port}")
    roles = tuple(data["roles"])
    for role in roles:
        if role not in ROLES:
            raise BadInput(f"{path}: key '{prefix}roles' has unknown role {shown(role)} (known: {', '.join(ROLES)})")
    if not roles:
        raise BadInput(f"{path}: key '{prefix}roles' must name at least one role")
    if not data["config"].startswith("/"):
        raise BadInput(f"{path}: key '{prefix}config' must be an absolute path on that server, got {shown(data['config'])}")
    return Server(name=name, host=host, user=user, port=port, roles=roles, config=data["config"],
                  deployer=data.get("deployer", default_deployer))


def _destination(path: Path, prefix: str, value: str) -> tuple[str | None, str]:
    """`[user@]host` (the port is its own key), or `local`."""
    if value == LOCAL:
        return None, LOCAL
    user, sep, host = value.rpartition("@")
    if (sep and not _USER.fullmatch(user)) or not _HOST.fullmatch(host) or host.startswith("-"):
        raise BadInput(f"{path}: key '{prefix}ssh' must be [user@]host, got {shown(value)}",
                       hint="the port is its own key, `port:`")
    return (user or None), host


def _check_servers(path: Path, servers: tuple[Server, ...]) -> None:
    names = [server.name for server in servers]
    for name in names:
        if names.count(name) > 1:
            raise BadInput(f"{path}: key 'servers' names {shown(name)} twice")
    migrations = [server.name for server in servers if MIGRATIONS in server.roles]
    if len(migrations) != 1:
        found = ", ".join(migrations) if migrations else "none"
        raise BadInput(f"{path}: key 'servers' must give exactly one server the '{MIGRATIONS}' role (found: {found})",
                       hint="migrations run once, on that server")
