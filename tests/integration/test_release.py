"""release: build a commit into releases/<sha>, off to the side (docs/design.md §5)."""

import json
import os
from pathlib import Path

from deployer.releases import digests


def test_release_builds_a_complete_release_and_prints_its_sha(deployment, source_repo):
    result = deployment.ok("release", "visible")

    sha = source_repo.sha("visible")
    assert result.stdout.strip() == sha
    release = deployment.deploy_to / "releases" / sha
    meta = json.loads((release / "RELEASE.json").read_text())
    assert meta["sha"] == sha
    assert meta["subject"] == "Say hello in the footer"
    assert (release / "REVISION").read_text().strip() == sha
    assert (release / "app" / "manage.py").is_file()
    assert not (release / ".git").exists()  # git archive, never a checkout
    assert (release / "venv" / "bin" / "python").exists()
    assert os.readlink(release / "db") == os.path.join("..", "..", "shared", "db")
    assert os.readlink(release / "media") == os.path.join("..", "..", "shared", "media")
    manifest = json.loads((release / "staticfiles" / "staticfiles.json").read_text())
    assert (release / "staticfiles" / manifest["paths"]["css/site.css"]).is_file()
    assert ["treatments", "0001_initial"] in meta["migrations"]["leaves"]
    assert meta["database"]["name"] == str(deployment.database)
    assert meta["digests"] == digests(release, ("db", "media"))
    # Each step printed one numbered line with its duration.
    for number, name in enumerate(["fetch mirror", "resolve commit", "export tree", "create venv",
                                   "link shared dirs", "django checks", "collectstatic",
                                   "write RELEASE.json"], 1):
        assert f"[{number}/8] {name}" in result.stderr
    assert "[8/8] write RELEASE.json" in result.stderr and " ok " in result.stderr


def test_release_keeps_secrets_out_of_the_metadata(deployment):
    sha = deployment.release("base")
    secret = next(line.split("=", 1)[1] for line in deployment.env_file.read_text().splitlines()
                  if line.startswith("DJANGO_SECRET_KEY="))
    assert secret not in (deployment.deploy_to / "releases" / sha / "RELEASE.json").read_text()


def test_release_bytecode_is_compiled_at_build_time(deployment):
    sha = deployment.release("base")
    app = deployment.deploy_to / "releases" / sha / "app"
    assert list((app / "config" / "settings" / "__pycache__").glob("production.*.pyc"))


def test_releasing_a_built_sha_again_builds_nothing(deployment, source_repo):
    sha = deployment.release("base")
    meta_before = (deployment.deploy_to / "releases" / sha / "RELEASE.json").read_text()

    again = deployment.ok("release", sha)

    assert again.stdout.strip() == sha
    assert "already built and complete" in again.stderr
    assert "create venv" not in again.stderr
    assert (deployment.deploy_to / "releases" / sha / "RELEASE.json").read_text() == meta_before


def test_rebuild_builds_again_but_never_the_live_release(deployment):
    sha = deployment.release("base")
    second = deployment.release("second")
    meta_path = deployment.deploy_to / "releases" / sha / "RELEASE.json"
    before = json.loads(meta_path.read_text())

    rebuilt = deployment.ok("release", "--rebuild", sha)
    assert "create venv" in rebuilt.stderr
    assert json.loads(meta_path.read_text())["built_at"] >= before["built_at"]
    assert not [name for name in deployment.releases if name.startswith(".tmp-")]

    deployment.ok("activate", second)
    refused = deployment.deployer("release", "--rebuild", second)
    assert refused.returncode == 2
    assert "live" in refused.stderr


def test_second_release_reuses_the_venv_by_hardlinks_and_the_live_hashed_statics(deployment):
    first = deployment.release("base")
    deployment.ok("activate", first)
    second = deployment.release("second")

    releases = deployment.deploy_to / "releases"
    meta = json.loads((releases / second / "RELEASE.json").read_text())
    assert meta["venv"] == "reused"
    django_init = "venv/lib/python3.12/site-packages/django/__init__.py"
    if (releases / first / django_init).exists():
        assert os.stat(releases / first / django_init).st_ino == os.stat(releases / second / django_init).st_ino
    # Every hashed file of the live release is still in the new one (pages rendered by the old
    # release keep finding their assets after the switch), as a hardlink, not a copy.
    old = json.loads((releases / first / "staticfiles" / "staticfiles.json").read_text())["paths"]
    for hashed in old.values():
        new_file = releases / second / "staticfiles" / hashed
        assert new_file.is_file(), hashed
        assert os.stat(new_file).st_ino == os.stat(releases / first / "staticfiles" / hashed).st_ino


def test_a_new_deploy_root_sharing_the_uv_cache_starts_from_the_venv_kept_for_its_lock(deployment, uv_cache):
    # The session's first deploy (another deploy root, same install.cache_dir) built this lock's venv.
    kept = sorted((uv_cache.parent / f"{uv_cache.name}-venvs").iterdir())
    assert [p.name for p in kept if not p.name.startswith(".")], kept
    planned = json.loads(deployment.ok("release", "base", "--plan", "--json").stdout)
    assert planned["build"]["venv"] == "reuse" and planned["build"]["venv_from"] is None
    sha = deployment.release("base")

    meta = json.loads((deployment.deploy_to / "releases" / sha / "RELEASE.json").read_text())
    assert meta["venv"] == "reused"
    django_init = Path("lib/python3.12/site-packages/django/__init__.py")
    kept_venv = uv_cache.parent / f"{uv_cache.name}-venvs" / meta["requirements_key"]
    assert os.stat(kept_venv / django_init).st_ino == os.stat(deployment.deploy_to / "releases" / sha / "venv" / django_init).st_ino
    deployment.ok("activate", sha)
    assert deployment.healthz()["release"] == sha


def test_a_failing_check_deploy_leaves_no_release_and_no_temp_dir(deployment, source_repo):
    result = deployment.deployer("release", "bad-check")

    assert result.returncode == 1
    assert "step 'django checks' failed" in result.stderr
    assert "security.W004" in result.stderr  # the tail of the failing output names the check
    assert result.stderr.strip().splitlines()[-1].startswith("deployer: error:")
    assert "Traceback" not in result.stderr.splitlines()[-1]
    assert source_repo.sha("bad-check") not in deployment.releases
    assert not [name for name in deployment.releases if name.startswith(".tmp-")]


def test_a_bad_requirement_fails_the_venv_step_and_leaves_nothing(deployment, source_repo):
    result = deployment.deployer("release", "bad-req")

    assert result.returncode == 1
    assert "step 'create venv' failed" in result.stderr
    assert "skinmenu-no-such-package" in result.stderr
    assert deployment.releases == set()


def test_an_interrupted_build_leaves_only_a_temp_dir_that_the_next_run_removes(deployment):
    stale = deployment.deploy_to / "releases" / (".tmp-" + "a" * 40 + "-dead")
    stale.mkdir(parents=True)
    (stale / "half-written").write_text("x")

    result = deployment.ok("release", "base")

    assert "left by an interrupted build" in result.stderr
    assert not stale.exists()
