"""Expected failures, each with the exit code of docs/design.md §3."""

from __future__ import annotations


def one_line(text: str) -> str:
    """`text` with line breaks and every other unprintable character escaped: a message built
    from user input (a path, a YAML error, a key) can never spill onto a second line."""
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape", errors="backslashreplace").decode("ascii")


def shown(text: str, limit: int = 80) -> str:
    """User input as it may appear in a one-line message: quoted, escaped, cut in the middle
    (a long path keeps its start and its file name)."""
    escaped = text.encode("unicode_escape", errors="backslashreplace").decode("ascii")
    if len(escaped) > limit:
        head = limit // 2
        escaped = escaped[:head] + "…" + escaped[-(limit - head):]
    return "'" + escaped + "'"


class _OneLine:
    """An attribute that is always stored as one line (see one_line)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj, self.attr)

    def __set__(self, obj, value: str) -> None:
        setattr(obj, self.attr, one_line(str(value)))


class DeployError(Exception):
    """An expected failure: one clear line on stderr, no traceback."""

    exit_code = 1
    message = _OneLine()
    hint = _OneLine()  # what to do next

    def __init__(self, message: str, *, hint: str = "", details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details  # e.g. the tail of a failed command's output, shown as "    | " lines

    @property
    def details(self) -> str:
        return self._details

    @details.setter
    def details(self, value: str) -> None:
        # Line breaks stay (each line is prefixed when shown); terminal control characters do not.
        lines = str(value).replace("\r\n", "\n").split("\n")
        self._details = "\n".join(one_line(line.replace("\t", " ")) for line in lines)


class OperationFailed(DeployError):
    """The operation failed; the live site was left as it was or put back (exit 1)."""

    exit_code = 1


class BadInput(DeployError):
    """Bad input or bad configuration (exit 2)."""

    exit_code = 2


class LockHeld(DeployError):
    """Another deploy holds the lock (exit 3)."""

    exit_code = 3
