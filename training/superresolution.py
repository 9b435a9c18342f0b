"""EG3D super-resolution heads: two StyleGAN2 blocks that upsample the rendered features (dual-resolution output)."""

import numpy as np
import torch
from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from training.networks_stylegan2 import Conv2dLayer, SynthesisLayer, ToRGBLayer, SynthesisBlock
from training.networks_stylegan3 import SynthesisLayer as AFSynthesisLayer  # noqa: F401 -- EG3D imports it too (pickled sources)

# Pickles embed and re-execute this source (official EG3D included): import only names EG3D provides.
# Channel counts and w_dim=512 are fixed, as in EG3D, so that state dicts match the official checkpoints.

#----------------------------------------------------------------------------

def _resize(x, size, antialias):
    return torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear', align_corners=False,
        antialias=antialias)

def _sr_forward(module, rgb, x, ws, resize_if, antialias, **block_kwargs):
    """Shared forward: both blocks use the last w (x3); inputs are resized when `resize_if(res)` holds."""
    ws = ws[:, -1:, :].repeat(1, 3, 1)
    if resize_if(x.shape[-1]):
        x = _resize(x, module.input_resolution, antialias)
        rgb = _resize(rgb, module.input_resolution, antialias)
    x, rgb = module.block0(x, rgb, ws, **block_kwargs)
    x, rgb = module.block1(x, rgb, ws, **block_kwargs)
    return rgb

def _sr_blocks(module, block0_cls, channels, mid, out, res0, res1, sr_num_fp16_res, block_kwargs):
    use_fp16 = sr_num_fp16_res > 0
    common = dict(w_dim=512, img_channels=3, use_fp16=use_fp16, conv_clamp=(256 if use_fp16 else None))
    module.block0 = block0_cls(channels, mid, resolution=res0, is_last=False, **common, **block_kwargs)
    module.block1 = SynthesisBlock(mid, out, resolution=res1, is_last=True, **common, **block_kwargs)

#----------------------------------------------------------------------------
# 512^2 output from 128^2 features (FFHQ/AFHQ 512 configs).

@persistence.persistent_class
class SuperresolutionHybrid8XDC(torch.nn.Module):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias,
            num_fp16_res=4, conv_clamp=None, channel_base=None, channel_max=None, # ignored, as in EG3D
            **block_kwargs):
        super().__init__()
        assert img_resolution == 512
        self.input_resolution = 128
        self.sr_antialias = sr_antialias
        _sr_blocks(self, SynthesisBlock, channels, 256, 128, 256, 512, sr_num_fp16_res, block_kwargs)

    def forward(self, rgb, x, ws, **block_kwargs):
        return _sr_forward(self, rgb, x, ws, lambda r: r != self.input_resolution, self.sr_antialias, **block_kwargs)

#----------------------------------------------------------------------------

@persistence.persistent_class
class SuperresolutionHybrid8X(torch.nn.Module):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias,
            num_fp16_res=4, conv_clamp=None, channel_base=None, channel_max=None, # ignored, as in EG3D
            **block_kwargs):
        super().__init__()
        assert img_resolution == 512
        self.input_resolution = 128
        self.sr_antialias = sr_antialias
        _sr_blocks(self, SynthesisBlock, channels, 128, 64, 256, 512, sr_num_fp16_res, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))

    def forward(self, rgb, x, ws, **block_kwargs):
        return _sr_forward(self, rgb, x, ws, lambda r: r != self.input_resolution, self.sr_antialias, **block_kwargs)

#----------------------------------------------------------------------------
# 256^2 output; the first block works at 128^2 without upsampling (see SynthesisBlockNoUp's in-place note).

@persistence.persistent_class
class SuperresolutionHybrid4X(torch.nn.Module):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias,
            num_fp16_res=4, conv_clamp=None, channel_base=None, channel_max=None, # ignored, as in EG3D
            **block_kwargs):
        super().__init__()
        assert img_resolution == 256
        self.input_resolution = 128
        self.sr_antialias = sr_antialias
        _sr_blocks(self, SynthesisBlockNoUp, channels, 128, 64, 128, 256, sr_num_fp16_res, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))

    def forward(self, rgb, x, ws, **block_kwargs):
        return _sr_forward(self, rgb, x, ws, lambda r: r < self.input_resolution, self.sr_antialias, **block_kwargs)

#----------------------------------------------------------------------------
# 128^2 output from 64^2 features (ShapeNet cars).

