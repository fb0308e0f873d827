"""Expected failures, each with the exit code of DESIGN §3."""


class DeployError(Exception):
    """An expected failure: one clear line on stderr, no traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint  # what to do next
        self.details = details  # e.g. the tail of a failed command's output


class OperationFailed(DeployError):
    """The operation failed; the live site was left as it was or put back (exit 1)."""

    exit_code = 1


class BadInput(DeployError):
    """Bad input or bad configuration (exit 2)."""

    exit_code = 2


class LockHeld(DeployError):
    """Another deploy holds the lock (exit 3)."""

    exit_code = 3


def shown(text: str, limit: int = 80) -> str:
    """User input as it may appear in a one-line message: quoted, escaped, cut."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return "'" + (escaped if len(escaped) <= limit else escaped[:limit] + "…") + "'"
