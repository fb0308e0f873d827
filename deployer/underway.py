"""state/underway.json: the activation under way, and what its operator authorised
(docs/design.md §6.7).

Written just before `current` moves, removed once the run's history line (or its put-back) is
done. A run killed in between leaves `current` ahead of history and this file behind: the next
`activate` or `rollback` of that release finishes the run with the same authorisation (a
`rollback --migrate` may unapply with the code of the release rolled back from, a `--force` may
keep what the target does not know), and `status` names the command that finishes it. Every run that switches
writes its own record first, so the record always describes the last run that moved `current`: it
is trusted only while `current` names its `to` and history does not record that release as live;
otherwise it is the leftover of a finished run, ignored (and replaced by the next run).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from deployer.history import write_all
from deployer.paths import SHA_RE, Paths, fsync_dir


@dataclass(frozen=True)
class Underway:
    action: str  # activate | deploy | rollback
    from_sha: str | None  # the release live before (history's `from`)
    to: str
    unapply_with: str | None  # rollback --migrate: whose code unapplies what `to` does not know
    force: bool  # rollback --force: keep what `to` does not know

    def command(self) -> str:
        """How the operator started it, as they would type it."""
        flags = " --migrate" if self.unapply_with else " --force" if self.force else ""
        return f"{self.action}{flags}"


def that_run(run: Underway | None, fallback: str) -> str:
    """The killed run a finishing command completes, in words (`fallback` without a record)."""
    if run is None:
        return fallback
    return f"that `deployer {run.command()}`" + (
        f" (authorised to unapply with {run.unapply_with[:12]}'s code)" if run.unapply_with else "")


def path(paths: Paths) -> Path:
    return paths.state / "underway.json"


def write(paths: Paths, run: Underway) -> None:
    """Replace the record in one rename(2), fsynced: a kill leaves the old record or the new one."""
    paths.ensure_state()
    tmp = paths.state / f".underway-{os.getpid()}.json"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, json.dumps(asdict(run), sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path(paths))
    fsync_dir(paths.state)


def clear(paths: Paths) -> None:
    try:
        path(paths).unlink()
    except FileNotFoundError:
        return
    fsync_dir(paths.state)


def unfinished(paths: Paths, current: str | None, recorded: str | None) -> Underway | None:
    """The record of the run that moved `current` where it is and was killed before its history
    line; None when `current` is where history says (finished) or the record is not that run's."""
    run = _read(paths)
    if run is None or current is None or current == recorded or run.to != current:
        return None
    return run


def _read(paths: Paths) -> Underway | None:
    try:
        data = json.loads(path(paths).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    run = Underway(data.get("action"), data.get("from_sha"), data.get("to"), data.get("unapply_with"),
                   data.get("force"))
    return run if _well_formed(run) else None


def _well_formed(run: Underway) -> bool:
    def sha_or_none(value: object) -> bool:
        return value is None or (isinstance(value, str) and SHA_RE.fullmatch(value) is not None)

    return (run.action in ("activate", "deploy", "rollback") and isinstance(run.to, str)
            and SHA_RE.fullmatch(run.to) is not None and sha_or_none(run.from_sha)
            and sha_or_none(run.unapply_with) and isinstance(run.force, bool))
