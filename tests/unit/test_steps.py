"""Step lines: one per step, its dots leading to one column, whatever the step's name."""

import re

import pytest

from deployer.steps import DOTS_TO, MIN_DOTS, Progress


@pytest.mark.parametrize("name", ["migrate", "start green from ebd80c7425cb", "hook before_switch: " + "x" * 60])
def test_every_step_line_has_dots_between_its_name_and_its_result(capsys, name):
    progress = Progress(7)
    with progress.step(name):
        pass
    line = capsys.readouterr().err.rstrip("\n")
    found = re.fullmatch(rf"\[1/7\] {re.escape(name)} (\.+) ok \d+\.\d\ds", line)
    assert found, line
    assert len(found.group(1)) >= MIN_DOTS
    assert line.index(" ok ") >= DOTS_TO


def test_short_step_lines_line_up(capsys):
    progress = Progress(9)
    for name in ("verify release", "migrate", "start green from ebd80c7425cb"):
        with progress.step(name):
            pass
    lines = capsys.readouterr().err.splitlines()
    assert len({line.index(" ok ") for line in lines}) == 1, lines
