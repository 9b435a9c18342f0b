"""Our generator interface around 3DGP / EpiGRAF generators restored from their pickles.

A restored 3DGP G runs its own embedded code and is called as `G(z, c, camera_params=TensorGroup(angles, fov, radius,
look_at))`, returning an image tensor (or a TensorGroup with depth); EpiGRAF's as `G(z, c, camera_angles [B,3])` with
radius and fov from its config, returning the image or, on request, the depth (eg3d-compatibility.md a.7). This
repo's tools (gen_utils: gen_samples, gen_videos, calc_metrics, the viewer) drive eg3d_ext.generator.Generator's
interface instead. LegacyGenerator translates between the two and never re-renders itself, so images and depth are
exactly those of the reference code. Converting the weights into our Generator would not give that: the renderers
draw their random ray samples differently, and EpiGRAF's generator has no counterpart.

Cameras: our interface passes EG3D c25 cameras [N,25]; they become 3DGP camera params with the look-at point on the
optical axis (the point nearest the world origin), which gives the same cam2world for roll-free cameras (3DGP has
no roll). Raw params [N,8] use 3DGP's order (yaw, pitch, roll, fov, radius, la_yaw, la_pitch, la_radius).
"""

import inspect
import math
from typing import Any, Dict, Optional, Tuple

import torch

from eg3d_ext import camera
from .dnnlib import TensorGroup
from .rendering_utils import sample_camera_params

#----------------------------------------------------------------------------
# Camera conversions.

def params_to_group(params: torch.Tensor) -> TensorGroup:
    """Raw params [N,8] -> 3DGP camera TensorGroup (angles [N,3], fov [N], radius [N], look_at [N,3])."""
    return TensorGroup(angles=params[:, 0:3], fov=params[:, 3], radius=params[:, 4], look_at=params[:, 5:8])

def group_to_params(cp: Dict[str, torch.Tensor]) -> torch.Tensor:
    """3DGP camera TensorGroup -> raw params [N,8] (3DGP's unroll_camera_params)."""
    return torch.cat([cp['angles'], cp['fov'][:, None], cp['radius'][:, None], cp['look_at']], dim=1)

def c25_to_group(c25: torch.Tensor) -> TensorGroup:
    """EG3D c25 [N,25] -> 3DGP camera params with the same cam2world and fov (roll-free cameras)."""
    c2w = c25[:, :16].reshape(-1, 4, 4)
    origin, forward = c2w[:, :3, 3], torch.nn.functional.normalize(c2w[:, :3, 2], dim=-1) # OpenCV: +z looks forward
    look_at = origin - (origin * forward).sum(dim=-1, keepdim=True) * forward
    return params_to_group(camera.c25_to_params(c25, look_at_point=look_at))

def _as_group(cam: Any) -> TensorGroup:
    """c25 [N,25], raw params [N,8] or a 3DGP camera dict -> 3DGP camera TensorGroup."""
    if isinstance(cam, dict):
        return cam if isinstance(cam, TensorGroup) else TensorGroup(cam)
    if cam.shape[-1] == 25:
        return c25_to_group(cam.to(torch.float32))
    if cam.shape[-1] == 8:
        return params_to_group(cam)
    raise ValueError(f'camera must be c25 [N,25], raw params [N,8] or 3DGP camera params, got shape {list(cam.shape)}')

def _mean(spec: Any) -> float:
    """Centre of a 3DGP prior scalar spec (normal: mean; uniform/truncnorm: interval midpoint)."""
    return float(spec['mean']) if spec.get('dist', 'uniform') == 'normal' else (float(spec['min']) + float(spec['max'])) / 2

#----------------------------------------------------------------------------
# Camera priors with eg3d_ext.camera.CameraPrior's sample() / to_c25() interface.

class ConfigPrior:
    """3DGP's prior from its camera config (configs/camera/*.yaml layout), sampled by 3DGP's sample_camera_params."""
    def __init__(self, cfg: Any):
        self.cfg = cfg
    def sample(self, batch_size: int, device: Any = None) -> torch.Tensor:
        """[N, 9] camera params drawn from the pickle's camera config (3DGP's own sampler)."""
        return group_to_params(sample_camera_params(self.cfg, batch_size, device or 'cpu'))
    def to_c25(self, params: torch.Tensor) -> torch.Tensor:
        """Camera params -> EG3D's 25-d labels."""
        return camera.params_to_c25(params)

