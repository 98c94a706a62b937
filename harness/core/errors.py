"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class HarnessError(Exception):
    """Bad input or configuration, with a message that names the file, row or field."""
