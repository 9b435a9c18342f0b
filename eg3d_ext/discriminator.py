"""3DGP discriminator: RGB-D patches, patch-parameter embedding with hyper-modulation, projection class
conditioning, and a knowledge-distillation head predicting teacher features (spec 4)."""

from typing import Optional

import numpy as np
import torch
from torch_utils import misc
from torch_utils import persistence
from training.networks_stylegan2 import Conv2dLayer, FullyConnectedLayer, MappingNetwork, MinibatchStdLayer

# Pickle-compat: embedded in network pickles; imports only torch, numpy, torch_utils and EG3D's training names.

#----------------------------------------------------------------------------

@persistence.persistent_class
class ScalarEncoder1d(torch.nn.Module):
    """Patch params [N, coord_dim] in [0,1] -> [N, coord_dim*(2F + const_emb_dim)], scalar-major:
    per scalar [sin(mx w_k) (F), cos(mx w_k) (F), embedding[round(mx)] (const_emb_dim)], w_k = pi 2^k / 1024."""

    def __init__(self, coord_dim: int = 3, x_multiplier: float = 1000, const_emb_dim: int = 256, num_freqs: int = 10):
        super().__init__()
        self.coord_dim, self.x_multiplier, self.const_emb_dim, self.num_freqs = coord_dim, x_multiplier, const_emb_dim, num_freqs
        self.register_buffer('basis', np.pi * 2.0 ** torch.arange(num_freqs, dtype=torch.float32) / 1024)
        self.const_embed = torch.nn.Embedding(int(np.ceil(x_multiplier)) + 1, const_emb_dim) if const_emb_dim > 0 else None

    def get_dim(self) -> int:
        return self.coord_dim * (2 * self.num_freqs + self.const_emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(x, [None, self.coord_dim])
        x = x.to(torch.float32) * self.x_multiplier
        arg = x[:, :, None] * self.basis[None, None] # [N, D, F]
        parts = [arg.sin(), arg.cos()]
        if self.const_embed is not None:
            idx = x.round().long().clamp(0, self.const_embed.num_embeddings - 1)
            parts.append(self.const_embed(idx))
        return torch.cat(parts, dim=2).reshape(x.shape[0], -1)

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """Residual StyleGAN2 D block; conv1's input is hyper-modulated by (1 + tanh(FC(w_patch)))."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int, down: int = 2,
                 first: bool = False, use_fp16: bool = False, conv_clamp: Optional[float] = None,
                 hyper_mod_dim: int = 0, resample_filter=[1, 3, 3, 1]):
        super().__init__()
        self.in_channels, self.tmp_channels, self.first, self.use_fp16 = in_channels, tmp_channels, first, use_fp16
        self.hyper_mod_dim = hyper_mod_dim
        if first:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation='lrelu', conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation='lrelu', conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation='lrelu', down=down,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=down,
                                resample_filter=resample_filter)
        if hyper_mod_dim > 0:
            self.hyper_mod = FullyConnectedLayer(hyper_mod_dim, tmp_channels, bias_init=0)

    def forward(self, x, img, w_patch=None, force_fp32=False):
        dtype = torch.float16 if self.use_fp16 and not force_fp32 and (x if x is not None else img).device.type == 'cuda' else torch.float32
        if self.first:
            x = self.fromrgb(img.to(dtype))
        x = x.to(dtype)
        y = self.skip(x, gain=np.sqrt(0.5))
        x = self.conv0(x)
        if self.hyper_mod_dim > 0:
            m = self.hyper_mod(w_patch.to(torch.float32))
            x = x * (1 + torch.tanh(m)).to(dtype)[:, :, None, None]
        x = self.conv1(x, gain=np.sqrt(0.5))
        return y.add_(x)

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """4x4: minibatch-std -> conv -> flatten -> FC -> projection logit; KD head in parallel on the flat features."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int = 4, mbstd_group_size: int = 4,
                 mbstd_num_channels: int = 1, kd_dim: int = 0):
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution, self.kd_dim = in_channels, cmap_dim, resolution, kd_dim
        self.mbstd = MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation='lrelu')
        flat = in_channels * resolution ** 2
        self.fc = FullyConnectedLayer(flat, in_channels, activation='lrelu')
        self.out = FullyConnectedLayer(in_channels, cmap_dim)
        if kd_dim > 0: # knowledge-distillation head (3DGP): FC 16C -> C lrelu -> FC C -> teacher dim
            self.kd_fc = FullyConnectedLayer(flat, in_channels, activation='lrelu')
            self.kd_out = FullyConnectedLayer(in_channels, kd_dim)

    def forward(self, x, cmap, predict_feat=False):
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(torch.float32)
        x = self.conv(self.mbstd(x)).flatten(1)
        logits = (self.out(self.fc(x)) * cmap).sum(dim=1, keepdim=True) / np.sqrt(self.cmap_dim)
        feats = None
        if predict_feat:
            if self.kd_dim == 0:
                raise ValueError('predict_feat=True but the discriminator has no distillation head (kd_dim=0)')
            feats = self.kd_out(self.kd_fc(x))
        return logits, feats

