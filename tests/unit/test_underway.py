"""state/underway.json: the run under way and what its operator authorised (docs/design.md §6.7)."""

import json

from deployer import underway
from deployer.paths import Paths

A, B = ("a" * 40, "b" * 40)


def killed_rollback_migrate() -> underway.Underway:
    return underway.Underway("rollback", B, A, unapply_with=B, force=False)


def test_a_run_killed_after_its_switch_is_found_with_its_authorisation(tmp_path):
    paths = Paths(tmp_path)
    underway.write(paths, killed_rollback_migrate())

    found = underway.unfinished(paths, current=A, recorded=B)

    assert found == killed_rollback_migrate()
    assert found.command() == "rollback --migrate"
    assert oct(underway.path(paths).stat().st_mode & 0o777) == oct(0o600)


def test_the_leftover_of_a_finished_run_is_ignored(tmp_path):
    paths = Paths(tmp_path)
    underway.write(paths, killed_rollback_migrate())

    assert underway.unfinished(paths, current=A, recorded=A) is None  # history recorded it: finished
    assert underway.unfinished(paths, current=B, recorded=B) is None  # current is not its target
    assert underway.unfinished(paths, current=None, recorded=B) is None


def test_a_cleared_or_corrupted_record_authorises_nothing(tmp_path):
    paths = Paths(tmp_path)
    underway.write(paths, killed_rollback_migrate())
    underway.clear(paths)
    assert underway.unfinished(paths, current=A, recorded=B) is None

    for garbage in (b"{not json", b"[1, 2]", json.dumps({"action": "rollback", "to": A, "from_sha": B,
                                                          "unapply_with": "../etc", "force": False}).encode()):
        underway.path(paths).write_bytes(garbage)
        assert underway.unfinished(paths, current=A, recorded=B) is None
