"""The env file with the site's secrets (docs/design.md §5.5): systemd EnvironmentFile syntax.

Its values are handed to Django processes and never printed, logged or written anywhere else:
every error here names the file and a line number, never a value.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from deployer.errors import BadInput

MAX_ENV_BYTES = 1 << 20
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse(text: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and lines starting with # or ; are comments; one level of
    matching single or double quotes around a value is removed (as systemd does)."""
    values = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise BadInput(f"env file line {number}: expected KEY=VALUE")
        if "\0" in value:
            raise BadInput(f"env file line {number}: the value of {key} contains a NUL character")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load(path: Path, required: tuple[str, ...]) -> dict[str, str]:
    """Read the env file; refuse one that other users can read or that lacks a required variable."""
    data = _read(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInput(f"env file {path} line {line} is not UTF-8 text", hint="save it as UTF-8") from None
    try:
        values = parse(text)
    except BadInput as exc:
        raise BadInput(f"{path}: {exc.message}") from None
    missing = [name for name in required if not values.get(name)]
    if missing:
        raise BadInput(f"env file {path} is missing required variable(s): {', '.join(missing)}")
    return values


def _read(path: Path) -> bytes:
    unreadable = BadInput(f"env file {path} is not readable by this user")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadInput(f"env file {path} does not exist", hint="create it (mode 0640 root:deploy) with the required variables") from None
    except PermissionError:
        raise unreadable from None
    except OSError as exc:
        raise BadInput(f"env file {path} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"env file {path} is not a regular file", hint="point env_file at the file itself")
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise BadInput(
            f"env file {path} is readable or writable by other users (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"chmod o-rwx {path}",
        )
    if st.st_size > MAX_ENV_BYTES:
        raise BadInput(f"env file {path} is larger than {MAX_ENV_BYTES} bytes")
    try:
        return path.read_bytes()
    except PermissionError:
        raise unreadable from None
    except OSError as exc:
        raise BadInput(f"env file {path} cannot be read: {exc.strerror or exc}") from None