#----------------------------------------------------------------------------

@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """D(img [N, img_channels+depth_channels, P, P], c [N, c_dim], patch_params [N,3]) -> logits [N,1]
    (or (logits, feats [N, kd_dim]) with predict_feat=True). Blocks follow a nominal img_resolution schedule; the
    first log2(img_resolution/patch_resolution) blocks do not downsample (EpiGRAF)."""

    def __init__(self,
        c_dim:              int,            # Number of classes (0 = unconditional).
        img_resolution:     int,            # Nominal (full image) resolution; sets the channel schedule.
        img_channels:       int = 3,        # RGB channels as reported by the dataset.
        depth_channels:     int = 1,        # Extra depth channel (0 = RGB-only D).
        patch_resolution:   Optional[int] = 64, # Actual input size (None = img_resolution, no patches).
        channel_base:       int = 32768,
        channel_max:        int = 512,
        num_fp16_res:       int = 4,
        conv_clamp:         Optional[float] = 256,
        cmap_dim:           Optional[int] = None,
        mbstd_group_size:   int = 4,
        mbstd_num_channels: int = 1,
        hyper_mod:          bool = True,    # Hyper-modulation by the patch embedding (needs patches).
        kd_dim:             int = 2048,     # Teacher feature size; 0 = no distillation head.
        mapping_kwargs:     dict = {},      # num_layers 2 for both D mapping networks.
        scalar_enc_kwargs:  dict = {},
    ):
        super().__init__()
        patch_resolution = patch_resolution or img_resolution
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.depth_channels, self.patch_resolution, self.hyper_mod, self.kd_dim = depth_channels, patch_resolution, hyper_mod, kd_dim
        self.img_resolution_log2 = int(np.log2(img_resolution))
        num_extra = int(np.log2(img_resolution // patch_resolution))
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        cmap_dim = channels[4] if cmap_dim is None else cmap_dim
        mapping_kwargs = dict(dict(num_layers=2), **mapping_kwargs)
        self.scalar_enc = ScalarEncoder1d(coord_dim=3, **scalar_enc_kwargs)
        emb_dim = self.scalar_enc.get_dim()
        w_hyper_dim = 512
        self.hyper_mod_mapping = MappingNetwork(z_dim=0, c_dim=emb_dim, w_dim=w_hyper_dim, num_ws=None,
            w_avg_beta=None, **mapping_kwargs) if hyper_mod else None
        for i, res in enumerate(self.block_resolutions):
            block = DiscriminatorBlock(channels[res] if i > 0 else 0, channels[res], channels[res // 2],
                img_channels + depth_channels, down=1 if i < num_extra else 2, first=(i == 0),
                use_fp16=(res >= fp16_resolution), conv_clamp=conv_clamp if res >= fp16_resolution else None,
                hyper_mod_dim=w_hyper_dim if hyper_mod else 0)
            setattr(self, f'b{res}', block)
        self.head_mapping = MappingNetwork(z_dim=0, c_dim=c_dim + emb_dim, w_dim=cmap_dim, num_ws=None,
            w_avg_beta=None, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, mbstd_group_size=mbstd_group_size,
            mbstd_num_channels=mbstd_num_channels, kd_dim=kd_dim)

    def forward(self, img, c, patch_params=None, update_emas=False, predict_feat=False, **block_kwargs):
        # EG3D's D interface takes G's output dict (DualDiscriminator reads img['image'], img['image_raw']), and the
        # shared EG3D training loop relies on it: its network summary calls D(G(z, c), c). We accept the same dict
        # (whole image + adapted depth, resized to one patch of scale 1) so the loop stays free of 3DGP cases;
        # the 3DGP loss always passes [N, C, P, P] patch tensors.
        if isinstance(img, dict):
            parts = [img['image']] + ([img['image_depth_adapted']] if self.depth_channels else [])
            img = torch.nn.functional.interpolate(torch.cat(parts, dim=1), size=(self.patch_resolution,) * 2,
                                                  mode='bilinear', align_corners=False, antialias=True)
        N = img.shape[0]
        misc.assert_shape(img, [None, self.img_channels + self.depth_channels, self.patch_resolution, self.patch_resolution])
        if patch_params is None: # whole image = patch of scale 1 at offset 0
            patch_params = torch.tensor([[1.0, 0.0, 0.0]], device=img.device).expand(N, 3)
        misc.assert_shape(patch_params, [N, 3])
        emb = self.scalar_enc(patch_params)
        w_patch = self.hyper_mod_mapping(None, emb) if self.hyper_mod_mapping is not None else None
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f'b{res}')(x, img, w_patch, **block_kwargs)
        cond = torch.cat([c.to(emb.dtype), emb], dim=1) if self.c_dim > 0 else emb
        cmap = self.head_mapping(None, cond)
        logits, feats = self.b4(x, cmap, predict_feat=predict_feat)
        return (logits, feats) if predict_feat else logits

#----------------------------------------------------------------------------
