"""`--plan`: what a command would do, resolved with the same decision functions as the real run,
changing nothing (docs/design.md §15).

A plan takes no lock and writes nothing under releases/, current, shared/ or state/: it only
fetches the mirror (skipped while another deploy holds the lock, whose own fetch it must not
race), reads RELEASE.json files and history, reads the database without touching its files
(migrations.applied, or through a release's Django: database.read), and runs git and the configured interpreter read-only. Bad input raises
BadInput (exit 2) exactly where the real run would; a refusal the real run would end with is
recorded as `refused` and reported after the plan is printed (exit 1).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field

from deployer import database, envfile, git, hooks, lock, migrations, preflight, releases, schema, service, standby, underway, venv
from deployer.commands import prune as prune_cmd
from deployer.commands import release as release_cmd
from deployer.commands import rollback as rollback_cmd
from deployer.commands.activate import schema_step, starting_point
from deployer.config import Config
from deployer.errors import BadInput, DeployError, OperationFailed
from deployer.paths import Paths, current_sha, stale_tmp_dirs
from deployer.steps import dotted

_MIGRATION_FILE = re.compile(r"(?:^|/)(?P<app>[^/]+)/migrations/(?P<name>[^/]+)\.py$")


@dataclass
class Plan:
    """The plan of one command: numbered steps for people, `data` for --json."""

    command: str
    steps: list[tuple[str, str]] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    refused: DeployError | None = None

    def step(self, name: str, detail: str) -> None:
        self.steps.append((name, detail))

    def refuse(self, exc: DeployError, step: str) -> None:
        self.refused = exc
        self.step(step, f"REFUSED: {exc.message}")


def _new(command: str, paths: Paths) -> Plan:
    holder = lock.read_holder(paths)
    return Plan(command, data={
        "command": command, "exit_code": 0, "refused": None, "lock": holder, "ref": None, "sha": None,
        "current": {"now": current_sha(paths), "after": current_sha(paths)},
        "build": None, "migrations": None, "backup": None, "hooks": [], "prune": None,
    })


# --- release / deploy ------------------------------------------------------------------------

def release_plan(config: Config, paths: Paths, ref: str, rebuild: bool, command: str = "release") -> Plan:
    git.validate_ref(ref)
    python = venv.find_python(config.python)
    envfile.load(config.env_file, config.required_env)
    plan = _new(command, paths)
    if plan.data["lock"]:
        plan.step("fetch mirror", f"skipped: another deploy holds the lock ({lock.describe_holder(plan.data['lock'])})")
    else:
        git.sync_mirror(paths, config.repo)
        plan.step("fetch mirror", f"fetched {git.redacted(config.repo)} into {paths.repo}")
    sha = git.resolve(paths, ref)
    plan.data.update(sha=sha, ref=ref)
    plan.step("resolve commit", f"{ref} is {sha}" if ref != sha else sha)
    live = current_sha(paths)
    build = {"needed": False, "rebuild": rebuild, "venv": None, "venv_from": None, "remove_tmp": [], "subject": git.subject(paths, sha)}
    plan.data["build"] = build
    try:
        done = release_cmd.already_built(config, paths, sha, live, rebuild)
    except OperationFailed as exc:
        plan.refuse(exc, "check release")
        return plan
    if done:
        plan.step("build", done)
        return plan
    build["needed"] = True
    build["remove_tmp"] = [tmp.name for tmp in stale_tmp_dirs(paths)]
    for name in build["remove_tmp"]:
        plan.step("clean up", f"would remove {name}, left by an interrupted build")
    try:
        requirements = _show(paths, sha, config.django.requirements)
        _show(paths, sha, f"{config.django.project_dir}/manage.py")
    except OperationFailed as exc:
        plan.refuse(exc, "export tree")
        return plan
    verb = "rebuild" if paths.release(sha).exists() else "build"
    plan.step("export tree", f"would {verb} releases/{sha} ({build['subject']})")
    flags = venv.install_flags(config.install.find_links, config.install.offline)
    key = venv.requirements_key_of(requirements, venv.python_identity(python), flags)
    reuse = release_cmd.venv_to_reuse(paths, config.install.cache_dir or paths.uv_cache, key, live)
    if reuse is not None:
        from_release = reuse.name == "venv"  # else the copy kept beside uv's cache for this key
        build.update(venv="reuse", venv_from=reuse.parent.name if from_release else None)
        source = f"the venv of {reuse.parent.name[:12]}" if from_release else "the kept venv"
        plan.step("create venv", f"would reuse {source} (same {config.django.requirements}, "
                  "interpreter and install flags)")
    else:
        build["venv"] = "build"
        plan.step("create venv", f"would build a new venv with uv: no built release has this {config.django.requirements}, "
                  "interpreter and install flags")
    plan.step("django checks", "check --deploy, makemigrations --check, collectstatic (run by the build)")
    _hooks(config, plan, "after_build")
    return plan


def _show(paths: Paths, sha: str, path: str) -> bytes:
    """A file of the commit, read from the mirror (`git show <sha>:<path>`)."""
    proc = subprocess.run(["git", "-C", str(paths.repo), "show", f"{sha}:{path}"], capture_output=True)
    if proc.returncode != 0:
        raise OperationFailed(f"{path} is not in commit {sha[:12]}")
    return proc.stdout


def deploy_plan(config: Config, paths: Paths, ref: str) -> Plan:
    plan = release_plan(config, paths, ref, False, command="deploy")
    if plan.refused:
        return plan
    sha = plan.data["sha"]
    if not plan.data["build"]["needed"]:
        _activation(config, paths, plan, sha, releases.read_metadata(paths.release(sha)) or {}, "deploy", exact=True)
        return plan
    meta, exact, reference = _predicted_meta(config, paths, sha, plan.data["build"])
    if meta is None:
        plan.step("migrate", "not known before the build: no built release to take the graph's other apps from")
        plan.data["current"]["after"] = sha
        plan.step("switch current", f"current would point at releases/{sha} (now none)")
        return plan
    _activation(config, paths, plan, sha, meta, "deploy", exact=exact, code=reference)
    return plan


def _predicted_meta(config: Config, paths: Paths, sha: str, build: dict) -> tuple[dict | None, bool, str | None]:
    """The migration graph a build of `sha` would record, before it is built, and whether it is
    exact: the commit's own migration files, plus the other apps' (Django's, Wagtail's) from the
    release whose venv it would reuse (exact), or, when the venv is built anew, from the live
    release (inexact). None when there is no release to take them from. The third value is that
    release: its Django reads a database the deployer cannot read itself."""
    reference = build["venv_from"] or current_sha(paths)
    ref_meta = releases.read_metadata(paths.release(reference)) if reference else None
    if not ref_meta:
        return None, False, None
    own = _tree_migrations(paths, sha, config.django.project_dir)
    own_apps = {app for app, _ in own}
    graph = ref_meta.get("migrations", {})
    nodes = own | {tuple(n) for n in graph.get("nodes", []) if n[0] not in own_apps}
    leaves = {tuple(n) for n in graph.get("leaves", []) if n[0] not in own_apps}
    leaves |= {(app, max(name for a, name in own if a == app)) for app in own_apps}
    meta = {"migrations": {"nodes": [list(n) for n in sorted(nodes)], "leaves": [list(n) for n in sorted(leaves)]},
            "database": ref_meta.get("database", {})}
    return meta, build["venv_from"] is not None, reference


def _tree_migrations(paths: Paths, sha: str, project_dir: str) -> set[migrations.Migration]:
    """(app label, name) of every migration file in the commit's project dir."""
    out = git.run_git(["git", "-C", str(paths.repo), "ls-tree", "-r", "--name-only", sha, "--", project_dir],
                      str(paths.repo), "git ls-tree")
    found = set()
    for line in out.splitlines():
        match = _MIGRATION_FILE.search(line)
        if match and match.group("name") != "__init__":
            found.add((match.group("app"), match.group("name")))
    return found


