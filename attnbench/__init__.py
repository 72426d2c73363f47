"""attnbench: build video attention blocks at paper shapes, count their FLOPs exactly, time them."""

__version__ = "0.1.0"
