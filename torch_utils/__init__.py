"""PyTorch helpers shared by network, training and metric code (persistence, misc, stats, custom ops)."""