@persistence.persistent_class
class SuperresolutionHybrid2X(torch.nn.Module):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias,
            num_fp16_res=4, conv_clamp=None, channel_base=None, channel_max=None, # ignored, as in EG3D
            **block_kwargs):
        super().__init__()
        assert img_resolution == 128
        self.input_resolution = 64
        self.sr_antialias = sr_antialias
        _sr_blocks(self, SynthesisBlockNoUp, channels, 128, 64, 64, 128, sr_num_fp16_res, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))

    def forward(self, rgb, x, ws, **block_kwargs):
        return _sr_forward(self, rgb, x, ws, lambda r: r != self.input_resolution, self.sr_antialias, **block_kwargs)

#----------------------------------------------------------------------------
# 2X at any even output resolution (not in EG3D; for small images such as the 32^2 demo): 2X's layout with
# input_resolution = img_resolution / 2. Unlike 2X it adds block0's ToRGB residual to a copy of `rgb`, so the caller's
# image_raw is left alone and fp32 (CPU) training works (see the in-place note above SynthesisBlockNoUp).

@persistence.persistent_class
class SuperresolutionHybrid2XAnyRes(torch.nn.Module):
    """EG3D's 2X hybrid super-resolution for any img_resolution (input = img_resolution / 2), e.g. 32 or 64 px."""
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias,
            num_fp16_res=4, conv_clamp=None, channel_base=None, channel_max=None, # ignored, as in EG3D
            **block_kwargs):
        super().__init__()
        assert img_resolution >= 4 and img_resolution % 2 == 0
        self.input_resolution = img_resolution // 2
        self.sr_antialias = sr_antialias
        _sr_blocks(self, SynthesisBlockNoUp, channels, 128, 64, self.input_resolution, img_resolution, sr_num_fp16_res,
            block_kwargs)

    def forward(self, rgb, x, ws, **block_kwargs):
        return _sr_forward(self, rgb.clone(), x, ws, lambda r: r != self.input_resolution, self.sr_antialias,
            **block_kwargs)

#----------------------------------------------------------------------------
# 128^2 output; unlike 2X it only resizes smaller inputs and never antialiases. EG3D's version has no `sr_antialias`
# argument and therefore cannot be built by TriPlaneGenerator; we accept and ignore it.

@persistence.persistent_class
class SuperresolutionHybridDeepfp32(torch.nn.Module):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias=False,
            num_fp16_res=4, conv_clamp=None, channel_base=None, channel_max=None, # ignored, as in EG3D
            **block_kwargs):
        super().__init__()
        assert img_resolution == 128
        self.input_resolution = 64
        _sr_blocks(self, SynthesisBlockNoUp, channels, 128, 64, 64, 128, sr_num_fp16_res, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))

    def forward(self, rgb, x, ws, **block_kwargs):
        return _sr_forward(self, rgb, x, ws, lambda r: r < self.input_resolution, False, **block_kwargs)

#----------------------------------------------------------------------------
# A SynthesisBlock whose conv0 and skip image do not upsample. Its ToRGB residual is added IN PLACE to the `img` it
# receives; when that is TriPlaneGenerator's image_raw view, image_raw changes too (EG3D behaviour, kept for compat;
# a side effect is that fp32 backward through this path fails with autograd's in-place error, as in EG3D).
# Forced duplicate of networks_stylegan2.SynthesisBlock (minus upsampling): EG3D pickles name this class here.

@persistence.persistent_class
class SynthesisBlockNoUp(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture='skip',
            resample_filter=[1,3,3,1], conv_clamp=256, use_fp16=False, fp16_channels_last=False,
            fused_modconv_default=True, **layer_kwargs):
        assert architecture in ['orig', 'skip', 'resnet']
        super().__init__()
        self.in_channels, self.w_dim, self.resolution, self.img_channels = in_channels, w_dim, resolution, img_channels
        self.is_last, self.architecture, self.use_fp16 = is_last, architecture, use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution,
                conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
            conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim,
                conv_clamp=conv_clamp, channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False,
                resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        _ = update_emas # unused
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        if ws.device.type != 'cuda':
            force_fp32 = True # fp16 only on CUDA
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == 'inference_only':
            fused_modconv = (not self.training)
        # Input.
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)
        # Main layers.
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        # ToRGB: no upsampling of `img`, and the residual is added in place (see the note above the class).
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        assert x.dtype == dtype or torch.is_autocast_enabled(x.device.type) # --amp=bf16 runs layers in bf16
        assert img is None or img.dtype == torch.float32
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}'

#----------------------------------------------------------------------------
