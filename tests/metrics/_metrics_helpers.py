"""A 2D stand-in generator shared by the metric tests (importable by spawned DDP workers)."""

import torch

#----------------------------------------------------------------------------

class TinyImageG(torch.nn.Module):
    """A 2D 'generator' (z -> 16x16 image) standing in for G in the feature pipeline."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.z_dim, self.c_dim = 8, 0
        self.fc = torch.nn.Linear(8, 3 * 16 * 16)
    def forward(self, z, c, **kwargs):
        return torch.tanh(self.fc(z)).reshape(-1, 3, 16, 16)
