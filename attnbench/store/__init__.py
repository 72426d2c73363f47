"""Results files, below every layer that writes them: atomic writes and locks (:mod:`.files`), JSON-lines rows
with resume and overwrite sessions (:mod:`.jsonl`), and the schemas rows must meet to be reused (:mod:`.rows`).
Imports nothing from attnbench but :mod:`attnbench.errors`."""
