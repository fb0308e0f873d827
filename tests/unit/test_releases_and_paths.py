"""Finding releases by sha, the switch of `current`, prune selection, the lock, the env file."""

import json
import os
import subprocess
import sys

import pytest

from deployer import envfile, releases, switch
from deployer.commands.prune import in_use, select
from deployer.errors import BadInput, LockHeld, OperationFailed
from deployer.git import validate_ref
from deployer.lock import deploy_lock, read_holder
from deployer.paths import Paths, current_sha, tree_bytes

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)


def make_release(paths: Paths, sha: str, built_at: str = "2026-01-01T00:00:00+00:00") -> None:
    release = paths.release(sha)
    (release / "venv" / "bin").mkdir(parents=True)
    (release / "venv" / "bin" / "python").write_text("")
    (release / "staticfiles").mkdir()
    (release / "staticfiles" / "staticfiles.json").write_text('{"paths": {}}')
    (release / "app").mkdir()
    (release / "app" / "manage.py").write_text("")
    (release / "REVISION").write_text(sha + "\n")
    digest = releases.tree_digest(release, set())
    releases.write_metadata(release, {"sha": sha, "built_at": built_at, "tree_digest": digest})


@pytest.mark.parametrize("text", ["abc", "../" + A, "/etc", A + "0", "g" * 8, "-h", "", "ABCD\n"])
def test_a_sha_prefix_is_4_to_40_hex_digits_and_nothing_else(text):
    with pytest.raises(BadInput):
        releases.validate_prefix(text)


def test_find_resolves_a_unique_prefix_and_refuses_an_ambiguous_one(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, "abcd" + "0" * 36)
    make_release(paths, "abce" + "0" * 36)
    assert releases.find(paths, "abcd") == "abcd" + "0" * 36
    assert releases.find(paths, "ABCD000") == "abcd" + "0" * 36
    (paths.releases / ".tmp-abcf").mkdir()
    with pytest.raises(BadInput, match="no release matches"):
        releases.find(paths, "abcf")


def test_two_releases_sharing_a_prefix_are_ambiguous(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, "abcd1" + "0" * 35)
    make_release(paths, "abcd2" + "0" * 35)
    with pytest.raises(BadInput, match="ambiguous"):
        releases.find(paths, "abcd")


@pytest.mark.parametrize("ref", ["main", "v1.2.3", "feature/x", "HEAD~2", "main^{commit}", A])
def test_ordinary_refs_pass_syntax_validation(ref):
    assert validate_ref(ref) == ref


@pytest.mark.parametrize("ref", ["-h", "--upload-pack=x", "main;rm", "a b", "main\n", "", "x" * 201, "$(id)"])
def test_refs_that_could_be_options_or_shell_are_bad_input(ref):
    with pytest.raises(BadInput):
        validate_ref(ref)


def test_completeness_requires_metadata_revision_venv_statics_and_an_unchanged_tree(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, A)
    release = paths.release(A)
    assert releases.problems(release) == []
    (release / "app" / "extra.py").write_text("x")
    assert releases.problems(release) == ["the exported tree changed since it was built"]
    (release / "app" / "extra.py").unlink()
    (release / "REVISION").write_text(B)
    assert "REVISION does not match the directory name" in releases.problems(release)
    (release / "RELEASE.json").unlink()
    assert releases.problems(release) == ["RELEASE.json is missing or unreadable"]
    with pytest.raises(OperationFailed, match="not complete"):
        releases.require_complete(paths, A, ())


def test_switch_replaces_current_with_a_relative_symlink_in_one_rename(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, A)
    make_release(paths, B)
    switch.point_current_at(paths, A)
    assert os.readlink(paths.current) == f"releases/{A}"
    inode_before = os.lstat(paths.current).st_ino
    switch.point_current_at(paths, B)
    assert os.readlink(paths.current) == f"releases/{B}"
    assert current_sha(paths) == B
    assert os.lstat(paths.current).st_ino != inode_before  # a new link renamed over the old
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".current")] == []


