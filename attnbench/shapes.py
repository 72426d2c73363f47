"""Input shapes of video blocks: [B, C, T, H, W]."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.errors import UsageError


@dataclass(frozen=True)
class VideoShape:
    """Shape of a video feature map, in PyTorch's NCDHW order: batch, channels, frames, height, width."""

    B: int
    C: int
    T: int
    H: int
    W: int

    def __post_init__(self) -> None:
        for name in ("B", "C", "T", "H", "W"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
            if value <= 0:
                raise UsageError(f"{name} must be a positive integer, got {value}")

    def as_list(self) -> list[int]:
        return [self.B, self.C, self.T, self.H, self.W]

    @property
    def thw(self) -> int:
        return self.T * self.H * self.W

    @property
    def numel(self) -> int:
        return self.B * self.C * self.thw

    def replace(self, **sizes: int | None) -> "VideoShape":
        """A copy with the given sizes changed; None leaves a size as it is."""
        merged = {k: getattr(self, k) for k in ("B", "C", "T", "H", "W")}
        merged.update({k: v for k, v in sizes.items() if v is not None})
        return VideoShape(**merged)

    def __str__(self) -> str:
        return "x".join(str(v) for v in self.as_list())