# --- activate / rollback ---------------------------------------------------------------------

def activate_plan(config: Config, paths: Paths, sha_or_prefix: str) -> Plan:
    sha = releases.find(paths, sha_or_prefix)
    envfile.load(config.env_file, config.required_env)
    plan = _new("activate", paths)
    plan.data["sha"] = sha
    issues = releases.problems(paths.release(sha), config.shared_dirs)
    if issues:
        plan.refuse(OperationFailed(f"release {sha[:12]} is not complete: {'; '.join(issues)}",
                                    hint=f"rebuild it with `deployer release --rebuild {sha}`"), "verify release")
        return plan
    plan.step("verify release", f"releases/{sha} is complete ({_subject(paths, sha)})")
    _activation(config, paths, plan, sha, releases.read_metadata(paths.release(sha)) or {}, "activate", exact=True)
    return plan


def _activation(config: Config, paths: Paths, plan: Plan, sha: str, meta: dict, action: str, *, exact: bool,
                code: str | None = None) -> None:
    if _refused_state(config, paths, plan):
        return
    start = starting_point(paths, sha)
    if start.already_live:
        plan.step("activate", f"release {sha[:12]} is already live; nothing to do")
        return
    if start.finishing:
        plan.step("activate", f"current already points at {sha[:12]}, but "
                  f"{underway.that_run(start.killed, 'that activation')} never finished; would finish it")
    _go_live(config, paths, plan, sha, meta, start.previous, start.action(action), exact=exact,
             unapply_with=start.unapply_with, force=start.force, code=code)


