"""`make demo` clones this repository into .demo/src afresh on every run. Work someone did
there (a commit to try a change, an edit not yet committed) must not vanish with it: the demo
moves the clone aside, whole, and says where (scripts/demo.py, set_aside_unsaved_work)."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts" / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)

YOU = {"GIT_AUTHOR_NAME": "Operator", "GIT_AUTHOR_EMAIL": "op@example.com",
       "GIT_COMMITTER_NAME": "Operator", "GIT_COMMITTER_EMAIL": "op@example.com"}


def git(cwd: Path, *args: str, env: dict | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **(env or YOU)})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def demo_clone(tmp_path) -> Path:
    """A repository, and .demo/src as the demo leaves it: a --no-local clone plus the demo's
    own second commit (made with the demo's git identity)."""
    origin = tmp_path / "repo"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    (origin / "base.html").write_text("<footer>Skinmenu</footer>\n")
    git(origin, "add", ".")
    git(origin, "commit", "-qm", "the repository's own commit")
    source = tmp_path / ".demo" / "src"
    git(tmp_path, "clone", "-q", "--no-local", str(origin), str(source))
    (source / "base.html").write_text("<footer>Skinmenu · second commit</footer>\n")
    git(source, "commit", "-qam", "Demo: a visible change in the footer", env=demo.GIT_ENV)
    return source


def test_a_clone_with_only_the_demos_own_commit_is_left_for_the_demo_to_replace(demo_clone, capsys):
    assert demo.set_aside_unsaved_work(demo_clone) is None
    assert demo_clone.is_dir()
    assert capsys.readouterr().out == ""


def test_no_clone_yet_is_nothing_to_keep(tmp_path):
    assert demo.set_aside_unsaved_work(tmp_path / ".demo" / "src") is None


def test_the_operators_commit_is_kept_and_the_demo_says_where(demo_clone, capsys):
    (demo_clone / "base.html").write_text("<footer>Skinmenu · my idea</footer>\n")
    git(demo_clone, "commit", "-qam", "Try a warmer footer")
    mine = git(demo_clone, "rev-parse", "HEAD")

    kept = demo.set_aside_unsaved_work(demo_clone)

    assert kept is not None and kept.parent == demo_clone.parent
    assert not demo_clone.exists()  # the new demo clones afresh; nothing of yours is in the way
    assert git(kept, "rev-parse", "HEAD") == mine
    out = capsys.readouterr().out
    assert f"KEPT it, whole, in {kept}" in out
    assert f"commit {mine[:7]}" in out and "Try a warmer footer" in out
    assert "Demo: a visible change" not in out  # the demo's own commit is not yours


def test_an_uncommitted_edit_and_a_commit_on_another_branch_are_kept_too(demo_clone, capsys):
    git(demo_clone, "checkout", "-qb", "experiment")
    (demo_clone / "new.txt").write_text("x\n")
    git(demo_clone, "add", "new.txt")
    git(demo_clone, "commit", "-qm", "An experiment on a branch")
    git(demo_clone, "checkout", "-q", "-")
    (demo_clone / "base.html").write_text("edited, not committed\n")

    kept = demo.set_aside_unsaved_work(demo_clone)

    assert kept is not None
    out = capsys.readouterr().out
    assert "An experiment on a branch" in out
    assert "changed  M base.html" in out
    assert (kept / "base.html").read_text() == "edited, not committed\n"
