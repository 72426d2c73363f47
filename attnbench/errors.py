"""Errors the CLI turns into one line and exit code 2."""

from __future__ import annotations

from collections.abc import Iterable


class AttnBenchError(Exception):
    """A problem with the user's input or environment; printed as one line, exit code 2."""

    exit_code = 2


class AttnBenchWarning(UserWarning):
    """Something the user should know that does not stop the run (e.g. unreadable lines skipped in a
    results file); the CLI prints it as one ``warning:`` line."""


class UsageError(AttnBenchError):
    """Bad option, name or size."""


class DeviceError(AttnBenchError):
    """The asked-for device is not available."""


def unknown(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """Error for an unknown name, listing the valid ones."""
    valid = ", ".join(sorted(choices))
    return UsageError(f"unknown {kind} '{name}'; valid choices: {valid}")


def check_range(flag: str, value: float | int | None, low: float, high: float, *, low_open: bool = False) -> None:
    """Refuse a number outside ``[low, high]`` (``(low, high]`` with ``low_open``), NaN and infinity included,
    with one line that names the flag and the range. ``None`` (not given) passes."""
    if value is None:
        return
    ok = value == value and abs(value) != float("inf") and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        raise UsageError(f"{flag} must be {bound} and at most {high:g}, got {value}")
