"""FLOP and parameter accounting: cost primitives, the exact counter, external counters, conventions."""
