"""The bare mirror in deploy_to/repo and everything read from it (docs/design.md §5.1–§5.3)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from deployer.errors import BadInput, OperationFailed, shown
from deployer.paths import SHA_RE, Paths
from deployer.proc import run

# Characters git accepts in a commit-ish we are willing to pass on; anything else is bad input.
_REF_RE = re.compile(r"[A-Za-z0-9._/@^~{}:+-]{1,200}")


def validate_ref(ref: str) -> str:
    """Syntax only: the mirror decides whether it names a commit. `..` (a range, or a path
    going up) never names one commit."""
    if not _REF_RE.fullmatch(ref) or ref.startswith("-") or ".." in ref:
        raise BadInput(f"{shown(ref)} is not a valid commit-ish", hint="give a branch, tag or sha")
    return ref


def redacted(repo: str) -> str:
    """A repo URL as it may be shown: the credentials in https://user:token@host/... (or a bare
    token in the user part) become ***. ssh-style user names (git@host:...) are not secrets."""
    secret = _credentials(repo)
    return repo.replace(secret, "***") if secret else repo


def _credentials(repo: str) -> str | None:
    parts = urlsplit(repo) if "://" in repo else None
    if not parts or not parts.netloc or "@" not in parts.netloc:
        return None
    userinfo = parts.netloc.rpartition("@")[0]
    if parts.scheme in ("ssh", "git+ssh", "ssh+git"):
        user, sep, password = userinfo.partition(":")
        return password if sep and password else None
    return userinfo


def run_git(argv: list[str], repo: str, what: str, timeout: float | None = None) -> str:
    """run(), with the repo's credentials masked in whatever a failure reports."""
    try:
        return run(argv, what=what, timeout=timeout)
    except OperationFailed as exc:
        secret = _credentials(repo)
        if secret:
            exc.message = exc.message.replace(secret, "***")
            exc.details = exc.details.replace(secret, "***")
            exc.args = (exc.message,)
        raise


def sync_mirror(paths: Paths, repo: str) -> None:
    """`git clone --mirror` the first time, `git fetch --prune` after."""
    if (paths.repo / "HEAD").exists():
        run_git(["git", "-C", str(paths.repo), "remote", "set-url", "origin", "--", repo], repo, "git remote set-url")
        run_git(["git", "-C", str(paths.repo), "fetch", "--prune", "--quiet", "--", "origin"], repo, "git fetch")
        return
    tmp = paths.repo.with_name("repo.tmp")
    if tmp.exists():
        run(["rm", "-rf", "--", str(tmp)])
    run_git(["git", "clone", "--mirror", "--quiet", "--", repo, str(tmp)], repo, "git clone --mirror")
    tmp.rename(paths.repo)


def resolve(paths: Paths, ref: str) -> str:
    """The full sha of the commit `ref` names in the mirror; unknown refs are bad input."""
    validate_ref(ref)
    proc = subprocess.run(
        ["git", "-C", str(paths.repo), "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    sha = proc.stdout.strip()
    if proc.returncode != 0 or not SHA_RE.fullmatch(sha):
        raise BadInput(f"{shown(ref)} is not a known commit in {paths.repo}", hint="check the branch, tag or sha")
    return sha


def export(paths: Paths, sha: str, dest: Path) -> None:
    """`git archive` the whole tree into dest: files only, no .git (never a checkout)."""
    assert SHA_RE.fullmatch(sha)
    archive = subprocess.Popen(
        ["git", "-C", str(paths.repo), "archive", "--format=tar", sha],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    untar = subprocess.run(
        ["tar", "-x", "--no-same-owner", "--no-same-permissions", "-C", str(dest)],
        stdin=archive.stdout,
        capture_output=True,
        text=True,
    )
    archive.stdout.close()
    git_err = archive.stderr.read().decode(errors="replace")
    if archive.wait() != 0:
        raise OperationFailed(f"git archive {sha[:12]} failed", details=git_err)
    if untar.returncode != 0:
        raise OperationFailed("extracting the git archive failed", details=untar.stderr)


def subject(paths: Paths, sha: str) -> str:
    out = run(["git", "-C", str(paths.repo), "log", "-1", "--format=%s", sha, "--"], what="git log")
    return out.strip()