def _refused_state(config: Config, paths: Paths, plan: Plan) -> bool:
    """The real run refuses this state before its first step (preflight): so does the plan."""
    try:
        preflight.require_switchable(config, paths)
    except OperationFailed as exc:
        plan.refuse(exc, "check current")
        return True
    return False


def rollback_plan(config: Config, paths: Paths, to: str | None, migrate: bool, force: bool) -> Plan:
    plan = _new("rollback", paths)
    if _refused_state(config, paths, plan):
        return plan
    try:
        choice = rollback_cmd.choose(paths, to)
    except OperationFailed as exc:
        plan.refuse(exc, "choose target")
        return plan
    target = choice.target
    plan.data["sha"] = target
    for line in choice.notes:
        plan.step("choose target", line)
    if choice.already_live:
        plan.step("choose target", f"release {target[:12]} is already live; nothing to do")
        return plan
    plan.step("choose target", f"would roll back to {target[:12]} ({_subject(paths, target)})"
              + (", finishing a rollback that never finished" if choice.finishing else ""))
    envfile.load(config.env_file, config.required_env)
    issues = releases.problems(paths.release(target), config.shared_dirs)
    if issues:
        plan.refuse(OperationFailed(f"release {target[:12]} is not complete: {'; '.join(issues)}",
                                    hint=f"rebuild it with `deployer release --rebuild {target}`"), f"verify {target[:12]}")
        return plan
    plan.step(f"verify {target[:12]}", "complete")
    meta = releases.read_metadata(paths.release(target)) or {}
    unapply_with, force = rollback_cmd.schema_authority(choice, migrate, force)
    _go_live(config, paths, plan, target, meta, choice.previous, "rollback", exact=True,
             unapply_with=unapply_with, force=force)
    return plan


def _go_live(config: Config, paths: Paths, plan: Plan, sha: str, meta: dict, previous: str | None, action: str,
             *, exact: bool, unapply_with: str | None, force: bool, code: str | None = None) -> None:
    """The steps of activate.go_live, decided by schema.plan as the real run decides them."""
    service.require_restart_program(config)
    env_values = envfile.load(config.env_file, config.required_env)
    notes: list[str] = []
    try:
        decided = schema.plan(config, paths, env_values, sha, meta, unapply_with=unapply_with, force=force,
                              note=notes.append, code=code)
    except OperationFailed as exc:
        plan.refuse(exc, "migrate")
        return
    apply = [f"{app}.{name}" for app, name in decided.to_apply]
    unapply = [f"{app}.{name}" for app, name in decided.ahead]
    plan.data["migrations"] = {
        "database": decided.database.describe(),
        "apply": apply, "unapply": unapply, "unapply_with": decided.helper,
        "kept": [f"{app}.{name}" for app, name in decided.kept], "exact": exact,
    }
    if apply:
        plan.step(schema_step(action), f"would apply {schema.summary(decided.to_apply)} with {sha[:12]}'s code"
                  + ("" if exact else " (the graph is known exactly only after the build: the venv is built anew)"))
    elif not unapply:
        plan.step(schema_step(action), "the database already matches the release's migrations")
    for line in notes:
        if line.startswith("--force"):
            plan.step(schema_step(action), line.replace("--force: leaving", "--force: would leave"))
    if decided.needs_backup:
        stem = migrations.backup_stem(decided.database.name, f"before-{action}-{sha[:12]}")
        backup = str(paths.backups / (stem + database.backup_suffix(decided.database)))
        plan.data["backup"] = backup
        how = "pg_dump --format=custom" if decided.database.vendor == "postgresql" else "copy"
        plan.step("back up database", f"would {how} {decided.database.describe()} to {backup} "
                  "(the name carries the real run's time)")
    else:
        plan.step("back up database", "none" + (" (an empty database: a first deploy)" if decided.changes else " (nothing changes)"))
    _hooks(config, plan, "before_switch")
    plan.data["current"]["after"] = sha
    now = plan.data["current"]["now"]
    was = f" (now {now[:12]})" if now else " (now none)"
    if config.service.standby:
        new = _standby_steps(config, paths, plan, sha)
        plan.step(f"switch current and socket to {new}", f"current would point at releases/{sha}{was}; "
                  f"live.sock at {config.service.socket_of(new)}")
    else:
        plan.step(f"switch current to {sha[:12]}", f"current would point at releases/{sha}{was}")
    if unapply:
        plan.step("unapply migrations", f"would unapply {', '.join(unapply)} with {decided.helper[:12]}'s code")
    if not config.service.standby:
        plan.step("restart service", " ".join(config.service.restart_argv))
    plan.step("smoke test", f"{config.smoke.url}: must report {sha[:12]}; on failure switch back to "
              + (previous[:12] if previous else "nothing (current removed)"))
    _hooks(config, plan, hooks.after_live_point(action))
    plan.step("record history", f"{action} {previous[:12] if previous else '(none)'} -> {sha[:12]}")