class EpigrafPrior(ConfigPrior):
    """EpiGRAF's orbit prior (cfg.dataset.sampling: dist uniform|normal over yaw/pitch, fixed fov and radius, looking
    at the origin). EpiGRAF's yaw is 3DGP's plus pi/2 (yaw pi/2 looks from +z)."""
    def sample(self, batch_size: int, device: Any = None) -> torch.Tensor:
        s = self.cfg
        if s['dist'] == 'uniform':
            draw = lambda: (torch.rand(batch_size, device=device) - 0.5) * 2
        elif s['dist'] in ('normal', 'gaussian'):
            draw = lambda: torch.randn(batch_size, device=device)
        else:
            raise ValueError(f"EpiGRAF camera distribution {s['dist']!r} is not supported here (uniform, normal)")
        yaw = draw() * s['horizontal_stddev'] + s['horizontal_mean'] - math.pi / 2
        pitch = (draw() * s['vertical_stddev'] + s['vertical_mean']).clamp(1e-5, math.pi - 1e-5)
        params = torch.zeros(batch_size, 8, device=device)
        params[:, 0], params[:, 1], params[:, 3], params[:, 4] = yaw, pitch, float(s['fov']), float(s['radius'])
        return params

#----------------------------------------------------------------------------

def _params(fn: Any) -> list:
    return list(inspect.signature(fn).parameters)

def is_reference_generator(G: Any) -> bool:
    """A restored 3DGP or EpiGRAF generator (mapping + synthesis taking camera_params / camera_angles)?"""
    synthesis = getattr(G, 'synthesis', None)
    if not isinstance(G, torch.nn.Module) or getattr(G, 'mapping', None) is None or synthesis is None:
        return False
    if hasattr(G, 'learns_camera') or hasattr(G, 'rendering_kwargs'): # already speaks our interface
        return False
    names = _params(synthesis.forward)
    return 'camera_params' in names or 'camera_angles' in names

