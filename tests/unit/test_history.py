"""history.jsonl: what was live, what a rollback goes to, which releases failed (docs/design.md §6.6, §7)."""

from pathlib import Path

from deployer import history
from deployer.paths import Paths

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)


def entry(action, frm, to, result="ok"):
    return {"action": action, "from": frm, "to": to, "result": result}


def test_rollback_target_is_the_release_live_before_the_current_one():
    entries = [entry("deploy", None, A), entry("deploy", A, B), entry("deploy", B, C)]
    assert history.rollback_target(entries, C) == B


def test_rollbacks_walk_back_instead_of_toggling():
    entries = [entry("deploy", None, A), entry("deploy", A, B), entry("deploy", B, C), entry("rollback", C, B)]
    assert history.live_stack(entries) == [A, B]
    assert history.rollback_target(entries, B) == A


def test_a_release_that_failed_its_smoke_test_is_never_a_target():
    entries = [entry("deploy", None, A), entry("deploy", A, B), entry("deploy", B, C, "failed-smoke")]
    assert history.rollback_target(entries, B) == A
    assert history.failed_smoke(entries) == {C}


def test_a_release_that_failed_and_later_went_live_is_not_failed_anymore():
    entries = [entry("deploy", A, C, "failed-smoke"), entry("activate", A, C)]
    assert history.failed_smoke(entries) == set()


def test_rollback_to_a_named_release_then_rollback_again():
    entries = [entry("deploy", None, A), entry("deploy", A, B), entry("deploy", B, C),
               entry("rollback", C, A)]
    assert history.live_stack(entries) == [A]
    assert history.rollback_target(entries, A) is None


def test_no_history_no_target():
    assert history.rollback_target([], None) is None
    assert history.last_live([]) is None


def test_append_writes_one_fsynced_json_line_per_entry_and_read_skips_a_torn_line(tmp_path):
    paths = Paths(tmp_path)
    history.append(paths, "deploy", None, A, "ok", seconds=1.5)
    history.append(paths, "deploy", A, B, "ok")
    with open(paths.history_file, "a") as fh:
        fh.write('{"action": "deploy", "to": "cccc')  # a kill mid-write
    entries = history.read(paths)
    assert [e["to"] for e in entries] == [A, B]
    assert {"time", "user", "host", "action", "from", "to", "result", "seconds"} <= set(entries[0])
    assert history.last_live(entries) == B


def test_history_file_is_append_only(tmp_path):
    paths = Paths(tmp_path)
    history.append(paths, "deploy", None, A, "ok")
    first = Path(paths.history_file).read_text()
    history.append(paths, "deploy", A, B, "ok")
    assert Path(paths.history_file).read_text().startswith(first)


def test_an_entry_appended_after_a_torn_line_is_not_lost(tmp_path):
    paths = Paths(tmp_path)
    history.append(paths, "deploy", None, A, "ok")
    with open(paths.history_file, "a") as fh:
        fh.write('{"action": "deploy", "to": "cccc')  # a kill mid-write
    history.append(paths, "deploy", A, B, "ok")
    assert [e["to"] for e in history.read(paths)] == [A, B]
    assert history.last_live(history.read(paths)) == B


def test_corrupted_lines_are_skipped_never_trusted(tmp_path):
    paths = Paths(tmp_path)
    history.append(paths, "deploy", None, A, "ok")
    with open(paths.history_file, "ab") as fh:
        fh.write(b"\xff\xfe not utf-8\n")
        fh.write(b'{"action": "deploy", "from": null, "to": ["list"], "result": "ok"}\n')
        fh.write(b'{"action": "deploy", "from": {"x": 1}, "to": "%s", "result": "ok"}\n' % B.encode())
        fh.write(b"[" * 20000 + b"\n")
        fh.write(b'["a list"]\n')
    history.append(paths, "deploy", A, C, "ok")
    assert [e["to"] for e in history.read(paths)] == [A, C]


def test_history_and_state_are_private_from_the_start(tmp_path):
    paths = Paths(tmp_path / "deploy")
    history.append(paths, "deploy", None, A, "ok")
    assert paths.state.stat().st_mode & 0o777 == 0o700
    assert paths.backups.stat().st_mode & 0o777 == 0o700
    assert paths.history_file.stat().st_mode & 0o777 == 0o600
