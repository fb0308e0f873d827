"""Load and validate releases.yml (docs/design.md §4).

Unknown keys, wrong types and missing required keys are errors that name the key and the file.
Everything is checked here, at load, so that a bad value is exit 2 before anything happens
rather than a failure halfway through a deploy.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from deployer.errors import BadInput, one_line, shown
from deployer.proc import split_command
from deployer.releases import BUILD_OUTPUTS

DEFAULT_CONFIG = "releases.yml"
MAX_CONFIG_BYTES = 1 << 20


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(frozen=True)
class Seconds:
    """The schema kind of every duration key (docs/design.md §4): a finite number of seconds,
    more than 0 (or 0 and more when `zero_means` says what 0 does), at most `most`. A bound that
    is checked here is one a deploy never trips over later (an OverflowError, a wait that never
    ends)."""

    most: float
    zero_means: str | None = None


@dataclass(frozen=True)
class DjangoConfig:
    project_dir: str
    settings: str
    requirements: str
    migrate_timeout: float = HOUR  # each migrate (or unapply) command; past it, it fails like any failed migrate


STRATEGIES = ("restart", "standby")
COLOURS = ("blue", "green")
COLOUR_FIELD = "{colour}"


@dataclass(frozen=True)
class ServiceConfig:
    """How the app service is driven (docs/design.md §6, §16). `restart`: one instance, switched
    by a restart. `standby`: two instances (blue, green) whose `start`, `stop`, `is_active` and
    `socket` name the colour as `{colour}`."""

    restart: str | None = None
    is_active: str | None = None
    strategy: str = "restart"
    standby_seconds: float = 600.0
    start: str | None = None
    stop: str | None = None
    socket: str | None = None

    @property
    def restart_argv(self) -> list[str]:
        return split_command(self.restart) if self.restart else []

    @property
    def is_active_argv(self) -> list[str] | None:
        return split_command(self.is_active) if self.is_active else None

    @property
    def standby(self) -> bool:
        return self.strategy == "standby"

    def colour_argv(self, command: str, colour: str) -> list[str]:
        """A `{colour}` command for one colour: split first, then filled in, so a colour can never
        change how the command splits."""
        return [part.replace(COLOUR_FIELD, colour) for part in split_command(command)]

    def socket_of(self, colour: str) -> Path:
        return Path((self.socket or "").replace(COLOUR_FIELD, colour))


@dataclass(frozen=True)
class InstallConfig:
    find_links: Path | None = None
    offline: bool = False
    cache_dir: Path | None = None


@dataclass(frozen=True)
class BackupsConfig:
    """Database backups in state/backups/ (docs/design.md §7, §14)."""

    keep: int = 10  # prune keeps the newest N
    pg_dump: str = "pg_dump"  # a name on PATH or a path; its major version must be >= the server's


@dataclass(frozen=True)
class SmokeConfig:
    url: str
    resolve: str | None = None
    cacert: Path | None = None
    check_static: bool = True
    timeout: float = 30.0
    paths: tuple[str, ...] = ("/",)  # extra paths that must answer 200 (docs/design.md §15)


HOOK_POINTS = ("after_build", "before_switch", "after_live", "after_rollback", "on_failure")


@dataclass(frozen=True)
class HooksConfig:
    """Operator commands at named points (docs/design.md §15): each split like a shell would."""

    after_build: tuple[str, ...] = ()
    before_switch: tuple[str, ...] = ()
    after_live: tuple[str, ...] = ()
    after_rollback: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()
    timeout: float = 300.0

    def at(self, point: str) -> tuple[str, ...]:
        return getattr(self, point)


@dataclass(frozen=True)
class NotifyConfig:
    """A webhook whose URL is a secret: only the NAME of the env-file variable is configured."""

    webhook_env: str
    timeout: float = 5.0


@dataclass(frozen=True)
class Config:
    path: Path
    app: str
    repo: str
    deploy_to: Path
    python: str
    django: DjangoConfig
    env_file: Path
    service: ServiceConfig
    smoke: SmokeConfig
    keep_releases: int = 5
    required_env: tuple[str, ...] = ()
    shared_dirs: tuple[str, ...] = ()
    install: InstallConfig = field(default_factory=InstallConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    notify: NotifyConfig | None = None
    backups: BackupsConfig = field(default_factory=BackupsConfig)


# key -> (type, required). Nested sections map to their own schema dicts.
_DJANGO = {
    "project_dir": (str, True),
    "settings": (str, True),
    "requirements": (str, True),
    "migrate_timeout": (Seconds(most=DAY), False),
}
_SERVICE = {
    "strategy": (str, False),
    "restart": (str, False),
    "is_active": (str, False),
    "standby_seconds": (Seconds(most=DAY, zero_means="stop the old colour at once"), False),
    "start": (str, False),
    "stop": (str, False),
    "socket": (str, False),
}
_INSTALL = {"find_links": (str, False), "offline": (bool, False), "cache_dir": (str, False)}
_SMOKE = {
    "url": (str, True),
    "resolve": (str, False),
    "cacert": (str, False),
    "check_static": (bool, False),
    "timeout": (Seconds(most=HOUR), False),
    "paths": (list, False),
}
_HOOKS = {**{point: (list, False) for point in HOOK_POINTS}, "timeout": (Seconds(most=DAY), False)}
_NOTIFY = {"webhook_env": (str, True), "timeout": (Seconds(most=5 * MINUTE), False)}
_BACKUPS = {"keep": (int, False), "pg_dump": (str, False)}
_TOP = {
    "app": (str, True),
    "repo": (str, True),
    "deploy_to": (str, True),
    "python": (str, True),
    "keep_releases": (int, False),
    "django": (_DJANGO, True),
    "env_file": (str, True),
    "required_env": (list, False),
    "shared_dirs": (list, False),
    "service": (_SERVICE, True),
    "install": (_INSTALL, False),
    "smoke": (_SMOKE, True),
    "hooks": (_HOOKS, False),
    "notify": (_NOTIFY, False),
    "backups": (_BACKUPS, False),
}
# Commands are split like a shell would split them, so line breaks and tabs are only spaces there.
_WHITESPACE_ALLOWED = {"service.restart", "service.is_active", "service.start", "service.stop", *(f"hooks.{point}" for point in HOOK_POINTS)}


def config_path(explicit: str | None) -> Path:
    """--config, else $DEPLOYER_CONFIG, else ./releases.yml."""
    if explicit is not None and not explicit.strip():
        raise BadInput("--config was given an empty file name", hint="pass --config FILE, or leave it out")
    return Path(explicit or os.environ.get("DEPLOYER_CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path) -> Config:
    text = _read(path)
    try:
        raw = _parse(text, path)
        return _build(_validate(raw, _TOP, path, prefix=""), path)
    except BadInput:
        raise
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply to be a deployer config") from None
    except Exception as exc:
        # Whatever the YAML holds, a config that breaks the loader is bad configuration (exit 2),
        # not a crash; `--debug` still shows where it broke.
        raise BadInput(f"{path}: cannot be loaded: {type(exc).__name__}: {exc}", hint="check the file; --debug shows where it failed") from exc


def _read(path: Path) -> str:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"config file {path} is not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise BadInput(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"config file {path} not found", hint="pass --config FILE or set DEPLOYER_CONFIG") from None
    except OSError as exc:
        raise BadInput(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInput(f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})", hint="save the file as UTF-8") from None


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {shown(key_node.value)} appears twice", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _parse(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise BadInput(f"{path} line {line}: not valid YAML (unacceptable character {_codepoint(exc.character)})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInput(f"{path}{where}: not valid YAML ({one_line(problem)})") from None


def _codepoint(character: Any) -> str:
    return f"U+{character if isinstance(character, int) else ord(character):04X}"


def _fail(path: Path, name: str, what: str) -> BadInput:
    return BadInput(f"{path}: key '{name}' {what}")


def _validate(raw: Any, schema: dict, path: Path, prefix: str) -> dict:
    where = f"'{prefix.rstrip('.')}'" if prefix else "the top level"
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: {where} must be a mapping")
    for key in raw:
        if key not in schema:
            raise BadInput(f"{path}: unknown key {shown(prefix + str(key))}")
    out = {}
    for key, (kind, required) in schema.items():
        name = f"{prefix}{key}"
        value = raw.get(key)
        if value is None:
            if required:
                raise BadInput(f"{path}: missing required key '{name}'")
            continue
        if isinstance(kind, dict):
            out[key] = _validate(value, kind, path, prefix=f"{name}.")
            continue
        if isinstance(kind, Seconds):
            out[key] = seconds(path, name, value, kind)
            continue
        # bool is an int in Python; a YAML `true` is never a valid number here.
        if isinstance(value, bool) and kind is not bool:
            raise _fail(path, name, f"must be {_type_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise _fail(path, name, f"must be {_type_name(kind)}, got {type(value).__name__}")
        if kind is list:
            if not all(isinstance(item, str) for item in value):
                raise _fail(path, name, "must be a list of strings")
            for item in value:
                _check_text(path, name, item)
        if kind is str:
            _check_text(path, name, value)
        out[key] = value
    return out


def seconds(path: Path, name: str, value: Any, kind: Seconds) -> float:
    """The one check of a duration key's value (every `Seconds` in a schema comes here)."""
    if isinstance(value, bool):  # a YAML `true` is an int in Python
        raise _fail(path, name, "must be a number of seconds, not a boolean")
    if not isinstance(value, (int, float)):
        raise _fail(path, name, f"must be a number of seconds, got {type(value).__name__} {shown(str(value))}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, name, f"must be a finite number of seconds, got {value}")
    if kind.zero_means is None and value <= 0:
        raise _fail(path, name, f"must be more than 0 seconds, got {_number(value)}")
    if value < 0:
        raise _fail(path, name, f"must be 0 ({kind.zero_means}) or more seconds, got {_number(value)}")
    if value > kind.most:  # compared before float(): an int too large for a float is refused too
        raise _fail(path, name, f"must be at most {kind.most:g} seconds ({_span(kind.most)}), got {_number(value)}")
    return float(value)


def _number(value: int | float) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 20 else f"{text[:12]}... ({len(text)} characters)"


def _span(seconds_: float) -> str:
    for unit, size in (("h", HOUR), ("min", MINUTE)):
        if seconds_ >= size and seconds_ % size == 0:
            return f"{seconds_ / size:g} {unit}"
    return f"{seconds_:g} s"


def _check_text(path: Path, name: str, value: str) -> None:
    if not value.strip():
        raise _fail(path, name, "must not be empty")
    allowed = "\t\n\r" if name in _WHITESPACE_ALLOWED else ""
    if any(not ch.isprintable() and ch != " " and ch not in allowed for ch in value):
        raise _fail(path, name, f"must not contain control characters: {shown(value)}")


def _type_name(kind: Any) -> str:
    if kind is str:
        return "a string"
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is list:
        return "a list"
    return "a number"


def _build(data: dict, path: Path) -> Config:
    base = path.resolve().parent

    def resolve(value: str) -> Path:
        return (base / os.path.expanduser(value)).resolve()

    keep = data.get("keep_releases", 5)
    if keep < 1:
        raise _fail(path, "keep_releases", "must be at least 1")
    django = data["django"]
    _check_django(path, django)
    _check_shared_dirs(path, data.get("shared_dirs", []), django)
    for name in data.get("required_env", []):
        if not _VARIABLE.fullmatch(name):
            raise BadInput(f"{path}: key 'required_env' entry {shown(name)} is not a variable name")
    _check_service(path, data["service"], resolve)
    smoke = data["smoke"]
    _check_smoke(path, smoke, resolve)
    hooks = data.get("hooks", {})
    _check_hooks(path, hooks)
    notify = data.get("notify")
    _check_notify(path, notify)
    deploy_to = resolve(data["deploy_to"])
    if deploy_to == Path(deploy_to.anchor):
        raise _fail(path, "deploy_to", f"must not be the filesystem root ({shown(data['deploy_to'])} resolves to {deploy_to})")
    if deploy_to.exists() and not deploy_to.is_dir():
        raise _fail(path, "deploy_to", f"names {deploy_to}, which exists and is not a directory")
    install = data.get("install", {})
    backups = data.get("backups", {})
    if backups.get("keep", 10) < 1:
        raise _fail(path, "backups.keep", "must be at least 1")
    repo = data["repo"]
    if "://" not in repo and not _looks_like_scp(repo):
        repo = str(resolve(repo))
    return Config(
        path=path.resolve(),
        app=data["app"],
        repo=repo,
        deploy_to=deploy_to,
        python=data["python"],
        keep_releases=keep,
        django=DjangoConfig(**django),
        env_file=resolve(data["env_file"]),
        required_env=tuple(data.get("required_env", [])),
        shared_dirs=tuple(data.get("shared_dirs", [])),
        service=_service_config(data["service"], resolve),
        install=InstallConfig(
            find_links=resolve(install["find_links"]) if install.get("find_links") else None,
            offline=install.get("offline", False),
            cache_dir=resolve(install["cache_dir"]) if install.get("cache_dir") else None,
        ),
        smoke=SmokeConfig(
            url=smoke["url"].rstrip("/"),
            resolve=smoke.get("resolve"),
            cacert=resolve(smoke["cacert"]) if smoke.get("cacert") else None,
            check_static=smoke.get("check_static", True),
            timeout=smoke.get("timeout", 30.0),
            paths=tuple(smoke.get("paths", ["/"])),
        ),
        hooks=HooksConfig(
            **{point: tuple(hooks.get(point, [])) for point in HOOK_POINTS},
            timeout=hooks.get("timeout", 300.0),
        ),
        notify=NotifyConfig(notify["webhook_env"], notify.get("timeout", 5.0)) if notify else None,
        backups=BackupsConfig(keep=backups.get("keep", 10), pg_dump=_program(backups.get("pg_dump", "pg_dump"), resolve)),
    )


def _program(value: str, resolve) -> str:
    """A program name is looked up on PATH; a path is relative to the config file."""
    return str(resolve(value)) if "/" in value else value


_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def _check_service(path: Path, service: dict, resolve) -> None:
    for key in ("restart", "is_active", "start", "stop"):
        if key in service:
            try:
                split_command(service[key])
            except BadInput as exc:
                raise _fail(path, f"service.{key}", f"is not a usable command: {exc.message}") from None
    strategy = service.get("strategy", "restart")
    if strategy not in STRATEGIES:
        raise _fail(path, "service.strategy", f"must be one of {', '.join(STRATEGIES)}, got {shown(strategy)}")
    if strategy == "restart":
        if "restart" not in service:
            raise BadInput(f"{path}: missing required key 'service.restart' (service.strategy is restart)")
        return
    for key in ("start", "stop", "is_active", "socket"):
        if key not in service:
            raise BadInput(f"{path}: missing required key 'service.{key}' (service.strategy is standby)")
        if COLOUR_FIELD not in service[key]:
            raise _fail(path, f"service.{key}", f"must name the instance as {COLOUR_FIELD} (service.strategy is standby)")
    for colour in COLOURS:
        socket = resolve(service["socket"].replace(COLOUR_FIELD, colour))
        if len(os.fsencode(str(socket))) > _SOCKET_PATH_MAX:
            raise _fail(path, "service.socket", f"gives {socket}, longer than a unix socket path may be ({_SOCKET_PATH_MAX} bytes)")


def _service_config(service: dict, resolve) -> ServiceConfig:
    fields = dict(service)
    if "socket" in fields:
        fields["socket"] = str(resolve(fields["socket"]))
    return ServiceConfig(**fields)


def _check_hooks(path: Path, hooks: dict) -> None:
    for point in HOOK_POINTS:
        for command in hooks.get(point, []):
            try:
                split_command(command)
            except BadInput as exc:
                raise _fail(path, f"hooks.{point}", f"has an unusable command: {exc.message}") from None


def _check_notify(path: Path, notify: dict | None) -> None:
    if notify is None:
        return
    if not _VARIABLE.fullmatch(notify["webhook_env"]):
        raise _fail(path, "notify.webhook_env", f"must name an env-file variable, got {shown(notify['webhook_env'])}")


def _check_django(path: Path, django: dict) -> None:
    for key in ("project_dir", "requirements"):
        value = PurePosixPath(django[key])
        if value.is_absolute() or ".." in value.parts:
            raise _fail(path, f"django.{key}", "must be a path inside the repository")
        if value.parts and value.parts[0] in BUILD_OUTPUTS:
            raise _fail(path, f"django.{key}", f"must not be inside '{value.parts[0]}', which the build makes")
    if not _MODULE.fullmatch(django["settings"]):
        raise _fail(path, "django.settings", f"must be a dotted module name, got {shown(django['settings'])}")


def _first_component(value: str) -> str | None:
    parts = PurePosixPath(value).parts
    return parts[0] if parts else None


def _check_shared_dirs(path: Path, names: list[str], django: dict) -> None:
    # The build makes these names, or the exported tree needs them: a shared dir there would
    # replace them with a symlink into shared/ (and fail late, after shared/<name> was made).
    taken = {
        **{name: "the build makes it" for name in BUILD_OUTPUTS},
        _first_component(django["project_dir"]): "django.project_dir lives there",
        _first_component(django["requirements"]): "django.requirements lives there",
    }
    seen = set()
    for name in names:
        if not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
            raise BadInput(f"{path}: key 'shared_dirs' entry {shown(name)} must be a plain directory name")
        if name in seen:
            raise BadInput(f"{path}: key 'shared_dirs' lists {shown(name)} twice")
        seen.add(name)
        if name in taken:
            raise BadInput(f"{path}: key 'shared_dirs' entry {shown(name)} is not allowed: {taken[name]}")


def _check_smoke(path: Path, smoke: dict, resolve) -> None:
    problem = _url_problem(smoke["url"])
    if problem:
        raise _fail(path, "smoke.url", f"{problem}, got {shown(smoke['url'])}")
    address = smoke.get("resolve")
    if address is not None and not _is_host(address):
        raise _fail(path, "smoke.resolve", f"must be an IP address or a host name, got {shown(address)}")
    for extra in smoke.get("paths", []):
        if not extra.startswith("/") or extra.startswith("//") or any(ch.isspace() or ch == "#" for ch in extra):
            raise _fail(path, "smoke.paths", f"entries must be absolute URL paths like /treatments/, got {shown(extra)}")
    if smoke.get("cacert"):
        cacert = resolve(smoke["cacert"])
        if not cacert.is_file() or not os.access(cacert, os.R_OK):
            raise _fail(path, "smoke.cacert", f"names {cacert}, which is not a readable file")


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be the smoke test's front door, or None."""
    if not url.lower().startswith(("http://", "https://")):
        return "must start with http:// or https://"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if "@" in parts.netloc:
        return "must not contain a user name or password"
    if not parts.hostname:
        return "has no host"
    if not _is_host(parts.hostname):
        return f"has an invalid host {shown(parts.hostname)}"
    if port == 0:
        return "has port 0"
    if "?" in url or "#" in url:
        return "must not have a query or a fragment"
    return None


def _is_host(text: str) -> bool:
    """An IP address or a DNS host name."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # 999.1.1.1 is a broken address, not a name
    )


def _looks_like_scp(repo: str) -> bool:
    """git@host:path style remotes are URLs, not local paths."""
    head, sep, _ = repo.partition(":")
    return bool(sep) and "/" not in head and len(head) > 1