class LegacyGenerator(torch.nn.Module):
    """eg3d_ext.generator.Generator's interface for a restored 3DGP / EpiGRAF generator `G` (kept as `self.G`).

    mapping(z, c) -> ws; synthesis(ws, camera) -> dict(image, image_raw, image_depth[, image_depth_adapted]) with
    camera = c25, raw params [N,8] or 3DGP camera params; forward(z, c, camera_params=None) samples the camera
    (prior -> 3DGP's camera generator for camera_mode='learned') and also returns it as c25 'camera_params'.
    """
    learns_camera = True # samples its own cameras (gen_utils: c is the class label, not a camera)

    def __init__(self, G: torch.nn.Module):
        super().__init__()
        if not is_reference_generator(G):
            raise ValueError(f'{type(G).__name__} is not a 3DGP or EpiGRAF generator')
        self.G = G
        self.is_epigraf = 'camera_angles' in _params(G.synthesis.forward)
        self.z_dim, self.c_dim, self.w_dim = int(G.z_dim), int(G.c_dim), int(G.w_dim)
        self.img_resolution, self.img_channels, self.num_ws = int(G.img_resolution), int(G.img_channels), int(G.num_ws)
        self.neural_rendering_resolution = int(G.synthesis.test_resolution)
        if self.is_epigraf:
            s = G.cfg.dataset.sampling
            self.camera_prior = EpigrafPrior(s)
            near, far, cube, radius, fov = s.ray_start, s.ray_end, G.cfg.dataset.cube_scale, s.radius, s.fov
            self.rendering_kwargs = {}
        else:
            cam = G.cfg.camera
            self.camera_prior = ConfigPrior(cam)
            near, far, cube, radius, fov = cam.ray.start, cam.ray.end, cam.cube_scale, _mean(cam.origin.radius), _mean(cam.fov)
            self.rendering_kwargs = dict(cut_quantile=0.0) # 3DGP's NFS density cut (metrics set it on a copy)
        self.rendering_kwargs.update(ray_start=float(near), ray_end=float(far), cube_scale=float(cube),
            box_warp=2 * float(cube), image_resolution=self.img_resolution, avg_camera_radius=float(radius),
            avg_camera_pivot=[0.0, 0.0, 0.0], avg_camera_fov=float(fov))

    @property
    def depth_adaptor(self) -> Optional[torch.nn.Module]:
        """The pickle's depth adaptor, or None (EpiGRAF)."""
        return getattr(self.G.synthesis, 'depth_adaptor', None)

    def mapping(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        """z, c (None: zeros) -> ws through the pickle's mapping network."""
        if c is None:
            c = torch.zeros([z.shape[0], self.c_dim], device=z.device)
        return self.G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                              update_emas=update_emas)

    def sample_cameras(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, camera_mode: str = 'learned',
                       prior: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Prior sample (or the given raw prior [N,8]) -> (raw params [N,8], c25 [N,25]); 'learned' applies 3DGP's
        camera generator (G.synthesis.camera_adaptor) when the model has one."""
        if camera_mode not in ('learned', 'prior'):
            raise ValueError(f"camera_mode must be 'learned' or 'prior', got {camera_mode!r}")
        params = self.camera_prior.sample(z.shape[0], device=z.device) if prior is None else prior
        adaptor = getattr(self.G.synthesis, 'camera_adaptor', None)
        if camera_mode == 'learned' and adaptor is not None:
            if c is None:
                c = torch.zeros([z.shape[0], self.c_dim], device=z.device)
            params = group_to_params(adaptor(params_to_group(params), z, c))
        return params, camera.params_to_c25(params)

    def synthesis(self, ws: torch.Tensor, c: Any, neural_rendering_resolution: Optional[int] = None,
                  update_emas: bool = False, cache_backbone: bool = False, use_cached_backbone: bool = False,
                  **block_kwargs) -> Dict[str, torch.Tensor]:
        """Render ws from cameras `c`. The backbone cache flags are accepted and ignored (always rendered afresh)."""
        cam = _as_group(c)
        syn, res = self.G.synthesis, neural_rendering_resolution or self.neural_rendering_resolution
        old_res, syn.test_resolution = syn.test_resolution, res # 3DGP renders test_resolution in eval mode
        try:
            if self.is_epigraf:
                return self._synthesis_epigraf(ws, cam, update_emas=update_emas, **block_kwargs)
            opts = dict(return_depth=True, return_depth_adapted=self.depth_adaptor is not None,
                        cut_quantile=float(self.rendering_kwargs.get('cut_quantile', 0.0)))
            out = syn(ws, camera_params=cam, render_opts=opts, update_emas=update_emas, **block_kwargs)
        finally:
            syn.test_resolution = old_res
        result = dict(image=out['img'], image_raw=out['img'], image_depth=out['depth'])
        if 'depth_adapted' in out:
            result['image_depth_adapted'] = out['depth_adapted']
        return result

    def _synthesis_epigraf(self, ws: torch.Tensor, cam: TensorGroup, **kwargs) -> Dict[str, torch.Tensor]:
        """EpiGRAF renders either the image or the depth: two passes from the same random state share their ray
        samples and noise, so the depth belongs to the image."""
        s = self.G.cfg.dataset.sampling
        if not torch.allclose(cam['radius'], torch.full_like(cam['radius'], float(s.radius)), atol=1e-4) or \
                not torch.allclose(cam['look_at'][:, 2], torch.zeros_like(cam['look_at'][:, 2]), atol=1e-4):
            raise ValueError(f'EpiGRAF renders only cameras at radius {s.radius} looking at the origin')
        angles = cam['angles'].clone()
        angles[:, 0] += math.pi / 2 # 3DGP yaw -> EpiGRAF yaw
        kwargs = dict(kwargs, camera_angles=angles, fov=cam['fov'])
        devices = [ws.device] if ws.device.type == 'cuda' else []
        with torch.random.fork_rng(devices=devices):
            image = self.G.synthesis(ws, **dict(kwargs, camera_angles=angles.clone()))
        depth = self.G.synthesis(ws, return_depth=True, **kwargs)
        return dict(image=image, image_raw=image, image_depth=depth)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], camera_params: Any = None, camera_mode: str = 'learned',
                truncation_psi: float = 1, truncation_cutoff: Optional[int] = None, update_emas: bool = False,
                **synthesis_kwargs) -> Dict[str, torch.Tensor]:
        """Sampled cameras are drawn before the mapping runs, in the order 3DGP's own scripts use."""
        if camera_params is None:
            params, camera_params = self.sample_cameras(z, c, camera_mode)
            cam = params_to_group(params) # render from the sampled params themselves, not a c25 round trip
        else:
            cam = camera_params
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        out = self.synthesis(ws, cam, update_emas=update_emas, **synthesis_kwargs)
        out['camera_params'] = camera_params
        return out

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor,
                     truncation_psi: float = 1, truncation_cutoff: Optional[int] = None, update_emas: bool = False,
                     **block_kwargs) -> Dict[str, torch.Tensor]:
        """Raw (pre-activation) density at world points [N,M,3] -> {'sigma': [N,M,1]} via the reference's own
        compute_densities (3DGP's extract_geometry path); it gives no colour."""
        return {'sigma': self.G.synthesis.compute_densities(ws, coordinates, **block_kwargs)}

#----------------------------------------------------------------------------

def adapt_generators(data: dict) -> dict:
    """legacy.load_network_pkl hook: wrap restored 3DGP / EpiGRAF generators (G, G_ema) in LegacyGenerator."""
    for key in ('G', 'G_ema'):
        if is_reference_generator(data.get(key)):
            data[key] = LegacyGenerator(data[key])
    return data

#----------------------------------------------------------------------------
