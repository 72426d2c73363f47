"""Test support shipped with the package: :mod:`attnbench.testing.fake_cuda` runs CUDA code paths on a CPU."""
