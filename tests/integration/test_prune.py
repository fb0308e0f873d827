"""prune: keep the N newest good releases; never current, the rollback target or one in use (§8)."""

import json
import subprocess


def test_prune_keeps_current_rollback_target_and_in_use_releases(deployment, source_repo):
    base = deployment.release("base")
    second = deployment.release("second")
    third = deployment.release("third")
    visible = deployment.release("visible")
    deployment.ok("activate", second)
    deployment.ok("activate", third)          # current; rollback target: second
    stale = deployment.deploy_to / "releases" / f".tmp-{'b' * 40}-dead"
    stale.mkdir()
    # A process still running from the oldest release (e.g. a long management command).
    sleeper = subprocess.Popen(["sleep", "60"], cwd=deployment.deploy_to / "releases" / base / "app")
    try:
        dry = deployment.ok("prune", "--keep", "1", "--dry-run")
        assert "would free" in dry.stdout
        assert {base, second, third, visible} <= deployment.releases

        result = deployment.ok("prune", "--keep", "1")
    finally:
        sleeper.kill()
        sleeper.wait()

    # keep 1 = the newest build (visible); plus current (third), target (second), in use (base).
    assert {base, second, third, visible} <= deployment.releases
    assert "a running process uses it" in result.stderr
    assert not stale.exists()
    assert "freed" in result.stdout

    result = deployment.ok("prune", "--keep", "1")
    assert base not in deployment.releases
    assert {second, third, visible} <= deployment.releases
    assert deployment.healthz()["release"] == third
    assert "freed" in result.stdout and "1 release(s)" in result.stdout


def test_failed_releases_do_not_take_a_keep_slot(deployment, source_repo):
    deployment.ok("deploy", "base")
    deployment.ok("deploy", "second")
    assert deployment.deployer("deploy", "no-boot").returncode == 1
    no_boot = source_repo.sha("no-boot")
    assert no_boot in deployment.releases  # newest build, but it failed

    deployment.ok("prune", "--keep", "2")

    assert no_boot not in deployment.releases
    assert {source_repo.sha("base"), source_repo.sha("second")} <= deployment.releases


def test_prune_reports_bytes_freed_counting_shared_hardlinks_as_not_freed(deployment):
    deployment.ok("deploy", "base")
    deployment.ok("deploy", "second")
    third = deployment.release("third")
    deployment.ok("activate", third)
    listed = json.loads(deployment.ok("list", "--json").stdout)["releases"]
    oldest = [row for row in listed if row["state"] == "built"]
    assert oldest, listed

    result = deployment.ok("prune", "--keep", "2")

    freed = result.stdout
    assert "freed" in freed
    # The venv is hardlinked between releases: pruning one frees a few MB, not the ~190 MB venv.
    number, unit = freed.split("freed ")[1].split()[:2]
    assert unit in ("B", "KiB", "MiB") and (unit != "MiB" or float(number) < 60), freed


def test_keep_must_be_at_least_one(deployment):
    for bad in ("0", "-3"):
        result = deployment.deployer("prune", "--keep", bad)
        assert result.returncode == 2, result.stderr
        assert "--keep must be at least 1" in result.stderr


def test_prune_drops_a_kept_venv_no_remaining_release_needs_and_keeps_the_one_they_use(deployment, uv_cache):
    # This deploy root's own cache (other tests prune the shared one), seeded with the kept venv.
    shared_store, cache = uv_cache.parent / f"{uv_cache.name}-venvs", deployment.root / "uv"
    store = deployment.root / "uv-venvs"
    store.mkdir()
    for kept in shared_store.glob("[0-9a-f]*"):
        subprocess.run(["cp", "-al", str(kept), str(store / kept.name)], check=True)
    deployment.write_config(install={"cache_dir": str(cache)})
    sha = deployment.release("base")
    key = json.loads((deployment.deploy_to / "releases" / sha / "RELEASE.json").read_text())["requirements_key"]
    orphan = store / ("0" * 64)  # the lock of releases long gone
    subprocess.run(["cp", "-al", str(store / key), str(orphan)], check=True)

    planned = json.loads(deployment.ok("prune", "--keep", "1", "--plan", "--json").stdout)["prune"]
    assert planned["kept_venvs"] == [orphan.name]
    result = deployment.ok("prune", "--keep", "1")

    assert f"removing kept venv {orphan.name[:12]}" in result.stderr
    assert "1 kept venv(s)" in result.stdout
    assert not orphan.exists() and (store / key / "bin" / "python").exists()
