"""EG3D discriminators: a StyleGAN2 ResNet D that sees the super-resolved and the raw image together."""

import numpy as np
import torch
from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from training.networks_stylegan2 import DiscriminatorBlock, MappingNetwork, DiscriminatorEpilogue

# Pickles embed and re-execute this source (official EG3D included): import only names EG3D provides.

#----------------------------------------------------------------------------

def filtered_resizing(image_orig_tensor, size, f, filter_mode='antialiased'):
    """Resize [N, C, H, W] to size x size.

    filter_mode: 'antialiased' (bilinear with antialiasing; what D.forward always uses), 'classic' (upsample 2x with
    `f`, bilinear to 2*size+2, filtered downsample with 1 px crop), 'none' (plain bilinear), or a float in (0, 1)
    blending plain (weight 1 - m) and antialiased (weight m) bilinear resizing.
    """
    def interp(x, s, antialias):
        return torch.nn.functional.interpolate(x, size=(s, s), mode='bilinear', align_corners=False,
            antialias=antialias)
    if filter_mode == 'antialiased':
        return interp(image_orig_tensor, size, True)
    if filter_mode == 'classic':
        x = upfirdn2d.upsample2d(image_orig_tensor, f, up=2)
        x = interp(x, size * 2 + 2, False)
        return upfirdn2d.downsample2d(x, f, down=2, flip_filter=True, padding=-1)
    if filter_mode == 'none':
        return interp(image_orig_tensor, size, False)
    if isinstance(filter_mode, float):
        if not 0 < filter_mode < 1:
            raise ValueError(f'filtered_resizing: blend factor must lie in (0, 1), got {filter_mode}')
        filtered = interp(image_orig_tensor, size, True)
        aliased = interp(image_orig_tensor, size, False)
        return (1 - filter_mode) * aliased + filter_mode * filtered
    raise ValueError(f'filtered_resizing: unknown filter_mode {filter_mode!r}')

#----------------------------------------------------------------------------
# Forced duplicate of networks_stylegan2.Discriminator.__init__: a pickled module may not import helpers EG3D lacks.

