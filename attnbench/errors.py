"""Errors the CLI turns into one line and exit code 2."""

from __future__ import annotations

from collections.abc import Iterable


class AttnBenchError(Exception):
    """A problem with the user's input or environment; printed as one line, exit code 2."""

    exit_code = 2


class UsageError(AttnBenchError):
    """Bad option, name or size."""


class DeviceError(AttnBenchError):
    """The asked-for device is not available."""


def unknown(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """Error for an unknown name, listing the valid ones."""
    valid = ", ".join(sorted(choices))
    return UsageError(f"unknown {kind} '{name}'; valid choices: {valid}")
