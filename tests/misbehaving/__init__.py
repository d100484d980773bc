"""Kernel backends that misbehave on purpose (registered by the trust tests): each computes with the
FFT backend's kernels and then gets something wrong."""
