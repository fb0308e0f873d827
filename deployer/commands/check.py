"""`deployer check`: preflight that changes nothing (docs/design.md §3)."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Callable

from deployer import database, envfile, git, releases, service, standby, venv
from deployer.config import Config
from deployer.errors import DeployError, OperationFailed
from deployer.paths import Paths, current_sha
from deployer.proc import run


def _deploy_root(config: Config, paths: Paths) -> str:
    root = paths.root
    probe = root if root.exists() else root.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OperationFailed(f"{probe} is not writable by this user")
    for sub in (paths.releases, paths.shared, paths.state):
        if sub.exists() and not os.access(sub, os.W_OK | os.X_OK):
            raise OperationFailed(f"{sub} is not writable by this user")
    if paths.current.exists() and not paths.current.is_symlink():
        raise OperationFailed(f"{paths.current} is not a symlink")
    return str(root) if root.exists() else f"{root} will be created"


def _env_file(config: Config, paths: Paths) -> str:
    values = envfile.load(config.env_file, config.required_env)
    if config.notify and not values.get(config.notify.webhook_env):
        raise OperationFailed(
            f"notify.webhook_env names {config.notify.webhook_env}, which {config.env_file} does not define",
            hint="add the webhook URL to the env file, or remove the notify section",
        )
    webhook = f"; webhook URL in {config.notify.webhook_env}" if config.notify else ""
    return f"{config.env_file}: {len(values)} variables, all {len(config.required_env)} required present{webhook}"


def _python(config: Config, paths: Paths) -> str:
    python = venv.find_python(config.python)
    return f"{python} ({venv.python_identity(python).split()[0]})"


def _uv(config: Config, paths: Paths) -> str:
    version = run([venv.uv_binary(), "--version"], what="uv --version").strip()
    cache = config.install.cache_dir or paths.uv_cache
    probe_cache = next((p for p in [cache, *cache.parents] if p.exists()), None)
    probe_root = next((p for p in [paths.releases, *paths.releases.parents] if p.exists()), None)
    if probe_cache and probe_root and os.stat(probe_cache).st_dev != os.stat(probe_root).st_dev:
        raise OperationFailed(
            f"the uv cache {cache} is on another filesystem than {paths.releases}: installs would copy, not hardlink",
            hint="leave install.cache_dir unset, or point it inside deploy_to's filesystem",
        )
    return f"{version}; cache {cache} on the releases' filesystem"


def _repo(config: Config, paths: Paths) -> str:
    shown_repo = git.redacted(config.repo)
    git.run_git(["git", "ls-remote", "--heads", "--", config.repo], config.repo, f"git ls-remote {shown_repo}", timeout=60)
    mirror = "mirror present" if (paths.repo / "HEAD").exists() else "mirror will be cloned on first release"
    warning = ("; WARNING: credentials in `repo` show in process arguments and repo/config: "
               "use a credential helper or a deploy key (docs/server-guide.md)") if shown_repo != config.repo else ""
    return f"{shown_repo} reachable; {mirror}{warning}"


def _live(config: Config, paths: Paths) -> str:
    live = current_sha(paths)
    if not live and paths.current.is_symlink():
        raise OperationFailed(f"{paths.current} does not point at a release in {paths.releases}")
    if not live:
        return "no live release yet"
    issues = releases.problems(paths.release(live), config.shared_dirs)
    if issues:
        raise OperationFailed(f"current ({live[:12]}) is not complete: {'; '.join(issues)}")
    return f"current is {live[:12]}, complete"


def _database(config: Config, paths: Paths) -> str:
    """The database answers through a release's own Django; for PostgreSQL, pg_dump can back it up."""
    code = current_sha(paths) or next(iter(releases.by_build_time(releases.complete(paths))), None)
    if code is None:
        return "skipped: no release is built yet to read it with (the first build reads it)"
    env_values = envfile.load(config.env_file, config.required_env)
    meta = releases.read_metadata(paths.release(code)) or {}
    found = database.read(config, paths, env_values, meta, code)
    applied = f"{len(found.applied)} migrations applied" if found.applied else "empty (no migrations applied yet)"
    if found.vendor != "postgresql":
        return f"{found.describe()} (read for {code[:12]}): {applied}"
    versions = database.require_new_enough_pg_dump(config, found)
    return f"{found.describe()} answers (PostgreSQL {database.server_major(found)}): {applied}; {versions}"