def _standby_steps(config: Config, paths: Paths, plan: Plan, sha: str) -> str:
    """docs/design.md §16: the idle colour starts from the release and is smoke-tested on its
    socket. Returns that colour, chosen as the run chooses it."""
    new, _ = standby.colours_for(config, paths, sha)
    if standby.slot_sha(paths, new) == sha and standby.running(config, new):
        plan.step(f"{new} already runs {sha[:12]}", "warm standby: no start")
    else:
        plan.step(f"start {new} from {sha[:12]}", " ".join(standby.start_argv(config, new)))
    plan.step(f"smoke test {new} socket", str(config.service.socket_of(new)))
    return new


def _subject(paths: Paths, sha: str) -> str:
    return str((releases.read_metadata(paths.release(sha)) or {}).get("subject", ""))


def _hooks(config: Config, plan: Plan, point: str) -> None:
    commands = list(config.hooks.at(point))
    plan.data["hooks"] += [{"point": point, "command": command} for command in commands]
    plan.step(f"hooks {point}", "; ".join(commands) if commands else "none")


# --- prune -----------------------------------------------------------------------------------

def prune_plan(config: Config, paths: Paths, keep: int) -> Plan:
    chosen = prune_cmd.choose(config, paths, keep)
    plan = _new("prune", paths)
    plan.data["prune"] = {
        "keep": keep, "delete": chosen.doomed, "temp_dirs": [tmp.name for tmp in chosen.stale],
        "in_use": sorted(chosen.busy), "frees_bytes": chosen.freed,
        "backups": [backup.name for backup in chosen.backups], "kept_venvs": [kept.name for kept in chosen.venvs],
    }
    for sha in chosen.doomed:
        plan.step("delete", f"would remove {sha[:12]}  {chosen.built[sha].get('subject', '')}")
    for tmp in chosen.stale:
        plan.step("delete", f"would remove {tmp.name} (interrupted build)")
    for backup in chosen.backups:
        plan.step("delete", f"would remove backup {backup.name} (keeping the newest {config.backups.keep})")
    for kept in chosen.venvs:
        plan.step("delete", f"would remove kept venv {kept.name[:12]} (no remaining release has its requirements)")
    for sha in sorted(chosen.busy):
        plan.step("keep", f"keeping {sha[:12]}: a running process uses it")
    plan.step("free", f"would free {prune_cmd.counts(chosen)}")
    return plan


# --- output ----------------------------------------------------------------------------------

def show(plan: Plan, as_json: bool) -> None:
    """Print the plan (stdout), then raise the refusal the real run would end with (exit 1)."""
    if plan.refused:
        plan.data["exit_code"] = plan.refused.exit_code
        plan.data["refused"] = plan.refused.message
    plan.data["steps"] = [{"step": name, "detail": detail} for name, detail in plan.steps]
    if as_json:
        json.dump(plan.data, sys.stdout, indent=2)
        print()
    else:
        what = plan.data.get("sha") or ""
        print(f"plan: {plan.command} {what[:12]}".rstrip() + " (nothing is changed; no lock is taken)")
        if plan.data["lock"]:
            print(f"    note: another deploy holds the lock: {lock.describe_holder(plan.data['lock'])}; "
                  "the real run would wait (--wait) or exit 3")
        for number, (name, detail) in enumerate(plan.steps, 1):
            print(dotted(f"[{number}] {name} ") + f" {detail}")
    if plan.refused:
        raise plan.refused


def require_plan_for_json(plan: bool, as_json: bool) -> None:
    if as_json and not plan:
        raise BadInput("--json goes with --plan", hint="add --plan, or leave --json out")

