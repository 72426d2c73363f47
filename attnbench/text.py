"""Text from files, made safe to print: a results file or a baseline is data, never terminal commands or
Rich markup. Pure Python, so every layer can use it."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(value: object) -> str:
    """``value`` as one printable line: every control character (ESC, newline, carriage return, NUL, C1
    codes ...) shown as a backslash escape, so a key holding ``\\x1b[2J`` cannot clear a terminal and a
    newline cannot split a one-line message."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def plain(value: object) -> str:
    """:func:`clean`, then with Rich markup escaped: for text put into a Rich table or a ``print`` that
    renders markup, where ``[bold red]`` in a file must show as those characters."""
    from rich.markup import escape

    return escape(clean(value))


UNHANDLED = "unhandled ops (not counted)"  # the column that names them, in every table


def unhandled_text(unhandled: dict[str, int] | None) -> str:
    """Ops the exact counter did not count: ``{"_fft_r2c": 1}`` -> ``"_fft_r2c x1"``; "-" when it knew every op."""
    return ", ".join(f"{k} x{v}" for k, v in sorted((unhandled or {}).items())) or "-"
