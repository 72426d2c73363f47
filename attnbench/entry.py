"""The ``attnbench`` program: what runs before the CLI is imported. Importing the CLI imports torch (about
1.5 s), so Ctrl-C and a closed standard stream are handled here, around that import."""

from __future__ import annotations

import os
import sys


class _Closed:
    """Stands in for a standard stream the caller closed (``attnbench list >&-``): writing to it fails the
    way writing to a closed descriptor does, which the CLI reports in one line."""

    encoding = "utf-8"

    def write(self, _text: str) -> int:
        raise OSError(9, "standard output is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(9, "standard output is closed")


def main() -> None:
    if sys.stdout is None:
        sys.stdout = _Closed()  # type: ignore[assignment]
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # nowhere to say anything; the exit code still tells
    try:
        from attnbench.cli import run
    except KeyboardInterrupt:
        _quiet_exit("interrupted", 130)
    code = run()
    _flush_or_quiet()
    sys.exit(code)


def _flush_or_quiet() -> None:
    """Flush standard output; if the reader has gone (``| head -1``), point it at /dev/null so that the
    interpreter's own flush at exit prints nothing."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        silence_stdout()
    except OSError:
        pass


def silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _quiet_exit(message: str, code: int) -> None:
    try:
        print(message, file=sys.stderr)
    except OSError:
        pass
    sys.exit(code)


if __name__ == "__main__":
    main()