def _build_trunk(D, c_dim, img_resolution, img_channels, architecture, channel_base, channel_max, num_fp16_res,
        conv_clamp, cmap_dim, block_kwargs, mapping_kwargs, epilogue_kwargs):
    """Create blocks b<res>...b8, the conditioning mapping and the b4 epilogue on D (StyleGAN2 Discriminator layout)."""
    D.c_dim = c_dim
    D.img_resolution = img_resolution
    D.img_resolution_log2 = int(np.log2(img_resolution))
    D.img_channels = img_channels
    D.block_resolutions = [2 ** i for i in range(D.img_resolution_log2, 2, -1)]
    channels_dict = {res: min(channel_base // res, channel_max) for res in D.block_resolutions + [4]}
    fp16_resolution = max(2 ** (D.img_resolution_log2 + 1 - num_fp16_res), 8)
    if cmap_dim is None:
        cmap_dim = channels_dict[4]
    if c_dim == 0:
        cmap_dim = 0
    common_kwargs = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
    cur_layer_idx = 0
    for res in D.block_resolutions:
        in_channels = channels_dict[res] if res < img_resolution else 0
        block = DiscriminatorBlock(in_channels, channels_dict[res], channels_dict[res // 2], resolution=res,
            first_layer_idx=cur_layer_idx, use_fp16=(res >= fp16_resolution), **block_kwargs, **common_kwargs)
        setattr(D, f'b{res}', block)
        cur_layer_idx += block.num_layers
    if c_dim > 0:
        D.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
            **mapping_kwargs)
    D.b4 = DiscriminatorEpilogue(channels_dict[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs,
        **common_kwargs)

def _run_trunk(D, img, cmap, **block_kwargs):
    x = None
    for res in D.block_resolutions:
        x, img = getattr(D, f'b{res}')(x, img, **block_kwargs)
    return D.b4(x, img, cmap)

#----------------------------------------------------------------------------
# img: dict(image=[N,C,R,R], image_raw=[N,C,r,r]); image_raw is resized to R and concatenated (2C channels).

@persistence.persistent_class
class DualDiscriminator(torch.nn.Module):
    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality.
        img_resolution,                 # Input resolution.
        img_channels,                   # Number of input color channels (per image; D sees twice as many).
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        channel_base        = 32768,    # Overall multiplier for the number of channels.
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 4,        # Use FP16 for the N highest resolutions.
        conv_clamp          = 256,      # Clamp the output of convolution layers to +-X, None = disable clamping.
        cmap_dim            = None,     # Dimensionality of mapped conditioning label, None = default.
        disc_c_noise        = 0,        # Corrupt camera parameters with X std dev of the noise (0 = disable).
        block_kwargs        = {},       # Arguments for DiscriminatorBlock.
        mapping_kwargs      = {},       # Arguments for MappingNetwork.
        epilogue_kwargs     = {},       # Arguments for DiscriminatorEpilogue.
    ):
        super().__init__()
        img_channels *= 2
        _build_trunk(self, c_dim, img_resolution, img_channels, architecture, channel_base, channel_max,
            num_fp16_res, conv_clamp, cmap_dim, block_kwargs, mapping_kwargs, epilogue_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))
        self.disc_c_noise = disc_c_noise

    def forward(self, img, c, update_emas=False, **block_kwargs):
        _ = update_emas # unused
        image_raw = filtered_resizing(img['image_raw'], size=img['image'].shape[-1], f=self.resample_filter)
        img = torch.cat([img['image'], image_raw], 1)
        cmap = None
        if self.c_dim > 0:
            if self.disc_c_noise > 0:
                # EG3D compat: pose noise is added in place, i.e. to the caller's tensor.
                c += torch.randn_like(c) * c.std(0) * self.disc_c_noise
            cmap = self.mapping(None, c)
        return _run_trunk(self, img, cmap, **block_kwargs)

    def extra_repr(self):
        return f'c_dim={self.c_dim:d}, img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}'

#----------------------------------------------------------------------------
# Plain StyleGAN2 D on img['image'] only (EG3D ablation).

@persistence.persistent_class
class SingleDiscriminator(torch.nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768,
            channel_max=512, num_fp16_res=4, conv_clamp=256, cmap_dim=None,
            sr_upsample_factor=1, # ignored (kept for signature compatibility)
            block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={}):
        super().__init__()
        _build_trunk(self, c_dim, img_resolution, img_channels, architecture, channel_base, channel_max,
            num_fp16_res, conv_clamp, cmap_dim, block_kwargs, mapping_kwargs, epilogue_kwargs)

    def forward(self, img, c, update_emas=False, **block_kwargs):
        _ = update_emas # unused
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return _run_trunk(self, img['image'], cmap, **block_kwargs)

    def extra_repr(self):
        return f'c_dim={self.c_dim:d}, img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}'

#----------------------------------------------------------------------------
# DualDiscriminator whose raw-image branch fades out over the first 500k images (EG3D ablation). Its forward
# decrements `raw_fade` on every call (a deliberate state change, kept from EG3D).

@persistence.persistent_class
class DummyDualDiscriminator(torch.nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768,
            channel_max=512, num_fp16_res=4, conv_clamp=256, cmap_dim=None,
            block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={}):
        super().__init__()
        img_channels *= 2
        _build_trunk(self, c_dim, img_resolution, img_channels, architecture, channel_base, channel_max,
            num_fp16_res, conv_clamp, cmap_dim, block_kwargs, mapping_kwargs, epilogue_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1,3,3,1]))
        self.raw_fade = 1

    def forward(self, img, c, update_emas=False, **block_kwargs):
        _ = update_emas # unused
        self.raw_fade = max(0, self.raw_fade - 1 / (500000 / 32))
        image_raw = filtered_resizing(img['image_raw'], size=img['image'].shape[-1], f=self.resample_filter)
        image_raw = image_raw * self.raw_fade
        img = torch.cat([img['image'], image_raw], 1)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return _run_trunk(self, img, cmap, **block_kwargs)

    def extra_repr(self):
        return f'c_dim={self.c_dim:d}, img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}'

#----------------------------------------------------------------------------
