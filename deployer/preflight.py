"""What activate, rollback and deploy check before their first step (docs/design.md §6.0).

State that would stop the run half-way (after a backup, a `migrate`, a started colour) is refused
before anything runs: `current` (or, with service.strategy standby, `live.sock` or a slot) that
is a real directory or file, a deploy_to where the switch link cannot be created, a history file
that cannot take the run's line, a state file the run replaces that is not a file. The refusal is
exit 1 with nothing changed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from deployer import standby, underway
from deployer.config import COLOURS, Config
from deployer.errors import OperationFailed
from deployer.paths import Paths

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFREG: "a regular file",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def require_switchable(config: Config, paths: Paths) -> None:
    """Refuse (exit 1, nothing changed) what the switch or the history line would refuse later."""
    for link in switched_links(config, paths):
        _require_symlink_or_absent(link)
    if config.service.standby:
        _require_dir_or_absent(standby.slots_dir(paths))
    for state_file in replaced_state_files(config, paths):
        _require_file_or_absent(state_file)
    _require_writable_dir(paths.root, "the switch creates its temporary link there")
    _require_history_appendable(paths)


def switched_links(config: Config, paths: Paths) -> list[Path]:
    """The links a run replaces by rename(2): `current`, and with standby live.sock and the slots."""
    links = [paths.current]
    if config.service.standby:
        links += [standby.socket_link(paths), *(standby.slot(paths, colour) for colour in COLOURS)]
    return links


def replaced_state_files(config: Config, paths: Paths) -> list[Path]:
    """Files a run replaces or removes on its way: the run under way, with standby the standby's."""
    files = [underway.path(paths)]
    if config.service.standby:
        files.append(standby.standby_file(paths))
    return files


def kind_of(path: Path) -> str | None:
    """'a directory', 'a regular file', … for what is at `path`; None for a symlink or nothing."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return None
    return _KINDS.get(stat.S_IFMT(mode), "not a symlink")


def _require_symlink_or_absent(link: Path) -> None:
    kind = kind_of(link)
    if kind is not None:
        raise OperationFailed(
            f"{link} is {kind}, not a symlink: refusing to switch it (nothing was changed)",
            hint=f"move it aside by hand (`mv {link} {link}.moved`), then run the command again",
        )


def _require_dir_or_absent(path: Path) -> None:
    kind = kind_of(path)
    if kind is not None and kind != "a directory":
        raise OperationFailed(f"{path} is {kind}, not a directory: the switch would stop there (nothing was changed)",
                              hint=f"move it aside by hand (`mv {path} {path}.moved`), then run the command again")


def _require_file_or_absent(path: Path) -> None:
    kind = kind_of(path)
    if kind is not None and kind != "a regular file":
        raise OperationFailed(f"{path} is {kind}, not a file: the run would stop at it (nothing was changed)",
                              hint=f"move it aside by hand (`mv {path} {path}.moved`), then run the command again")


def _require_writable_dir(path: Path, why: str) -> None:
    if path.exists() and not os.access(path, os.W_OK | os.X_OK):
        raise OperationFailed(f"{path} is not writable: {why} (nothing was changed)",
                              hint="check the owners and modes of deploy_to (docs/server-guide.md)")


def _require_history_appendable(paths: Paths) -> None:
    history_file = paths.history_file
    kind = kind_of(history_file)
    if kind is not None and kind != "a regular file":
        raise OperationFailed(f"{history_file} is {kind}, not a file: the run could not record itself (nothing was changed)",
                              hint=f"move it aside by hand (`mv {history_file} {history_file}.moved`), then run the command again")
    if kind is not None and not os.access(history_file, os.W_OK):
        raise OperationFailed(f"{history_file} is not writable: the run could not record itself (nothing was changed)",
                              hint="check the owners and modes of deploy_to/state (docs/server-guide.md)")
    if kind is None and paths.state.exists() and not os.access(paths.state, os.W_OK | os.X_OK):
        raise OperationFailed(f"{paths.state} is not writable: the run could not record itself (nothing was changed)",
                              hint="check the owners and modes of deploy_to/state (docs/server-guide.md)")
