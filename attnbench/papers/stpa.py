"""Interaction-aware Spatio-temporal Pyramid Attention Networks (STPA): no complexity figure is printed.

The paper (Du et al.) reports accuracies only: Table 1 (ablations on UCF101 split 1), Table 2 (comparisons on
UCF101, HMDB51, Charades) and Table 3 (number of frames K). It prints no parameter count, no FLOPs or
multiplications, no model size and no speed; the only sizes in it are feature-map shapes (35 x 35 x 320,
17 x 17 x 1088, 8 x 8 x 2080, the 71 x 71 x 92 fourth scale, the 1536-d fully connected layer) and K. The
text's remark that max pooling "doesn't bring in any parameters" is not a figure. So ``reproduce`` emits no
row for STPA.
"""

from __future__ import annotations

from attnbench.papers.figures import Figure

PAPER = "stpa"
FIGURES: tuple[Figure, ...] = ()
NOTE = "STPA prints no complexity figure (no parameters, FLOPs, size or speed): no rows"
