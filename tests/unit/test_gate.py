"""The server's half of an orchestrated activation (deployer/gate.py) and the held lock's heartbeat."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import pytest

from deployer.gate import EVENT, Gate, Overruled, Words
from deployer.lock import wait_for_heartbeats


@pytest.fixture
def orchestrator_pipe():
    """The server reads the orchestrator's words from a real pipe, as from its stdin."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def _words(pipe, text: str, close: bool = True) -> Words:
    read_end, write_end = pipe
    os.write(write_end, text.encode())
    if close:
        os.close(write_end)
    return Words(read_end)


def _gate(words, text: str = "", close: bool = True, **timeouts) -> tuple[Gate, io.StringIO]:
    events = io.StringIO()
    gate = Gate("20261128T070000Z-abc123", owns_schema=True, words=_words(words, text, close),
                events=events, **timeouts)
    return gate, events


def _events(events: io.StringIO) -> list[str]:
    return [json.loads(line[len(EVENT):])["event"] for line in events.getvalue().splitlines()]


def test_a_server_goes_on_when_the_orchestrator_says_the_word_it_waits_for(orchestrator_pipe):
    gate, events = _gate(orchestrator_pipe, '{"do": "go"}\n')
    gate.wait("prepared", "go", standby=True)
    line = events.getvalue()
    assert line.startswith(EVENT) and json.loads(line[len(EVENT):]) == {"event": "prepared", "standby": True}


def test_another_servers_failure_calls_it_off_as_failed_smoke_with_the_reason(orchestrator_pipe):
    gate, _ = _gate(orchestrator_pipe, '{"do": "revert", "reason": "app2 failed: smoke test"}\n')
    with pytest.raises(Overruled) as raised:
        gate.wait("live", "commit")
    assert raised.value.result == "failed-smoke" and raised.value.message == "app2 failed: smoke test"


def test_an_orchestrator_that_went_away_calls_it_off_as_failed(orchestrator_pipe):
    gate, _ = _gate(orchestrator_pipe, "")
    with pytest.raises(Overruled) as raised:
        gate.wait("prepared", "go")
    assert raised.value.result == "failed" and "went away" in raised.value.message


@pytest.mark.parametrize("garbage", ["go\n", '{"do": "commit"}\n', "[1, 2]\n", '"go"\n'])
def test_anything_but_the_awaited_word_calls_it_off(orchestrator_pipe, garbage):
    gate, _ = _gate(orchestrator_pipe, garbage)
    with pytest.raises(Overruled):
        gate.wait("prepared", "go")


def test_an_orchestrator_that_stays_connected_but_silent_is_overruled_at_the_deadline(orchestrator_pipe):
    gate, _ = _gate(orchestrator_pipe, "", close=False, barrier_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(Overruled) as raised:
        gate.wait("live", "commit")
    assert 0.3 <= time.monotonic() - started < 2.0
    assert raised.value.result == "failed" and "within 0.3s after 'live'" in raised.value.message


def test_a_word_split_across_writes_is_read_whole(orchestrator_pipe):
    read_end, write_end = orchestrator_pipe
    words = Words(read_end)
    os.write(write_end, b'{"do": ')
    threading.Timer(0.1, lambda: os.write(write_end, b'"go"}\n{"do": "commit"}\n')).start()
    assert json.loads(words.readline(5)) == {"do": "go"}
    assert json.loads(words.readline(0)) == {"do": "commit"}


def test_the_migrations_server_waits_for_the_orchestrators_word_before_its_schema_moves(orchestrator_pipe):
    gate, events = _gate(orchestrator_pipe, '{"do": "restore-schema"}\n')
    gate.tell("migrated")
    notes = []
    gate.wait_for_schema_turn(notes.append)
    assert _events(events) == ["migrated", "schema-hold"] and notes == []


def test_the_schema_waits_for_no_one_when_the_others_never_started(orchestrator_pipe):
    gate, events = _gate(orchestrator_pipe, "")
    gate.wait_for_schema_turn(lambda note: None)
    assert _events(events) == []


def test_the_schema_waits_for_no_one_once_the_orchestrator_said_the_others_are_back(orchestrator_pipe):
    gate, events = _gate(orchestrator_pipe, '{"do": "revert", "reason": "app2 failed"}\n')
    gate.tell("migrated")
    with pytest.raises(Overruled):
        gate.wait("live", "commit")
    gate.wait_for_schema_turn(lambda note: None)
    assert _events(events) == ["migrated", "live"]


def test_without_an_orchestrator_the_schema_waits_the_put_back_deadline_for_the_others(orchestrator_pipe):
    gate, _ = _gate(orchestrator_pipe, "", put_back_timeout=0.4)
    gate.tell("migrated")
    notes = []
    started = time.monotonic()
    gate.wait_for_schema_turn(notes.append)
    assert time.monotonic() - started >= 0.4
    assert len(notes) == 1 and "went away" in notes[0]


def test_a_held_lock_lets_go_when_the_heartbeat_stops_though_its_pipe_stays_open():
    read_end, write_end = os.pipe()
    try:
        beating = threading.Thread(target=lambda: [os.write(write_end, b"\n") or time.sleep(0.05) for _ in range(6)])
        started = time.monotonic()
        beating.start()
        wait_for_heartbeats(read_end, timeout=0.5)  # beats for ~0.3 s, then silence
        elapsed = time.monotonic() - started
        beating.join()
        assert 0.5 <= elapsed < 2.0
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_held_lock_lets_go_at_once_when_its_pipe_closes():
    read_end, write_end = os.pipe()
    os.close(write_end)
    started = time.monotonic()
    wait_for_heartbeats(read_end, timeout=30)
    assert time.monotonic() - started < 1.0
    os.close(read_end)
