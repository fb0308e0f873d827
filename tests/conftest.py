"""Every tier: the time each tier took, at the end of the run (what `.ci/run` prints per tier)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TIERS = Path(__file__).parent
_seconds: dict[str, float] = defaultdict(float)
_tests: dict[str, int] = defaultdict(int)


def _tier(nodeid: str) -> str:
    parts = Path(nodeid.split("::")[0]).parts
    return parts[1] if len(parts) > 2 and parts[0] == TIERS.name else parts[0]


def pytest_runtest_logreport(report) -> None:
    tier = _tier(report.nodeid)
    _seconds[tier] += report.duration  # setup, call and teardown: the tier's own wall time, run serially
    if report.when == "call":
        _tests[tier] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    if not _seconds:
        return
    terminalreporter.section("time per tier")
    for tier, seconds in sorted(_seconds.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{tier:12} {seconds / 60:6.1f} min  ({_tests[tier]} tests)")
