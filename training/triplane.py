"""EG3D tri-plane generator: StyleGAN2 backbone -> tri-planes -> volume rendering -> super-resolution."""

import torch
import dnnlib
from torch_utils import misc
from torch_utils import persistence
from training.networks_stylegan2 import Generator as StyleGAN2Backbone
from training.networks_stylegan2 import FullyConnectedLayer
from training.volumetric_rendering.renderer import ImportanceRenderer
from training.volumetric_rendering.ray_sampler import RaySampler

# Pickles embed and re-execute this source (official EG3D included): import only names EG3D provides.

#----------------------------------------------------------------------------

@persistence.persistent_class
class TriPlaneGenerator(torch.nn.Module):
    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality: 25 = 16 cam2world + 9 intrinsics.
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output (super-resolved) resolution.
        img_channels,               # Number of output color channels.
        sr_num_fp16_res     = 0,    # Number of fp16 layers in the super-resolution module.
        mapping_kwargs      = {},   # Arguments for MappingNetwork.
        rendering_kwargs    = {},   # EG3D rendering options (see spec g.7).
        sr_kwargs           = {},   # Arguments for the super-resolution module.
        **synthesis_kwargs,         # Arguments for SynthesisNetwork.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        # EG3D fixes the layout: a 256^2 backbone emitting 3 planes x 32 channels.
        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=256, img_channels=32*3,
            mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        self.superresolution = dnnlib.util.construct_class_by_name(
            class_name=rendering_kwargs['superresolution_module'], channels=32, img_resolution=img_resolution,
            sr_num_fp16_res=sr_num_fp16_res, sr_antialias=rendering_kwargs['sr_antialias'], **sr_kwargs)
        self.decoder = OSGDecoder(32, {'decoder_lr_mul': rendering_kwargs.get('decoder_lr_mul', 1),
            'decoder_output_dim': 32})
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs
        self._last_planes = None

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        # Only the mapping input is zeroed/scaled (note the default c_scale of 0); rendering uses the raw camera.
        if self.rendering_kwargs['c_gen_conditioning_zero']:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.rendering_kwargs.get('c_scale', 0), truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def _planes(self, ws, update_emas, **synthesis_kwargs):
        planes = self.backbone.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
        return planes.view(len(planes), 3, 32, planes.shape[-2], planes.shape[-1])

    def synthesis(self, ws, c, neural_rendering_resolution=None, update_emas=False, cache_backbone=False,
            use_cached_backbone=False, **synthesis_kwargs):
        misc.assert_shape(c, [None, 25])
        cam2world_matrix = c[:, :16].view(-1, 4, 4)
        intrinsics = c[:, 16:25].view(-1, 3, 3)
        # EG3D compat: a given resolution is remembered (the training loss sets it every call; G_ema inherits it).
        if neural_rendering_resolution is None:
            neural_rendering_resolution = self.neural_rendering_resolution
        else:
            self.neural_rendering_resolution = neural_rendering_resolution
        H = W = neural_rendering_resolution

        ray_origins, ray_directions = self.ray_sampler(cam2world_matrix, intrinsics, neural_rendering_resolution)
        N = ray_origins.shape[0]
        if use_cached_backbone and self._last_planes is not None:
            planes = self._last_planes
        else:
            planes = self._planes(ws, update_emas=update_emas, **synthesis_kwargs)
        if cache_backbone:
            self._last_planes = planes

        feature_samples, depth_samples, _weights = self.renderer(planes, self.decoder, ray_origins, ray_directions,
            self.rendering_kwargs) # [N, H*W, C], row-major pixels
        feature_image = feature_samples.permute(0, 2, 1).reshape(N, feature_samples.shape[-1], H, W).contiguous()
        depth_image = depth_samples.permute(0, 2, 1).reshape(N, 1, H, W)

        # image_raw is a VIEW of feature_image: SR modules that start with SynthesisBlockNoUp at the rendering
        # resolution (2X@64, 4X@128) add their first ToRGB residual to it in place. Official EG3D behaves the same
        # and pickled generators depend on it, so we keep it (spec g.1).
        rgb_image = feature_image[:, :3]
        sr_kwargs = {k: v for k, v in synthesis_kwargs.items() if k != 'noise_mode'}
        sr_image = self.superresolution(rgb_image, feature_image, ws,
            noise_mode=self.rendering_kwargs['superresolution_noise_mode'], **sr_kwargs)
        return {'image': sr_image, 'image_raw': rgb_image, 'image_depth': depth_image}

    def sample(self, coordinates, directions, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False,
            **synthesis_kwargs):
        """Raw decoder output {'rgb', 'sigma'} at arbitrary points [N, M, 3] (shape extraction, density reg)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
            update_emas=update_emas)
        planes = self._planes(ws, update_emas=update_emas, **synthesis_kwargs)
        return self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs)

    def sample_mixed(self, coordinates, directions, ws, truncation_psi=1, truncation_cutoff=None, update_emas=False,
            **synthesis_kwargs):
        """Like sample() but from given ws (the truncation arguments are ignored, as in EG3D)."""
        planes = self._planes(ws, update_emas=update_emas, **synthesis_kwargs)
        return self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, neural_rendering_resolution=None,
            update_emas=False, cache_backbone=False, use_cached_backbone=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
            update_emas=update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, neural_rendering_resolution=neural_rendering_resolution,
            cache_backbone=cache_backbone, use_cached_backbone=use_cached_backbone, **synthesis_kwargs)

#----------------------------------------------------------------------------
# Not persistent: EG3D pickles reference `training.triplane.OSGDecoder` by name and restore it without __init__,
# carrying `hidden_dim` and `net` only; forward() relies on nothing else.

class OSGDecoder(torch.nn.Module):
    def __init__(self, n_features, options):
        super().__init__()
        self.hidden_dim = 64
        self.net = torch.nn.Sequential(
            FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=options['decoder_lr_mul']),
            torch.nn.Softplus(),
            FullyConnectedLayer(self.hidden_dim, 1 + options['decoder_output_dim'],
                lr_multiplier=options['decoder_lr_mul']),
        )

    def forward(self, sampled_features, ray_directions):
        """Mean over the 3 planes [N, 3, M, C] -> {'rgb': [N, M, 32] in [-0.001, 1.001], 'sigma': [N, M, 1] raw}."""
        _ = ray_directions # view-independent
        x = sampled_features.mean(1)
        N, M, C = x.shape
        x = self.net(x.view(N * M, C)).view(N, M, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001 # sigmoid clamping from MipNeRF
        sigma = x[..., 0:1]
        return {'rgb': rgb, 'sigma': sigma}

#----------------------------------------------------------------------------
