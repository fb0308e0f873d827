"""The env file with the site's secrets (DESIGN §5.5): systemd EnvironmentFile syntax.

Its values are handed to Django processes and never printed, logged or written anywhere else.
"""

from __future__ import annotations

import stat
from pathlib import Path

from deployer.errors import BadInput


def parse(text: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and lines starting with # or ; are comments; one level of
    matching single or double quotes around a value is removed (as systemd does)."""
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or not key.replace("_", "").isalnum() or key[0].isdigit():
            raise BadInput(f"env file line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load(path: Path, required: tuple[str, ...]) -> dict[str, str]:
    """Read the env file; refuse one that other users can read or that lacks a required variable."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadInput(f"env file {path} does not exist", hint="create it (mode 0640 root:deploy) with the required variables") from None
    except PermissionError:
        raise BadInput(f"env file {path} is not readable by this user") from None
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise BadInput(
            f"env file {path} is readable or writable by other users (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"chmod o-rwx {path}",
        )
    try:
        text = path.read_text()
    except PermissionError:
        raise BadInput(f"env file {path} is not readable by this user") from None
    try:
        values = parse(text)
    except BadInput as exc:
        raise BadInput(f"{path}: {exc.message}") from None
    missing = [name for name in required if not values.get(name)]
    if missing:
        raise BadInput(f"env file {path} is missing required variable(s): {', '.join(missing)}")
    return values


