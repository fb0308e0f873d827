"""smoke.paths (docs/design.md §15): extra pages that must answer 200 through the front door before
a release counts as live. A release whose /search/ answers 500 is switched back."""

from __future__ import annotations

import os
import subprocess

import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Skinmenu Tests", "GIT_AUTHOR_EMAIL": "tests@skinmenu.invalid",
    "GIT_COMMITTER_NAME": "Skinmenu Tests", "GIT_COMMITTER_EMAIL": "tests@skinmenu.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def search_500(source_repo) -> str:
    """A branch of `base` whose /search/ page fails with a server error (500 under production
    settings); every other check of the smoke test still passes."""
    repo = source_repo.path
    git(repo, "checkout", "-q", "-B", "search-500", "base")
    views = repo / "app" / "search" / "views.py"
    views.write_text(views.read_text() + "\n\ndef search(request):\n    raise RuntimeError('search is broken')\n")
    git(repo, "commit", "-q", "-am", "Break the search page")
    git(repo, "checkout", "-q", "main")
    return source_repo.sha("search-500")


def smoke_with_paths(deployment, paths: list[str]) -> None:
    deployment.write_config(smoke={"url": f"http://127.0.0.1:{deployment.port}", "check_static": False,
                                   "timeout": 3, "paths": paths})


def test_activate_switches_back_when_a_smoke_path_answers_500(deployment, source_repo, search_500):
    base = source_repo.sha("base")
    smoke_with_paths(deployment, ["/", "/search/"])
    deployment.ok("deploy", "base")
    deployment.release(search_500)

    result = deployment.deployer("activate", search_500)

    assert result.returncode == 1, result.stderr
    error = result.stderr.rstrip().splitlines()[-1]
    assert error.startswith("deployer: error:")
    assert "GET /search/ (smoke.paths) answered 500, expected 200" in error
    # Standby (§16): the release failed on its own socket, so the public never saw it and base
    # stayed live (base's /search/ answers 200: it passed the same checks).
    assert f"the public never saw it: {base[:12]} is still live" in error
    assert deployment.current == base
    assert deployment.healthz()["release"] == base
    entry = deployment.history()[-1]
    assert (entry["action"], entry["to"], entry["result"]) == ("activate", search_500, "failed-smoke")
