"""3DGP tri-plane generator: StyleGAN2 tri-planes, MLP decoder, classical volume rendering of (patches of) images,
learned camera distribution and depth adaptor; EG3D-compatible forward/mapping/synthesis/sample."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
import dnnlib
from torch_utils import misc
from torch_utils import persistence
from training.networks_stylegan2 import FullyConnectedLayer
from training.networks_stylegan2 import Generator as StyleGAN2Backbone
from training.volumetric_rendering import renderer as eg3d_renderer

# Pickle-compat: embedded in network pickles; imports only torch, numpy, dnnlib, torch_utils and EG3D's training
# names. The camera prior, camera generator and depth adaptor are built by class name (like EG3D's superresolution
# module), so this file never imports eg3d_ext; they are persistent and carry their own source.

#----------------------------------------------------------------------------
# Rays from EG3D c25 cameras, with 3DGP's corner-aligned pixel grid and patch windows (spec 1.7, 2.3).

def rays_from_c25(c25: torch.Tensor, resolution: int, patch_params: Optional[torch.Tensor] = None):
    """c25 [N,25] (OpenCV cam2world + normalized intrinsics) -> origins, unit dirs [N, R*R, 3] (row-major pixels).
    Pixel (i, j) has u = -1 + 2j/(R-1), v = 1 - 2i/(R-1); a patch [scale, offset_x, offset_y] maps them to
    (u+1)s - 1 + 2o (y offset measured from the bottom), i.e. the image window [o, o+s]."""
    misc.assert_shape(c25, [None, 25])
    N, R, dev = c25.shape[0], resolution, c25.device
    lin = torch.linspace(-1, 1, R, device=dev, dtype=c25.dtype)
    v, u = torch.meshgrid(-lin, lin, indexing='ij') # v: top row = +1
    u = u.reshape(1, -1).expand(N, -1)
    v = v.reshape(1, -1).expand(N, -1)
    if patch_params is not None:
        misc.assert_shape(patch_params, [N, 3])
        s, ox, oy = patch_params[:, 0:1], patch_params[:, 1:2], patch_params[:, 2:3]
        u = (u + 1) * s - 1 + 2 * ox
        v = (v + 1) * s - 1 + 2 * oy
    x01, y01 = (u + 1) / 2, (1 - v) / 2 # normalized image coordinates, y down (OpenCV)
    c2w = c25[:, :16].reshape(N, 4, 4)
    K = c25[:, 16:25].reshape(N, 3, 3)
    fx, fy, cx, cy, sk = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None], K[:, 0, 1, None]
    x = (x01 - cx + cy * sk / fy - sk * y01 / fy) / fx
    y = (y01 - cy) / fy
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1) # [N, M, 3]
    dirs = F.normalize(torch.bmm(d_cam, c2w[:, :3, :3].transpose(1, 2)), dim=-1)
    origins = c2w[:, None, :3, 3].expand(-1, dirs.shape[1], -1)
    return origins, dirs

#----------------------------------------------------------------------------
# Classical volume rendering (3DGP ImportanceRenderer + ClassicalRayMarcher, spec 1.4-1.6).

# torch.quantile refuses inputs with more than 2^24 elements; 3DGP sizes its render chunks by this (spec 1.8).
QUANTILE_MAX_NUMEL = 2 ** 24

def quantile(x: torch.Tensor, q: float, max_numel: int = 2 ** 24) -> torch.Tensor:
    """q-quantile of all elements (torch.quantile's linear interpolation), also for tensors past its size limit."""
    flat = x.reshape(-1)
    if flat.numel() <= max_numel:
        return torch.quantile(flat, q)
    pos = q * (flat.numel() - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    v_lo = flat.kthvalue(lo + 1).values
    v_hi = flat.kthvalue(min(lo + 2, flat.numel())).values if frac > 0 else v_lo
    return v_lo + frac * (v_hi - v_lo)

def cut_densities(sigma: torch.Tensor, cut_quantile: float) -> torch.Tensor:
    """3DGP's NFS-only density cut (spec 1.6 step 5): activated densities below the q-quantile of the whole tensor
    are zeroed; q = 0 leaves them unchanged."""
    if not cut_quantile:
        return sigma
    return torch.where(sigma < quantile(sigma.detach(), cut_quantile), torch.zeros_like(sigma), sigma)

def march(rgb: torch.Tensor, sigma: torch.Tensor, t: torch.Tensor, use_inf_depth: bool = True, cut_quantile: float = 0):
    """rgb [..., S, 3], sigma (activated) [..., S], t [..., S] sorted -> rgb [..., 3], depth [...], weights [..., S].
    cut_quantile > 0 zeroes densities below that quantile first (3DGP's marcher does it, so both passes see it)."""
    sigma = cut_densities(sigma, cut_quantile)
    deltas = t[..., 1:] - t[..., :-1]
    last = torch.full_like(deltas[..., :1], 1e10 if use_inf_depth else 1e-3)
    deltas = torch.cat([deltas, last], dim=-1)
    alpha = 1 - torch.exp(-sigma * deltas)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha + 1e-10], dim=-1), dim=-1)[..., :-1]
    w = alpha * trans
    return (w[..., None] * rgb).sum(dim=-2), (w * t).sum(dim=-1), w # depth: not divided by sum(w) (3DGP)

