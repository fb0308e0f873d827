"""A full disk: the build fails with one clear line, leaves no temp dir, and the live release
keeps serving (docs/design.md §5: any failure changes nothing)."""

import os
import shutil
import subprocess

import pytest

from deployer.paths import Paths, stale_tmp_dirs

# The build on a full disk is the same for both strategies; this test moves deploy_to onto a
# small tmpfs, which the restart strategy's local service follows without a front door to move.
pytestmark = pytest.mark.strategy("restart")


@pytest.fixture
def small_disk(tmp_path):
    """A 700 MB tmpfs for the deploy root (root only: mount)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk test needs root to mount a tmpfs, and CI runs as root")
        pytest.skip("NOT RUN: the full-disk test needs root to mount a small tmpfs")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700m", "tmpfs", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_full_disk_fails_the_build_and_leaves_the_live_site_alone(small_disk, deployment, source_repo):
    deployment.stop()
    deployment.deploy_to = small_disk / "deploy"
    (deployment.deploy_to / "shared" / "db").mkdir(parents=True)
    shutil.move(deployment.root / "deploy" / "shared" / "db" / "skinmenu.sqlite3", deployment.database)
    deployment.write_config()  # the uv cache stays on the big disk (uv copies across filesystems)
    deployment.ok("deploy", "base")
    free = os.statvfs(small_disk)
    filler = small_disk / "filler"
    subprocess.run(["fallocate", "-l", str(free.f_bavail * free.f_frsize), str(filler)], check=True)

    result = deployment.deployer("deploy", "second")

    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("deployer: error:")
    assert "No space left on device" in result.stderr or "ENOSPC" in result.stderr or "os error 28" in result.stderr
    assert "Traceback" not in result.stderr
    assert stale_tmp_dirs(Paths(deployment.deploy_to)) == []
    assert source_repo.sha("second") not in deployment.releases
    assert deployment.current == source_repo.sha("base")

    filler.unlink()  # (while the disk is full, the live site's own SQLite writes fail too)
    assert deployment.healthz()["release"] == source_repo.sha("base")
    deployment.ok("deploy", "second")
    assert deployment.healthz()["release"] == source_repo.sha("second")
