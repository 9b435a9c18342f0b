"""3DGP camera generator: maps prior camera samples (and z, class) to a learned posterior inside the prior's box."""

from typing import Dict, Optional, Tuple

import torch
from torch_utils import misc
from torch_utils import persistence
from training.networks_stylegan2 import FullyConnectedLayer

# Pickle-compat: embedded in network pickles; imports only torch, numpy, torch_utils and EG3D's training names.
# The raw camera layout is duplicated from eg3d_ext/camera.py on purpose (PARAM_NAMES order).

PARAM_NAMES = ('yaw', 'pitch', 'roll', 'fov', 'radius', 'la_yaw', 'la_pitch', 'la_radius')
_I = {name: i for i, name in enumerate(PARAM_NAMES)}
_NORMALIZED = ('yaw', 'pitch', 'fov', 'la_yaw', 'la_pitch', 'la_radius') # roll and radius are passed raw

def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale `x` to unit mean square along `dim` (StyleGAN mapping-network input normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()

#----------------------------------------------------------------------------

@persistence.persistent_class
class ParamsAdaptor(torch.nn.Module):
    """Small MLP on camera params, optionally conditioned on z and class (spec 2.4)."""

    def __init__(self, in_dim: int, out_dim: int, z_dim: int, c_dim: int, use_z: bool,
                 hid_dim: int = 256, embed_dim: int = 16, lr_multiplier: float = 0.1):
        super().__init__()
        self.in_dim, self.out_dim, self.z_dim, self.c_dim, self.use_z = in_dim, out_dim, z_dim, c_dim, use_z
        fc = lambda i, o, act: FullyConnectedLayer(i, o, activation=act, lr_multiplier=lr_multiplier)
        self.project_params = fc(in_dim, hid_dim, 'softplus')
        cat_dim = hid_dim
        if use_z:
            self.project_z = fc(z_dim, embed_dim, 'softplus')
            cat_dim += embed_dim
        if c_dim > 0:
            self.project_c = fc(c_dim, embed_dim, 'softplus')
            cat_dim += embed_dim
        self.fc0 = fc(cat_dim, hid_dim, 'softplus')
        self.fc1 = fc(hid_dim, out_dim, 'linear')

    def forward(self, params: torch.Tensor, z: Optional[torch.Tensor], c: Optional[torch.Tensor]) -> torch.Tensor:
        misc.assert_shape(params, [None, self.in_dim])
        h = [self.project_params(params)]
        if self.use_z:
            misc.assert_shape(z, [params.shape[0], self.z_dim])
            h.append(normalize_2nd_moment(self.project_z(z)))
        if self.c_dim > 0:
            misc.assert_shape(c, [params.shape[0], self.c_dim])
            h.append(normalize_2nd_moment(self.project_c(c)))
        return self.fc1(self.fc0(torch.cat(h, dim=1)))

#----------------------------------------------------------------------------

@persistence.persistent_class
class CameraGenerator(torch.nn.Module):
    """Prior [N, 8] + z + class -> posterior [N, 8], squashed by sigmoids into the prior's box (spec 2.4).
    Its own learning rate comes from the equalized-lr multiplier of every FC layer (default 0.1)."""

    def __init__(self,
        z_dim:          int,                          # Latent size.
        c_dim:          int,                          # Number of classes (0 = unconditional).
        bounds:         Dict[str, Tuple[float, float]], # Prior box per raw parameter (also the posterior support).
        hid_dim:        int = 256,
        embed_dim:      int = 16,
        lr_multiplier:  float = 0.1,                  # Effective lr = 0.1 x G lr.
        residual:       bool = False,                 # Add the normalized prior to the logits.
        adjust:         Optional[Dict[str, bool]] = None, # Which groups the network may change.
        reference_bugs: bool = False,                 # True = 3DGP: la_radius min from la_pitch min, raw radius.
    ):
        super().__init__()
        missing = [k for k in PARAM_NAMES if k not in bounds]
        if missing:
            raise ValueError(f'CameraGenerator: bounds missing for {missing}')
        self.z_dim, self.c_dim = z_dim, c_dim
        self.bounds = {k: (float(bounds[k][0]), float(bounds[k][1])) for k in PARAM_NAMES}
        self.residual, self.reference_bugs = residual, reference_bugs
        self.adjust = dict(dict(angles=True, radius=False, fov=True, look_at=True), **(adjust or {}))
        kw = dict(z_dim=z_dim, c_dim=c_dim, hid_dim=hid_dim, embed_dim=embed_dim, lr_multiplier=lr_multiplier)
        self.origin_adaptor = ParamsAdaptor(4, 4, use_z=False, **kw)
        self.look_at_adaptor = ParamsAdaptor(8, 4, use_z=True, **kw)

    def normalize(self, params: torch.Tensor) -> torch.Tensor:
        out = params.clone()
        for k in _NORMALIZED:
            lo, hi = self.bounds[k]
            out[:, _I[k]] = (params[:, _I[k]] - lo) / (hi - lo + 1e-8)
        return out

    def denormalize(self, logits: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(logits)
        cols = []
        for k in PARAM_NAMES:
            lo, hi = self.bounds[k]
            i = _I[k]
            if k == 'roll':
                v = torch.zeros_like(s[:, i])
            elif k == 'pitch':
                v = s[:, i] * (hi - lo - 2e-5) + lo + 1e-5
            elif k == 'radius':
                v = logits[:, i] if self.reference_bugs else s[:, i] * (hi - lo) + lo # 3DGP returns the raw logit
            elif k == 'la_radius' and self.reference_bugs:
                x = self.bounds['la_pitch'][0] # 3DGP reads look_at.angles.pitch.min here
                v = s[:, i] * (hi - x) + x
            else:
                v = s[:, i] * (hi - lo) + lo
            cols.append(v)
        return torch.stack(cols, dim=1)

    def forward(self, prior: torch.Tensor, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        misc.assert_shape(prior, [None, len(PARAM_NAMES)])
        n = self.normalize(prior)
        origin_logits = self.origin_adaptor(n[:, [_I['yaw'], _I['pitch'], _I['roll'], _I['radius']]], None, c)
        look_in = torch.cat([origin_logits[:, :3], n[:, [_I['fov']]], origin_logits[:, 3:4],
                             n[:, [_I['la_yaw'], _I['la_pitch'], _I['la_radius']]]], dim=1)
        look_logits = self.look_at_adaptor(look_in, z, c)
        # Logits in raw layout: yaw, pitch, roll, fov, radius, la_yaw, la_pitch, la_radius.
        logits = torch.cat([origin_logits[:, :3], look_logits[:, :1], origin_logits[:, 3:4], look_logits[:, 1:]], dim=1)
        if self.residual:
            logits = logits + n
        post = self.denormalize(logits)
        # Groups the generator must not change keep the prior value (+0*new so every parameter sees a gradient).
        groups = dict(angles=('yaw', 'pitch', 'roll'), radius=('radius',), fov=('fov',), look_at=('la_yaw', 'la_pitch', 'la_radius'))
        cols = []
        for k in PARAM_NAMES:
            group = next(g for g, names in groups.items() if k in names)
            cols.append(post[:, _I[k]] if self.adjust[group] else prior[:, _I[k]] + 0 * post[:, _I[k]])
        return torch.stack(cols, dim=1)

#----------------------------------------------------------------------------
# Regularizers (spec 2.5); plain functions used by the loss.

def sorted_w2(post: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Per-dimension exact 1-D optimal-transport cost with squared-Euclidean ground cost and uniform marginals
    (= POT ot.emd2(ot.dist(b, a))): mean squared difference of sorted samples. [N, K] x [N, K] -> [K]."""
    if post.shape != prior.shape:
        raise ValueError(f'sorted_w2: sample sets must have equal shapes, got {list(post.shape)} and {list(prior.shape)}')
    return (post.sort(dim=0).values - prior.sort(dim=0).values).square().mean(dim=0)

DEFAULT_EMD_WEIGHTS = dict(origin=2.0, radius=0.0, fov=1e-4, look_at=1e-4)

def camera_emd_loss(post: torch.Tensor, prior: torch.Tensor, weights: Optional[Dict[str, float]] = None) -> torch.Tensor:
    """Weighted sum of per-parameter W distances; roll excluded; raw units (rad^2, deg^2, world^2)."""
    w = dict(DEFAULT_EMD_WEIGHTS, **(weights or {}))
    d = sorted_w2(post, prior)
    return (w['origin'] * (d[_I['yaw']] + d[_I['pitch']]) + w['radius'] * d[_I['radius']] + w['fov'] * d[_I['fov']]
            + w['look_at'] * (d[_I['la_yaw']] + d[_I['la_pitch']] + d[_I['la_radius']]))

def force_mean_loss(post: torch.Tensor, mean_angles: torch.Tensor) -> torch.Tensor:
    """|| mean posterior (yaw, pitch, roll) - prior mean + 1e-8 ||_2 (not squared; 3DGP)."""
    return (post[:, :3].mean(dim=0) - mean_angles.to(post.device) + 1e-8).norm(p=2)

def linear_schedule(t: float, start: float, end: float, length: float) -> float:
    """Linear ramp start->end over `length` (length 0 = already at end), clipped afterwards."""
    if length <= 0:
        return float(end)
    return float(start + (end - start) * min(max(t / length, 0.0), 1.0))

#----------------------------------------------------------------------------
