"""Logging filters for the production settings (config/settings/production.py, LOGGING)."""

import logging


class OneLineWarning(logging.Filter):
    """Turn a record into one WARNING line: no traceback, whatever level it was logged at.

    For django.security.DisallowedHost: Django logs a request with a Host outside
    ALLOWED_HOSTS at ERROR with its traceback, a dozen lines per scanner request. The
    operator needs one line naming the host (a missing DJANGO_ALLOWED_HOSTS entry, the
    guide's troubleshooting table), not Django's stack.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = record.stack_info = None
        return True
