"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class HarnessError(Exception):
    """Bad input or configuration, with a message that names the file, row or field."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as one line: its type and first line, and its cause's first line where that adds
    something ("Connection error." says little without "[Errno 111] Connection refused")."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    cause = err.__cause__  # raised `from` it: the library's own reason
    why = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    if why and why not in text:
        text += f" ({why})"
    return text[:limit]
