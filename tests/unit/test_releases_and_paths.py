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
    releases.write_metadata(release, {"sha": sha, "built_at": built_at, "digests": releases.digests(release, ())})


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
    assert releases.problems(release) == ["its tree changed since it was built"]
    (release / "app" / "extra.py").unlink()
    (release / "staticfiles" / "site.css").write_text("body{}")
    assert releases.problems(release) == ["its staticfiles changed since it was built"]
    (release / "staticfiles" / "site.css").unlink()
    (release / "REVISION").write_text(B)
    assert "REVISION does not match the directory name" in releases.problems(release)
    (release / "RELEASE.json").unlink()
    assert releases.problems(release) == ["RELEASE.json is missing, unreadable or malformed"]
    with pytest.raises(OperationFailed, match="not complete"):
        releases.require_complete(paths, A, ())


def test_a_same_size_edit_inside_a_release_makes_it_incomplete(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, A)
    release = paths.release(A)
    (release / "app" / "settings.py").write_text("DEBUG = False\n")
    releases.write_metadata(release, {"sha": A, "digests": releases.digests(release, ())})
    assert releases.problems(release) == []
    (release / "app" / "settings.py").write_text("DEBUG = True \n")  # same size, other bytes
    assert releases.problems(release) == ["its tree changed since it was built"]


@pytest.mark.parametrize("metadata", [b"\xff\xfe not utf-8", b"[1, 2]", b'{"sha": ["a"]}', b"[" * 20000,
                                      b'{"sha": "%s", "migrations": {"leaves": [1]}}' % A.encode(),
                                      b'{"sha": "%s", "built_at": 5}' % A.encode()])
def test_a_corrupted_release_json_is_an_incomplete_release_not_a_crash(tmp_path, metadata):
    paths = Paths(tmp_path)
    make_release(paths, A)
    (paths.release(A) / "RELEASE.json").write_bytes(metadata)
    assert releases.read_metadata(paths.release(A)) is None
    assert releases.complete(paths) == {}
    assert releases.problems(paths.release(A)) == ["RELEASE.json is missing, unreadable or malformed"]


def test_current_pointing_outside_releases_or_dangling_is_no_live_release(tmp_path):
    paths = Paths(tmp_path)
    make_release(paths, A)
    os.symlink(f"releases/{A}", paths.current)
    assert current_sha(paths) == A
    for target in (f"/elsewhere/releases/{A}", f"releases/{B}", f"../{A}", f"releases/../{A}"):
        paths.current.unlink()
        os.symlink(target, paths.current)
        assert current_sha(paths) is None, target


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


PROBE_WHILE_LOCKING = """
import fcntl, os, sys, time
from pathlib import Path
from deployer.lock import read_holder
from deployer.paths import Paths
paths = Paths(Path(sys.argv[1]))
if sys.argv[2] == "probe":
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        read_holder(paths)
else:
    fd = os.open(paths.lock_file, os.O_RDWR)
    refused = 0
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            refused += 1
    print(refused)
"""


def test_probing_the_lock_never_makes_a_deploy_fail(tmp_path):
    """`status` (and a deploy waiting for the lock) read the holder; they must never hold the
    lock themselves, not even shared for a moment, or an unrelated deploy exits 3."""
    paths = Paths(tmp_path)
    paths.ensure_state()
    paths.lock_file.write_text("")
    probers = [subprocess.Popen([sys.executable, "-c", PROBE_WHILE_LOCKING, str(tmp_path), "probe"]) for _ in range(2)]
    locker = subprocess.run([sys.executable, "-c", PROBE_WHILE_LOCKING, str(tmp_path), "lock"],
                            capture_output=True, text=True, check=True)
    for prober in probers:
        prober.wait()
    assert locker.stdout.strip() == "0"


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT RUN: needs root to start a process another user cannot inspect")
def test_in_use_sees_the_service_users_gunicorn_through_its_command_line(tmp_path):
    """The deploy user cannot read /proc/PID/cwd of the service user's gunicorn (EACCES); its
    command line, which systemd's ExecStart resolved to releases/<sha>/venv/bin/python, names it."""
    paths = Paths(tmp_path)
    make_release(paths, A)
    make_release(paths, B)
    python = paths.release(A) / "venv" / "bin" / "python"
    python.unlink()
    python.symlink_to(sys.executable)
    service = subprocess.Popen([str(python), "-c", "import time; time.sleep(30)"], cwd="/")
    try:
        seen = _as_nobody(lambda: sorted(in_use(paths)))
    finally:
        service.kill()
        service.wait()
    assert seen == [A]


def _as_nobody(function):
    """Run function in a forked child that dropped root for the `nobody` user; its result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.write(write_end, json.dumps(function()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)