def _service(config: Config, paths: Paths) -> str:
    service.require_restart_program(config)
    if config.service.standby:
        return _standby(config, paths)
    if config.service.is_active:
        active = service.state(config) == "active"
        return "service is active" if active else "service is not active (a first deploy starts it)"
    return "restart command found; no is_active command configured"


def _standby(config: Config, paths: Paths) -> str:
    """service.strategy: standby (docs/design.md §16): both colours, their slots, live.sock."""
    parts = []
    for colour in standby.COLOURS:
        sha = standby.slot_sha(paths, colour)
        if standby.slot(paths, colour).is_symlink() and sha is None:
            raise OperationFailed(f"{standby.slot(paths, colour)} does not point at a release")
        state = "running" if standby.running(config, colour) else "stopped"
        parts.append(f"{colour} {state} ({sha[:12] if sha else 'no slot yet'})")
    live = standby.live_colour(config, paths)
    link = standby.socket_link(paths)
    if live is None and link.is_symlink():
        import os as _os
        parts.append(f"live.sock -> {_os.readlink(link)} (not a colour yet: the next activation switches it)")
    elif live is None:
        parts.append("no live colour yet")
    else:
        if standby.slot_sha(paths, live) != current_sha(paths):
            raise OperationFailed(f"live.sock points at {live}, whose slot is not the release current names",
                                  hint="an activation was interrupted: run `deployer activate` of the current release")
        parts.append(f"live: {live}")
    return "standby: " + "; ".join(parts)


def _units(config: Config, paths: Paths) -> str:
    """The systemd units the configured strategy drives are installed (when systemctl drives them)."""
    argvs = ([standby.start_argv(config, colour) for colour in standby.COLOURS] if config.service.standby
             else [config.service.restart_argv])
    units = [arg for argv in argvs if any(a.endswith("systemctl") for a in argv) for arg in argv if arg.endswith(".service")]
    if not units:
        return "skipped: the service commands do not use systemctl"
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return "skipped: systemctl is not installed here"
    sockets = [unit.removesuffix(".service") + ".socket" for unit in units]
    for unit in units + sockets:
        run([systemctl, "cat", "--", unit], what=f"systemctl cat {unit}")
    return f"{config.service.strategy}: {', '.join(units + sockets)} installed"


def _nginx(config: Config, paths: Paths) -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        return "skipped: nginx is not installed here"
    if os.geteuid() != 0:
        return "skipped: `nginx -t` needs root"
    run([nginx, "-t", "-q"], what="nginx -t")
    return "nginx -t passed"


CHECKS: list[tuple[str, Callable[[Config, Paths], str]]] = [
    ("deploy_to paths and permissions", _deploy_root),
    ("env file and required variables", _env_file),
    ("python", _python),
    ("uv", _uv),
    ("git repository", _repo),
    ("live release", _live),
    ("database", _database),
    ("service", _service),
    ("systemd units", _units),
    ("nginx config", _nginx),
]


def main(config: Config, paths: Paths) -> int:
    print(f"{'ok':6}config {config.path}")
    failed = 0
    for name, check in CHECKS:
        try:
            detail = check(config, paths)
            print(f"{'ok':6}{name}: {detail}")
        except DeployError as exc:
            failed += 1
            why = f": {exc.details.strip().splitlines()[0]}" if exc.details.strip() else ""
            print(f"{'FAIL':6}{name}: {exc.message}{why}" + (f" ({exc.hint})" if exc.hint else ""))
    if failed:
        print(f"deployer: check found {failed} problem(s)", file=sys.stderr)
        return 1
    return 0
