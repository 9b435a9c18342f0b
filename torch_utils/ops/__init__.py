"""Custom operators with pure-PyTorch reference implementations and optional CUDA kernels."""
