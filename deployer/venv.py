"""Release virtualenvs built with uv (docs/design.md §5.4).

uv's cache lives on the releases' filesystem and installs by hardlink, so an unchanged lock costs
well under a second; when the previous release has the same requirements and interpreter, its
venv is hardlink-copied whole (bytecode included) and uv only confirms it is in sync.

Beside uv's cache, `<cache>-venvs/<requirements key>` keeps a hardlink copy of each venv built
from scratch: a deploy root whose releases with that lock were all pruned, or another deploy root
sharing the cache (staging beside production, the test suite), starts from it instead of
installing and compiling every package again. Hardlinks: while a release uses the same files the
copy costs inodes only; prune drops the copies no release needs.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from deployer.errors import BadInput
from deployer.paths import TMP_PREFIX
from deployer.proc import clean_env, run


def find_python(name: str) -> Path:
    """The configured interpreter: a path, a name on PATH, or a pyenv-installed version."""
    if os.sep in name:
        path = Path(name)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BadInput(f"python '{name}' (config key 'python') is not an executable file")
        return path
    found = shutil.which(name)
    if found and _runs(found):
        return Path(found)
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    version = name.removeprefix("python")
    candidates = sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/{name}"), reverse=True)
    for candidate in candidates:
        if _runs(candidate):
            return Path(candidate)
    raise BadInput(
        f"python '{name}' (config key 'python') not found on PATH or in {pyenv_root}/versions",
        hint="install it, or set 'python' in the config to the interpreter's full path",
    )


def _runs(python: str) -> bool:
    # pyenv shims exist on PATH for versions that are not active; they fail when run.
    return subprocess.run([python, "-c", ""], capture_output=True).returncode == 0


def python_identity(python: Path) -> str:
    out = run([str(python), "-c", "import sys; print(sys.version.split()[0], sys.base_prefix)"], what="python --version")
    return out.strip()


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise BadInput("uv is not installed", hint="pip install uv (it comes with the deployer's dependencies)") from None
        return found


def requirements_key(requirements: Path, python_id: str, install_flags: list[str]) -> str:
    return requirements_key_of(requirements.read_bytes(), python_id, install_flags)


def requirements_key_of(content: bytes, python_id: str, install_flags: list[str]) -> str:
    """Same requirements bytes, interpreter and install flags: a venv that can be reused."""
    digest = hashlib.sha256(content)
    digest.update(python_id.encode())
    digest.update("\0".join(install_flags).encode())
    return digest.hexdigest()


def kept_venvs(cache: Path) -> Path:
    return cache.parent / f"{cache.name}-venvs"


def kept_venv(cache: Path, key: str) -> Path | None:
    path = kept_venvs(cache) / key
    return path if (path / "bin" / "python").exists() else None


def keep(venv: Path, cache: Path, key: str) -> None:
    """A hardlink copy of a freshly built venv, published by rename(2) (never half there)."""
    store = kept_venvs(cache)
    if (store / key).exists():
        return
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f"{TMP_PREFIX}{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    run(["cp", "-al", "--", str(venv), str(tmp)], what="hardlink-copy of the venv into the kept venvs")
    try:
        os.rename(tmp, store / key)
    except OSError:  # another build kept the same lock first
        shutil.rmtree(tmp, ignore_errors=True)


def build(
    venv: Path,
    python: Path,
    requirements: Path,
    cache: Path,
    install_flags: list[str],
    reuse_from: Path | None,
) -> str:
    """Create venv and install the pinned requirements. Returns 'reused' or 'installed'."""
    uv = uv_binary()
    env = clean_env({"UV_CACHE_DIR": str(cache), "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"})
    cache.mkdir(parents=True, exist_ok=True)
    how = "installed"
    if reuse_from is not None and (reuse_from / "bin" / "python").exists():
        # Hardlinks, not copies: releases are never written after they are built.
        copied = subprocess.run(["cp", "-al", "--", str(reuse_from), str(venv)], capture_output=True)
        if copied.returncode == 0:
            how = "reused"
        else:  # a kept venv pruned by another deploy root sharing the cache, mid-copy: install afresh
            shutil.rmtree(venv, ignore_errors=True)
    if how == "installed":
        run([uv, "venv", "--quiet", "--relocatable", "--python", str(python), str(venv)], env=env, what="uv venv")
    # A reused venv already has its bytecode (hardlinked with it); compiling again would only
    # re-check every module. The lock is byte-identical, so the sync only verifies.
    compile_flag = [] if how == "reused" else ["--compile-bytecode"]
    run(
        [
            uv, "pip", "sync", "--quiet", "--require-hashes", *compile_flag,
            "--link-mode", "hardlink", "--python", str(venv / "bin" / "python"),
            *install_flags, str(requirements),
        ],
        env=env,
        what="uv pip sync",
    )
    return how


def install_flags(find_links: Path | None, offline: bool) -> list[str]:
    flags = []
    if find_links:
        flags += ["--find-links", str(find_links)]
    if offline:
        flags += ["--offline", "--no-index"] if find_links else ["--offline"]
    return flags


def compile_tree(venv: Path, tree: Path) -> None:
    """Bytecode for the app itself: the service user cannot write __pycache__ into a release."""
    run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(tree)], env=clean_env(), what="compileall")


