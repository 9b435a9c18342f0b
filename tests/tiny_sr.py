"""Test-only superresolution stand-in: 2X bilinear upsampling plus a learned 1x1 residual, so CPU training tests stay fast."""

import torch
from torch_utils import persistence

#----------------------------------------------------------------------------
# Same constructor/forward interface as training.superresolution.SuperresolutionHybrid2X, any output resolution.

@persistence.persistent_class
class TinySuperresolution(torch.nn.Module):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias, num_fp16_res=4, conv_clamp=None,
                 channel_base=None, channel_max=None, **block_kwargs):
        super().__init__()
        self.img_resolution = img_resolution
        self.sr_antialias = sr_antialias
        self.weight = torch.nn.Parameter(torch.randn([3, channels, 1, 1]) * 0.01)

    def forward(self, rgb, x, ws, **block_kwargs):
        size = (self.img_resolution, self.img_resolution)
        rgb = torch.nn.functional.interpolate(rgb, size=size, mode='bilinear', align_corners=False, antialias=self.sr_antialias)
        x = torch.nn.functional.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=self.sr_antialias)
        return rgb + torch.nn.functional.conv2d(x, self.weight)

#----------------------------------------------------------------------------
