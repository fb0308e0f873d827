"""The server's half of an orchestrated activation (deployer/gate.py) and the held lock's heartbeat."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import pytest

from deployer.gate import EVENT, Gate, Overruled
from deployer.lock import wait_for_heartbeats


def _gate(words: str) -> tuple[Gate, io.StringIO]:
    events = io.StringIO()
    return Gate("20261128T070000Z-abc123", owns_schema=True, words=io.StringIO(words), events=events), events


def test_a_server_goes_on_when_the_orchestrator_says_the_word_it_waits_for():
    gate, events = _gate('{"do": "go"}\n')
    gate.wait("prepared", "go", standby=True)
    line = events.getvalue()
    assert line.startswith(EVENT) and json.loads(line[len(EVENT):]) == {"event": "prepared", "standby": True}


def test_another_servers_failure_calls_it_off_as_failed_smoke_with_the_reason():
    gate, _ = _gate('{"do": "revert", "reason": "app2 failed: smoke test"}\n')
    with pytest.raises(Overruled) as raised:
        gate.wait("live", "commit")
    assert raised.value.result == "failed-smoke" and raised.value.message == "app2 failed: smoke test"


def test_an_orchestrator_that_went_away_calls_it_off_as_failed():
    gate, _ = _gate("")
    with pytest.raises(Overruled) as raised:
        gate.wait("prepared", "go")
    assert raised.value.result == "failed" and "went away" in raised.value.message


@pytest.mark.parametrize("garbage", ["go\n", '{"do": "commit"}\n', "[1, 2]\n", '"go"\n'])
def test_anything_but_the_awaited_word_calls_it_off(garbage):
    gate, _ = _gate(garbage)
    with pytest.raises(Overruled):
        gate.wait("prepared", "go")


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
