"""Further CLI commands, one module each; every module here registers its commands on ``attnbench.cli.app``."""