def stratified_samples(shape, num_steps: int, device) -> torch.Tensor:
    """s_i = linspace(0,1,S) jittered uniformly inside [mid_{i-1}, mid_i] (first/last bins half-width)."""
    s = torch.linspace(0, 1, num_steps, device=device)
    mids = (s[1:] + s[:-1]) / 2
    lower = torch.cat([s[:1], mids])
    upper = torch.cat([mids, s[-1:]])
    return lower + (upper - lower) * torch.rand(*shape, num_steps, device=device)

def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Inverse-CDF sampling: bins [..., B] edges, weights [..., B-1] -> samples [..., num_samples]."""
    weights = weights + 1e-5
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    u = torch.rand(*cdf.shape[:-1], num_samples, device=cdf.device).contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_b, cdf_a = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_b, bin_a = bins.gather(-1, below), bins.gather(-1, above)
    denom = cdf_a - cdf_b
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return bin_b + (u - cdf_b) / denom * (bin_a - bin_b)

# 3DGP's planes are (x, y), (x, z), (y, z); EG3D's third plane is (z, x) (see eg3d_renderer.generate_planes).
PLANE_AXES = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                           [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                           [[0, 1, 0], [0, 0, 1], [1, 0, 0]]], dtype=torch.float32)

def planes_for_gathers(planes: torch.Tensor, *points: torch.Tensor) -> Optional[torch.Tensor]:
    """EG3D's channels-last copy of `planes` for gather sampling, or None (grid_sample). Gathers are used where
    EG3D's CPU training fast path applies (CPU, planes need gradients, `eg3d_renderer.fast_cpu_sampling`) and the
    sample `points` are constants. Points that need gradients (3DGP's learned camera) make autograd keep the four
    gathered feature tensors: measured 0.86x grid_sample's speed at 2x its memory, so grid_sample is kept there.
    Trees without the fast path (official EG3D executing a pickled copy of this file) always get None."""
    use = getattr(eg3d_renderer, 'use_cl_sampling', None)
    if use is None or not use(planes) or any(p.requires_grad for p in points):
        return None
    return eg3d_renderer.planes_channels_last(planes)

def sample_tri_planes(planes: torch.Tensor, points: torch.Tensor, cube_scale: float,
                      planes_cl: Optional[torch.Tensor] = None) -> torch.Tensor:
    """planes [N,3,C,H,W] (XY, XZ, YZ), points [N,M,3] -> mean feature [N,M,C]; bilinear, corner-aligned
    (align_corners=True: the cube's faces pass through the edge texels' centres), zeros outside the cube.
    planes_cl = planes_for_gathers(planes): the same values by EG3D's row gathers (CPU training fast path)."""
    N, _, C, H, W = planes.shape
    if planes_cl is not None and H == W:
        # EG3D's sampler maps [-1, 1] as align_corners=False: g -> ((g+1)W - 1)/2 texels. Shrinking the points by
        # (W-1)/W turns that into 3DGP's g -> (g+1)(W-1)/2; the tolerance is float rounding of the rescale.
        box_warp = 2 * cube_scale * W / (W - 1)
        feats = eg3d_renderer.sample_from_planes_cl(PLANE_AXES.to(points.device), planes_cl, planes.shape,
                                                    points, box_warp) # [N, 3, M, C]
        return feats.mean(dim=1)
    q = points / cube_scale
    grid = torch.stack([q[..., [0, 1]], q[..., [0, 2]], q[..., [1, 2]]], dim=1) # [N, 3, M, 2]
    feats = F.grid_sample(planes.reshape(N * 3, C, H, W), grid.reshape(N * 3, 1, -1, 2).to(planes.dtype),
                          mode='bilinear', padding_mode='zeros', align_corners=True) # [N*3, C, 1, M]
    return feats.reshape(N, 3, C, -1).mean(dim=1).permute(0, 2, 1)

@persistence.persistent_class
class TriPlaneMLP(torch.nn.Module):
    """Shared (unmodulated) decoder: FC feat->hid lrelu, ..., FC hid->4 linear = raw RGB (no sigmoid) + raw density."""

    def __init__(self, in_channels: int = 32, hid_dim: int = 64, num_layers: int = 2, out_channels: int = 4):
        super().__init__()
        if num_layers < 1:
            raise ValueError('TriPlaneMLP: num_layers must be >= 1 (3DGP n_layers=0 crashes; spec 1.4)')
        dims = [in_channels] + [hid_dim] * (num_layers - 1) + [out_channels]
        self.in_channels, self.out_channels = in_channels, out_channels
        self.layers = torch.nn.ModuleList([FullyConnectedLayer(dims[i], dims[i + 1],
            activation='lrelu' if i < num_layers - 1 else 'linear') for i in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        for layer in self.layers:
            x = layer(x)
        return x.reshape(*shape[:-1], self.out_channels)

#----------------------------------------------------------------------------

@persistence.persistent_class
class Generator(torch.nn.Module):
    """3DGP generator. `c` is the class one-hot; the camera is sampled (prior -> camera generator) unless given as
    EG3D c25 `camera_params`. Outputs dict(image, image_raw, image_depth, image_depth_adapted, camera_params)."""
    learns_camera = True

    def __init__(self,
        z_dim:                  int,            # Latent size.
        c_dim:                  int,            # Number of classes (0 = unconditional), up to 1000 for ImageNet.
        w_dim:                  int,            # Intermediate latent size.
        img_resolution:         int,            # Full render resolution (eval).
        img_channels:           int = 3,
        patch_resolution:       int = 64,       # Training renders patches of this size (EpiGRAF).
        tri_plane_resolution:   int = 512,
        tri_plane_channels:     int = 32,
        mlp_kwargs:             dict = {},      # TriPlaneMLP: hid_dim 64, num_layers 2.
        rendering_kwargs:       dict = {},      # Overrides: ray_start, ray_end, cube_scale, depth_resolution, ...
        nerf_noise_kwargs:      dict = {},      # std_init 1.0 -> 0 over kimg 5000 (train mode only).
        camera_prior_kwargs:    dict = {},      # eg3d_ext.camera.CameraPrior kwargs.
        camera_generator_kwargs: Optional[dict] = {}, # None = no camera learning.
        depth_adaptor_kwargs:   Optional[dict] = {},  # None = no depth adaptor.
        mapping_kwargs:         dict = {},
        **synthesis_kwargs,                     # StyleGAN2 synthesis: channel_base, channel_max, num_fp16_res, ...
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.patch_resolution, self.tri_plane_channels = patch_resolution, tri_plane_channels
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=tri_plane_resolution,
            img_channels=3 * tri_plane_channels, mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        self.num_ws = self.backbone.num_ws
        self.decoder = TriPlaneMLP(tri_plane_channels, **mlp_kwargs)
        prior_kwargs = dict(class_name='eg3d_ext.camera.CameraPrior', **camera_prior_kwargs)
        self.camera_prior = dnnlib.util.construct_class_by_name(**prior_kwargs)
        self.rendering_kwargs = dict(ray_start=self.camera_prior.ray_start, ray_end=self.camera_prior.ray_end,
            cube_scale=self.camera_prior.cube_scale, depth_resolution=32, depth_resolution_importance=32,
            use_inf_depth=True, max_batch_res=128, clamp_mode='softplus', image_resolution=img_resolution, cut_quantile=0,
            avg_camera_radius=1.0, avg_camera_pivot=[0, 0, 0])
        self.rendering_kwargs.update(rendering_kwargs)
        self.rendering_kwargs['box_warp'] = 2 * self.rendering_kwargs['cube_scale'] # EG3D name, for shape tools
        self.neural_rendering_resolution = img_resolution
        self.nerf_noise_kwargs = dict(dict(std_init=1.0, kimg=5000), **nerf_noise_kwargs)
        self.register_buffer('nerf_noise_std', torch.zeros([])) # set by progressive_update(); saved for exact resume
        self.nerf_noise_std_value = 0.0 # host copy of the buffer, so that forward never waits for the GPU
        self.camera_generator = None
        if camera_generator_kwargs is not None:
            cg_kwargs = dict(class_name='eg3d_ext.camera_generator.CameraGenerator', **camera_generator_kwargs)
            self.camera_generator = dnnlib.util.construct_class_by_name(z_dim=z_dim, c_dim=c_dim,
                bounds=self.camera_prior.bounds(), **cg_kwargs)
        self.depth_adaptor = None
        if depth_adaptor_kwargs is not None:
            da_kwargs = dict(class_name='eg3d_ext.depth_adaptor.DepthAdaptor', **depth_adaptor_kwargs)
            self.depth_adaptor = dnnlib.util.construct_class_by_name(near=self.rendering_kwargs['ray_start'],
                far=self.rendering_kwargs['ray_end'], **da_kwargs)

    def progressive_update(self, cur_kimg: float) -> None:
        """Advance G-side schedules (NeRF density noise, depth-adaptor selection); called by the loss, not forward."""
        k = self.nerf_noise_kwargs
        frac = 1.0 if k['kimg'] <= 0 else min(max(cur_kimg / k['kimg'], 0.0), 1.0)
        self.nerf_noise_std_value = k['std_init'] * (1 - frac)
        self.nerf_noise_std.fill_(self.nerf_noise_std_value)
        if self.depth_adaptor is not None:
            self.depth_adaptor.set_progress(cur_kimg)

    def sample_cameras(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, camera_mode: str = 'learned',
                       prior: Optional[torch.Tensor] = None):
        """Prior sample (or the given [N,8] prior) -> (raw params [N,8], c25 [N,25]); 'learned' applies the
        camera generator (posterior), 'prior' keeps the prior."""
        if camera_mode not in ('learned', 'prior'):
            raise ValueError(f"camera_mode must be 'learned' or 'prior', got {camera_mode!r}")
        params = self.camera_prior.sample(z.shape[0], device=z.device) if prior is None else prior
        if camera_mode == 'learned' and self.camera_generator is not None:
            params = self.camera_generator(params, z, c if self.c_dim > 0 else None)
        return params, self.camera_prior.to_c25(params)

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        if c is None:
            c = torch.zeros([z.shape[0], self.c_dim], device=z.device)
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                     update_emas=update_emas)

    def _run_model(self, planes, points, planes_cl=None):
        """Decoder at points [N,M,3] -> raw rgb [N,M,3], raw density [N,M] (chunked in eval mode, spec 1.8).
        planes_cl: optional `planes_for_gathers(planes)`."""
        rk = self.rendering_kwargs
        chunk = points.shape[1] if self.training else max(rk['depth_resolution'] * rk['max_batch_res'] ** 2, 1)
        outs = [self.decoder(sample_tri_planes(planes, points[:, i:i + chunk], rk['cube_scale'], planes_cl))
                for i in range(0, points.shape[1], chunk)]
        out = torch.cat(outs, dim=1)
        return out[..., :3], out[..., 3]

    def _density(self, raw_sigma):
        if self.training and self.nerf_noise_std_value > 0:
            raw_sigma = raw_sigma + torch.randn_like(raw_sigma) * self.nerf_noise_std_value
        return F.softplus(raw_sigma)

    def render(self, planes, origins, dirs):
        """Coarse stratified + importance samples in normalized s-space, classical compositing (spec 1.6)."""
        rk = self.rendering_kwargs
        near, far, S, S_f = rk['ray_start'], rk['ray_end'], rk['depth_resolution'], rk['depth_resolution_importance']
        N, M, _ = origins.shape
        planes_cl = planes_for_gathers(planes, origins, dirs) # one copy for both passes
        s = stratified_samples([N, M], S, origins.device)
        pts = lambda s_: (origins[:, :, None] + (near + s_ * (far - near))[..., None] * dirs[:, :, None]).reshape(N, -1, 3)
        rgb, raw = self._run_model(planes, pts(s), planes_cl)
        rgb, sigma = rgb.reshape(N, M, S, 3), self._density(raw.reshape(N, M, S))
        if S_f > 0:
            with torch.no_grad(): # weights from s-space depths (3DGP quirk, kept for weight compatibility)
                w = march(rgb, sigma, s, rk['use_inf_depth'], rk.get('cut_quantile', 0))[2]
                s_mid = (s[..., 1:] + s[..., :-1]) / 2
                s_fine = sample_pdf(s_mid, w[..., 1:-1] + 1e-5, S_f).detach()
            rgb_f, raw_f = self._run_model(planes, pts(s_fine), planes_cl)
            s = torch.cat([s, s_fine], dim=-1)
            rgb = torch.cat([rgb, rgb_f.reshape(N, M, S_f, 3)], dim=2)
            sigma = torch.cat([sigma, self._density(raw_f.reshape(N, M, S_f))], dim=-1)
            s, order = s.sort(dim=-1)
            rgb = rgb.gather(2, order[..., None].expand(-1, -1, -1, 3))
            sigma = sigma.gather(-1, order)
        out_rgb, depth, _ = march(rgb, sigma, near + s * (far - near), rk['use_inf_depth'], rk.get('cut_quantile', 0))
        return out_rgb, depth

    def render_chunked(self, planes, origins, dirs, res: int):
        """Eval-mode ray chunking (spec 1.8): above max_batch_res, with cut_quantile > 0, rays go in chunks of
        2^24 // (N * depth_resolution * 3) so that the quantile (taken per chunk, as in 3DGP) stays computable."""
        rk = self.rendering_kwargs
        q, N, M = rk.get('cut_quantile', 0), origins.shape[0], origins.shape[1]
        if self.training or not q or res <= rk['max_batch_res']:
            return self.render(planes, origins, dirs)
        chunk = max(QUANTILE_MAX_NUMEL // (N * rk['depth_resolution'] * 3), 1)
        outs = [self.render(planes, origins[:, i:i + chunk], dirs[:, i:i + chunk]) for i in range(0, M, chunk)]
        return torch.cat([o[0] for o in outs], dim=1), torch.cat([o[1] for o in outs], dim=1)

    def synthesis(self, ws, c, patch_params=None, neural_rendering_resolution=None, update_emas=False,
                  cache_backbone=False, use_cached_backbone=False, **synthesis_kwargs):
        """ws [N,num_ws,w_dim], c = camera c25 [N,25]; patch_params [N,3] = (scale, offset_x, offset_y) or None."""
        misc.assert_shape(c, [ws.shape[0], 25])
        if use_cached_backbone and getattr(self, '_last_planes', None) is not None:
            planes = self._last_planes
        else:
            planes = self.backbone.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
        if cache_backbone: # EG3D compat: the cache is the one documented state mutation.
            self._last_planes = planes
        planes = planes.view(ws.shape[0], 3, self.tri_plane_channels, planes.shape[-2], planes.shape[-1])
        res = neural_rendering_resolution or (self.patch_resolution if patch_params is not None
                                              else self.neural_rendering_resolution)
        origins, dirs = rays_from_c25(c.to(torch.float32), res, patch_params)
        rgb, depth = self.render_chunked(planes.to(torch.float32), origins, dirs, res)
        N = ws.shape[0]
        image = rgb.permute(0, 2, 1).reshape(N, 3, res, res).contiguous()
        depth = depth.reshape(N, 1, res, res)
        out = dict(image=image, image_raw=image, image_depth=depth)
        if self.depth_adaptor is not None:
            out['image_depth_adapted'] = self.depth_adaptor(depth)[0]
        else: # no adaptor: D sees depth normalized with the fixed ray bounds
            near, far = self.rendering_kwargs['ray_start'], self.rendering_kwargs['ray_end']
            out['image_depth_adapted'] = 2 * (depth - (near + far) / 2) / (far - near)
        return out

    def forward(self, z, c, camera_params=None, camera_mode='learned', truncation_psi=1, truncation_cutoff=None,
                patch_params=None, neural_rendering_resolution=None, update_emas=False, cache_backbone=False,
                use_cached_backbone=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        if camera_params is None:
            camera_params = self.sample_cameras(z, c, camera_mode)[1]
        out = self.synthesis(ws, camera_params, patch_params=patch_params, update_emas=update_emas,
            neural_rendering_resolution=neural_rendering_resolution, cache_backbone=cache_backbone,
            use_cached_backbone=use_cached_backbone, **synthesis_kwargs)
        out['camera_params'] = camera_params
        return out

    def sample_mixed(self, coordinates, directions, ws, truncation_psi=1, truncation_cutoff=None, update_emas=False,
                     **synthesis_kwargs):
        """Raw decoder outputs at world points: {'rgb': [N,M,3], 'sigma': [N,M,1] pre-softplus, no noise}."""
        planes = self.backbone.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
        planes = planes.view(ws.shape[0], 3, self.tri_plane_channels, planes.shape[-2], planes.shape[-1])
        rgb, raw = self._run_model(planes.to(torch.float32), coordinates)
        return {'rgb': rgb, 'sigma': raw[..., None]}

    def sample(self, coordinates, directions, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False,
               **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.sample_mixed(coordinates, directions, ws, update_emas=update_emas, **synthesis_kwargs)

#----------------------------------------------------------------------------