def test_switch_removes_a_temp_link_left_by_a_run_killed_mid_switch(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, A)
    os.symlink(f"releases/{B}", tmp_path / ".current-deadbeef")
    switch.point_current_at(paths, A)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "releases"]


def test_switch_refuses_a_current_that_is_a_real_directory(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, A)
    paths.current.mkdir()
    with pytest.raises(OperationFailed, match="not a symlink"):
        switch.point_current_at(paths, A)
    assert paths.current.is_dir()


def test_prune_selection_keeps_the_newest_good_builds_and_the_protected_ones():
    built = {sha: {"built_at": f"2026-01-0{n}"} for n, sha in enumerate([A, B, C, D], 1)}
    # Newest first: D, C, B, A.  D failed its smoke test; A is current.
    assert select(built, keep=2, protected={A}, failed={D}) == [D]
    assert select(built, keep=1, protected={A}, failed={D}) == [D, B]
    assert select(built, keep=1, protected={A, B}, failed=set()) == [C]
    assert select(built, keep=10, protected=set(), failed=set()) == []


def test_in_use_finds_a_release_a_running_process_works_in(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, A)
    make_release(paths, B)
    proc = subprocess.Popen(["sleep", "30"], cwd=paths.release(A) / "app")
    try:
        assert in_use(paths) == {A}
    finally:
        proc.kill()
        proc.wait()


def test_bytes_freed_count_an_inode_only_when_all_its_links_go(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "own").write_bytes(b"x" * 100_000)
    (one / "shared").write_bytes(b"y" * 100_000)
    os.link(one / "shared", two / "shared")
    alone = tree_bytes([one])
    both = tree_bytes([one, two])
    assert 100_000 <= alone < 150_000           # `own` only: `shared` still has a link in two/
    assert both >= alone + 100_000              # with two/ gone too, `shared` is freed


def test_a_held_lock_names_its_holder_and_is_released_when_the_holder_dies(tmp_path):
    paths = Paths(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from deployer.lock import deploy_lock; "
        "from deployer.paths import Paths\n"
        f"with deploy_lock(Paths(Path({str(tmp_path)!r})), 'deployer deploy main'):\n"
        "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    try:
        assert read_holder(paths)["pid"] == holder.pid
        with pytest.raises(LockHeld) as excinfo:
            with deploy_lock(paths, "deployer release x"):
                pass
        assert excinfo.value.exit_code == 3
        assert f"pid {holder.pid}" in excinfo.value.message
        assert "deployer deploy main" in excinfo.value.message
    finally:
        holder.kill()  # kill -9: the kernel drops the flock with the process
        holder.wait()
    assert read_holder(paths) is None
    with deploy_lock(paths, "deployer release x"):
        assert json.loads(paths.lock_file.read_text())["command"] == "deployer release x"
    assert read_holder(paths) is None


def test_env_file_syntax_is_systemds():
    values = envfile.parse('# comment\n; also\n\nA=1\nB = "two words"\nC=\'x=y\'\nD=\n')
    assert values == {"A": "1", "B": "two words", "C": "x=y", "D": ""}
    with pytest.raises(BadInput, match="line 1"):
        envfile.parse("export A=1\n")


def test_env_file_must_not_be_readable_by_others_and_must_have_every_required_variable(tmp_path):
    path = tmp_path / "site.env"
    path.write_text("DJANGO_SECRET_KEY=s3cret\n")
    path.chmod(0o600)
    assert envfile.load(path, ("DJANGO_SECRET_KEY",)) == {"DJANGO_SECRET_KEY": "s3cret"}
    with pytest.raises(BadInput, match="missing required variable\\(s\\): DJANGO_ALLOWED_HOSTS"):
        envfile.load(path, ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"))
    path.chmod(0o604)
    with pytest.raises(BadInput, match="readable or writable by other users") as excinfo:
        envfile.load(path, ())
    assert "s3cret" not in excinfo.value.message
    with pytest.raises(BadInput, match="does not exist"):
        envfile.load(tmp_path / "missing.env", ())
