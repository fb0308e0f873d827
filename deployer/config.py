"""Load and validate releases.yml (DESIGN §4).

Unknown keys, wrong types and missing required keys are errors that name the key and the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deployer.errors import BadInput

DEFAULT_CONFIG = "releases.yml"


@dataclass(frozen=True)
class DjangoConfig:
    project_dir: str
    settings: str
    requirements: str


@dataclass(frozen=True)
class ServiceConfig:
    restart: str
    is_active: str | None = None


@dataclass(frozen=True)
class InstallConfig:
    find_links: Path | None = None
    offline: bool = False
    cache_dir: Path | None = None


@dataclass(frozen=True)
class SmokeConfig:
    url: str
    resolve: str | None = None
    cacert: Path | None = None
    check_static: bool = True
    timeout: float = 30.0


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


# key -> (type, required). Nested sections map to their own schema dicts.
_DJANGO = {"project_dir": (str, True), "settings": (str, True), "requirements": (str, True)}
_SERVICE = {"restart": (str, True), "is_active": (str, False)}
_INSTALL = {"find_links": (str, False), "offline": (bool, False), "cache_dir": (str, False)}
_SMOKE = {
    "url": (str, True),
    "resolve": (str, False),
    "cacert": (str, False),
    "check_static": (bool, False),
    "timeout": ((int, float), False),
}
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
}


def config_path(explicit: str | None) -> Path:
    """--config, else $DEPLOYER_CONFIG, else ./releases.yml."""
    return Path(explicit or os.environ.get("DEPLOYER_CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInput(f"config file {path} not found", hint="pass --config FILE or set DEPLOYER_CONFIG") from None
    except OSError as exc:
        raise BadInput(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise BadInput(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    data = _validate(raw, _TOP, path, prefix="")
    return _build(data, path)


def _validate(raw: Any, schema: dict, path: Path, prefix: str) -> dict:
    where = f"'{prefix.rstrip('.')}'" if prefix else "the top level"
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: {where} must be a mapping")
    for key in raw:
        if key not in schema:
            raise BadInput(f"{path}: unknown key '{prefix}{key}'")
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
        # bool is an int in Python; a YAML `true` is never a valid number here.
        if isinstance(value, bool) and kind is not bool:
            raise BadInput(f"{path}: key '{name}' must be {_type_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise BadInput(f"{path}: key '{name}' must be {_type_name(kind)}, got {type(value).__name__}")
        if kind is list and not all(isinstance(item, str) for item in value):
            raise BadInput(f"{path}: key '{name}' must be a list of strings")
        if kind is str and not value.strip():
            raise BadInput(f"{path}: key '{name}' must not be empty")
        out[key] = value
    return out


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
        raise BadInput(f"{path}: key 'keep_releases' must be at least 1")
    for name in data.get("shared_dirs", []):
        if not _is_plain_name(name):
            raise BadInput(f"{path}: key 'shared_dirs' entry '{name}' must be a plain directory name")
    for name in data.get("required_env", []):
        if not name.replace("_", "").isalnum() or name[0].isdigit():
            raise BadInput(f"{path}: key 'required_env' entry '{name}' is not a variable name")
    django = data["django"]
    for key in ("project_dir", "requirements"):
        if os.path.isabs(django[key]) or ".." in Path(django[key]).parts:
            raise BadInput(f"{path}: key 'django.{key}' must be a path inside the repository")
    smoke = data["smoke"]
    if not smoke["url"].startswith(("http://", "https://")):
        raise BadInput(f"{path}: key 'smoke.url' must start with http:// or https://")
    if smoke.get("timeout", 30) <= 0:
        raise BadInput(f"{path}: key 'smoke.timeout' must be positive")
    install = data.get("install", {})
    repo = data["repo"]
    if "://" not in repo and not _looks_like_scp(repo):
        repo = str(resolve(repo))
    return Config(
        path=path.resolve(),
        app=data["app"],
        repo=repo,
        deploy_to=resolve(data["deploy_to"]),
        python=data["python"],
        keep_releases=keep,
        django=DjangoConfig(**django),
        env_file=resolve(data["env_file"]),
        required_env=tuple(data.get("required_env", [])),
        shared_dirs=tuple(data.get("shared_dirs", [])),
        service=ServiceConfig(**data["service"]),
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
            timeout=float(smoke.get("timeout", 30)),
        ),
    )


def _is_plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and not name.startswith(".")


def _looks_like_scp(repo: str) -> bool:
    """git@host:path style remotes are URLs, not local paths."""
    head, sep, _ = repo.partition(":")
    return bool(sep) and "/" not in head and len(head) > 1
