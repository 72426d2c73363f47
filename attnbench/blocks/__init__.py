"""Attention blocks, one file per paper; importing this package registers them all."""

from attnbench.blocks import banet, nonlocal_block  # noqa: F401
