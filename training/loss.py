"""EG3D training objective: non-saturating GAN loss, lazy R1 on the dual (image, image_raw) input, density regularisation."""

import contextlib
import functools
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import upfirdn2d
from training.dual_discriminator import filtered_resizing

#----------------------------------------------------------------------------

AMP_DTYPES = {'bf16': torch.bfloat16}  # --amp choices

def _bf16_to_float32(out: Any) -> Any:
    """Network outputs back in float32, so that the loss arithmetic (softplus, R1, KD) is the plain path's."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype == torch.bfloat16 else out
    if isinstance(out, dict):
        return {k: _bf16_to_float32(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_bf16_to_float32(v) for v in out)
    return out

@contextlib.contextmanager
def _plain_convolutions():
    """conv2d_gradfix off within the block (its forward decides which autograd path the backward takes)."""
    enabled = conv2d_gradfix.enabled
    conv2d_gradfix.enabled = False
    try:
        yield
    finally:
        conv2d_gradfix.enabled = enabled

class FastNetwork:
    """The loss's handle on G or D under --compile/--amp: calling it, or one of `methods` (e.g. G.synthesis), runs
    the torch.compile'd function and/or under bf16 autocast; every other attribute is the plain module's, read and
    written through. It is not a Module: the loop's snapshots, EMA and optimizers see only the plain networks, so no
    compiled wrapper ever reaches a pickle."""

    def __init__(self, module: torch.nn.Module, methods: Sequence[str] = (), use_compile: bool = False,
                 amp: Optional[str] = None, device_type: str = 'cpu'):
        calls = {name: getattr(module, name) for name in methods}
        calls['__call__'] = module
        if use_compile:
            calls = {name: torch.compile(fn) for name, fn in calls.items()}
        object.__setattr__(self, '_module', module)
        object.__setattr__(self, '_calls', calls)
        object.__setattr__(self, '_amp_dtype', AMP_DTYPES[amp] if amp is not None else None)
        object.__setattr__(self, '_device_type', device_type)

    def _run(self, name: str, *args, **kwargs) -> Any:
        if self._amp_dtype is None:
            return self._calls[name](*args, **kwargs)
        # conv2d_gradfix's custom op is not autocast-aware (its backward would meet bf16 gradients and float32 saved
        # tensors); plain convolutions under autocast handle that, and double backward, by themselves.
        with torch.autocast(self._device_type, dtype=self._amp_dtype), _plain_convolutions():
            out = self._calls[name](*args, **kwargs)
        return _bf16_to_float32(out)

    def __call__(self, *args, **kwargs) -> Any:
        return self._run('__call__', *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in self._calls:
            return functools.partial(self._run, name)
        return getattr(self._module, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._module, name, value)

    def __reduce__(self):
        raise TypeError('FastNetwork is a training-time view and is never pickled; pickle the plain module')

class Loss:
    G_methods: Sequence[str] = ()  # G entry points accumulate_gradients calls besides G(...) itself

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg, **extras):  # to be overridden by subclass
        raise NotImplementedError()

    def enable_fast_paths(self, use_compile: bool = False, amp: Optional[str] = None) -> None:
        """Route the loss's G/D forward passes through torch.compile and/or bf16 autocast (--compile, --amp)."""
        if amp is not None and amp not in AMP_DTYPES:
            raise ValueError(f'amp must be one of {sorted(AMP_DTYPES)} or None, got {amp!r}')
        if use_compile or amp is not None:
            device_type = torch.device(self.device).type
            self.G = FastNetwork(self.G, self.G_methods, use_compile, amp, device_type)
            self.D = FastNetwork(self.D, (), use_compile, amp, device_type)

#----------------------------------------------------------------------------

def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian-like blur used for the discriminator fade-in (no-op when sigma < 1/3)."""
    blur_size = np.floor(sigma * 3)
    if blur_size <= 0:
        return img
    f = torch.arange(-blur_size, blur_size + 1, device=img.device).div(sigma).square().neg().exp2()
    return upfirdn2d.filter2d(img, f / f.sum())

def _linear_ramp(cur_nimg: int, fade_kimg: float) -> float:
    """0 -> 1 over fade_kimg thousand images (1 immediately when fade_kimg <= 0)."""
    return min(cur_nimg / (fade_kimg * 1e3), 1) if fade_kimg > 0 else 1

#----------------------------------------------------------------------------

class StyleGAN2Loss(Loss):
    G_methods = ('mapping', 'synthesis', 'sample_mixed')

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0, pl_weight=0, pl_batch_shrink=2,
                 pl_decay=0.01, pl_no_weight_grad=False, blur_init_sigma=0, blur_fade_kimg=0, r1_gamma_init=0,
                 r1_gamma_fade_kimg=0, neural_rendering_resolution_initial=64, neural_rendering_resolution_final=None,
                 neural_rendering_resolution_fade_kimg=0, gpc_reg_fade_kimg=1000, gpc_reg_prob=None,
                 dual_discrimination=False, filter_mode='antialiased'):
        super().__init__()
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        # Path-length regularisation is accepted for signature compatibility; EG3D never applies it.
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_no_weight_grad = pl_no_weight_grad
        self.pl_mean = torch.zeros([], device=device)
        self.blur_init_sigma = blur_init_sigma
        self.blur_fade_kimg = blur_fade_kimg
        self.r1_gamma_init = r1_gamma_init
        self.r1_gamma_fade_kimg = r1_gamma_fade_kimg
        self.neural_rendering_resolution_initial = neural_rendering_resolution_initial
        self.neural_rendering_resolution_final = neural_rendering_resolution_final
        self.neural_rendering_resolution_fade_kimg = neural_rendering_resolution_fade_kimg
        self.gpc_reg_fade_kimg = gpc_reg_fade_kimg
        self.gpc_reg_prob = gpc_reg_prob
        self.dual_discrimination = dual_discrimination
        self.filter_mode = filter_mode
        self.resample_filter = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
        self.blur_raw_target = True
        if gpc_reg_prob is not None and not (0 <= gpc_reg_prob <= 1):
            raise ValueError(f'gpc_reg_prob must be in [0, 1] or None, got {gpc_reg_prob}')

    #------------------------------------------------------------------------
    # Schedules (all functions of cur_nimg only, so every rank agrees).

    def blur_sigma(self, cur_nimg: int) -> float:
        if self.blur_fade_kimg <= 0:
            return 0
        return max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0) * self.blur_init_sigma

    def swapping_prob(self, cur_nimg: int) -> Optional[float]:
        """Probability of conditioning G on another sample's pose; ramps 1 -> gpc_reg_prob. None = no pose conditioning."""
        if self.gpc_reg_prob is None:
            return None
        alpha = _linear_ramp(cur_nimg, self.gpc_reg_fade_kimg)
        return (1 - alpha) * 1 + alpha * self.gpc_reg_prob

    def neural_rendering_resolution(self, cur_nimg: int) -> int:
        if self.neural_rendering_resolution_final is None:
            return self.neural_rendering_resolution_initial
        alpha = _linear_ramp(cur_nimg, self.neural_rendering_resolution_fade_kimg)
        return int(np.rint(self.neural_rendering_resolution_initial * (1 - alpha) + self.neural_rendering_resolution_final * alpha))

    def r1_gamma_at(self, cur_nimg: int) -> float:
        if self.r1_gamma_fade_kimg <= 0:
            return self.r1_gamma
        alpha = _linear_ramp(cur_nimg, self.r1_gamma_fade_kimg)
        return (1 - alpha) * self.r1_gamma_init + alpha * self.r1_gamma

    #------------------------------------------------------------------------

    def _conditioning(self, c: torch.Tensor, swapping_prob: Optional[float], per_sample: bool = True) -> torch.Tensor:
        """Pose fed to the mapping network: zeros without GPC, else c with some rows replaced by a neighbour's."""
        if swapping_prob is None:
            return torch.zeros_like(c)
        c_swapped = torch.roll(c.clone(), 1, 0)
        # EG3D draws one coin per sample in run_G but a single coin for the whole batch in the density regulariser.
        coin = torch.rand((c.shape[0], 1) if per_sample else [], device=c.device)
        return torch.where(coin < swapping_prob, c_swapped, c)

    def _mapping(self, z, c, c_gen_conditioning, update_emas=False):
        ws = self.G.mapping(z, c_gen_conditioning, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            with torch.autograd.profiler.record_function('style_mixing'):
                cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
                cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff, torch.full_like(cutoff, ws.shape[1]))
                # EG3D mixes with a second mapping of the *unswapped* pose. EG3D's ws[:, cutoff:] = ... reads the
                # cutoff on the host; the mask gives the same values and gradients without that sync.
                mixed = torch.arange(ws.shape[1], device=ws.device)[None, :, None] >= cutoff
                ws = torch.where(mixed, self.G.mapping(torch.randn_like(z), c, update_emas=False), ws)
        return ws

    def run_G(self, z, c, swapping_prob, neural_rendering_resolution, update_emas=False):
        ws = self._mapping(z, c, self._conditioning(c, swapping_prob), update_emas=update_emas)
        gen_output = self.G.synthesis(ws, c, neural_rendering_resolution=neural_rendering_resolution, update_emas=update_emas)
        return gen_output, ws

    def run_D(self, img: dict, c, blur_sigma=0, blur_sigma_raw=0, update_emas=False):
        # Note: the dict is updated in place, as in EG3D, so the R1 gradient is taken w.r.t. D's actual (blurred,
        # augmented) input tensors.
        img['image'] = _blur(img['image'], blur_sigma)
        if self.augment_pipe is not None:
            size, size_raw = img['image'].shape[2:], img['image_raw'].shape[2:]
            raw_up = torch.nn.functional.interpolate(img['image_raw'], size=size, mode='bilinear', antialias=True)
            pair = self.augment_pipe(torch.cat([img['image'], raw_up], dim=1))
            nc = img['image'].shape[1]
            img['image'] = pair[:, :nc]
            img['image_raw'] = torch.nn.functional.interpolate(pair[:, nc:], size=size_raw, mode='bilinear', antialias=True)
        return self.D(img, c, update_emas=update_emas)

    #------------------------------------------------------------------------

    def _density_reg(self, gen_z, gen_c, swapping_prob, gain):
        """Tri-plane density regularisers on random points of the [-1, 1]^3 cube (G.rendering_kwargs['reg_type'])."""
        rk = self.G.rendering_kwargs
        reg_type = rk['reg_type']
        ws = self._mapping(gen_z, gen_c, self._conditioning(gen_c, swapping_prob, per_sample=False))

        def sigma_pair(num_points, offset_fn):
            x0 = torch.rand((ws.shape[0], num_points, 3), device=ws.device) * 2 - 1
            x1 = x0 + offset_fn(x0)
            coords = torch.cat([x0, x1], dim=1)
            sigma = self.G.sample_mixed(coords, torch.randn_like(coords), ws, update_emas=False)['sigma']
            return sigma[:, :sigma.shape[1] // 2], sigma[:, sigma.shape[1] // 2:]

        if reg_type == 'l1':
            s0, s1 = sigma_pair(1000, lambda x: torch.randn_like(x) * rk['density_reg_p_dist'])
            loss = torch.nn.functional.l1_loss(s0, s1) * rk['density_reg']
            training_stats.report('Loss/G/density_reg', loss)
            loss.mul(gain).backward()
        elif reg_type in ('monotonic-detach', 'monotonic-fixed'):
            # Density should not decrease when stepping one voxel (of a 256 grid) further along -z ("behind").
            step = torch.zeros([3], device=ws.device)  # filled on the device: torch.tensor(..., device) would sync,
            step[2:].fill_(-(1 / 256) * rk['box_warp']) # and so would item assignment (a host->device copy)
            s0, s1 = sigma_pair(2000, lambda x: step)
            s0_ = s0.detach() if reg_type == 'monotonic-detach' else s0
            monotonic_loss = torch.relu(s0_ - s1).mean() * 10
            monotonic_loss.mul(gain).backward()
            # Followed by the TV term with a fixed one-voxel perturbation scale; ws is re-drawn, as in EG3D.
            ws = self._mapping(gen_z, gen_c, self._conditioning(gen_c, swapping_prob, per_sample=False))
            s0, s1 = sigma_pair(1000, lambda x: torch.randn_like(x) * (1 / 256) * rk['box_warp'])
            loss = torch.nn.functional.l1_loss(s0, s1) * rk['density_reg']
            training_stats.report('Loss/G/density_reg', loss)
            loss.mul(gain).backward()
        # Other reg_type values ('l1-alt', 'total-variation') are accepted and do nothing, as in EG3D.

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg, **extras):
        assert phase in ['Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth']
        # Dataset extras (depth, embeddings, ...) are accepted so any dataset can be used; EG3D's objective ignores them.
        if self.G.rendering_kwargs.get('density_reg', 0) == 0:
            phase = {'Greg': 'none', 'Gboth': 'Gmain'}.get(phase, phase)
        if self.r1_gamma == 0:
            phase = {'Dreg': 'none', 'Dboth': 'Dmain'}.get(phase, phase)
        blur_sigma = self.blur_sigma(cur_nimg)
        r1_gamma = self.r1_gamma_at(cur_nimg)
        swapping_prob = self.swapping_prob(cur_nimg)
        nrr = self.neural_rendering_resolution(cur_nimg)

        # Real images for the dual discriminator: the low-resolution copy is filtered to the render resolution.
        real_img_raw = filtered_resizing(real_img, size=nrr, f=self.resample_filter, filter_mode=self.filter_mode)
        if self.blur_raw_target:
            real_img_raw = _blur(real_img_raw, blur_sigma)
        real_img = {'image': real_img, 'image_raw': real_img_raw}

        # Gmain: maximise logits for generated images.
        if phase in ['Gmain', 'Gboth']:
            with torch.autograd.profiler.record_function('Gmain_forward'):
                gen_img, _gen_ws = self.run_G(gen_z, gen_c, swapping_prob=swapping_prob, neural_rendering_resolution=nrr)
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma)
                training_stats.report('Loss/scores/fake', gen_logits)
                training_stats.report('Loss/signs/fake', gen_logits.sign())
                loss_Gmain = torch.nn.functional.softplus(-gen_logits)
                training_stats.report('Loss/G/loss', loss_Gmain)
            with torch.autograd.profiler.record_function('Gmain_backward'):
                loss_Gmain.mean().mul(gain).backward()

        # Greg: density regularisation.
        if phase in ['Greg', 'Gboth'] and self.G.rendering_kwargs.get('density_reg', 0) > 0:
            with torch.autograd.profiler.record_function('Greg'):
                self._density_reg(gen_z, gen_c, swapping_prob, gain)

        # Dmain: minimise logits for generated images.
        loss_Dgen = 0
        if phase in ['Dmain', 'Dboth']:
            with torch.autograd.profiler.record_function('Dgen_forward'):
                gen_img, _gen_ws = self.run_G(gen_z, gen_c, swapping_prob=swapping_prob, neural_rendering_resolution=nrr, update_emas=True)
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma, update_emas=True)
                training_stats.report('Loss/scores/fake', gen_logits)
                training_stats.report('Loss/signs/fake', gen_logits.sign())
                loss_Dgen = torch.nn.functional.softplus(gen_logits)
            with torch.autograd.profiler.record_function('Dgen_backward'):
                loss_Dgen.mean().mul(gain).backward()

        # Dmain: maximise logits for real images. Dr1: R1 penalty on both D inputs (lazy, every D_reg_interval steps).
        if phase in ['Dmain', 'Dreg', 'Dboth']:
            name = 'Dreal' if phase == 'Dmain' else 'Dr1' if phase == 'Dreg' else 'Dreal_Dr1'
            with torch.autograd.profiler.record_function(name + '_forward'):
                need_grad = phase in ['Dreg', 'Dboth']
                real_img_tmp = {k: v.detach().requires_grad_(need_grad) for k, v in real_img.items()}
                real_logits = self.run_D(real_img_tmp, real_c, blur_sigma=blur_sigma)
                training_stats.report('Loss/scores/real', real_logits)
                training_stats.report('Loss/signs/real', real_logits.sign())

                loss_Dreal = 0
                if phase in ['Dmain', 'Dboth']:
                    loss_Dreal = torch.nn.functional.softplus(-real_logits)
                    training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)

                loss_Dr1 = 0
                if need_grad:
                    inputs = [real_img_tmp['image'], real_img_tmp['image_raw']] if self.dual_discrimination else [real_img_tmp['image']]
                    # D's weight gradients of the R1 graph are never used: skip them in the double backward.
                    with torch.autograd.profiler.record_function('r1_grads'), conv2d_gradfix.no_weight_gradients():
                        r1_grads = torch.autograd.grad(outputs=[real_logits.sum()], inputs=inputs, create_graph=True, only_inputs=True)
                    r1_penalty = sum(g.square().sum([1, 2, 3]) for g in r1_grads)
                    loss_Dr1 = r1_penalty * (r1_gamma / 2)
                    training_stats.report('Loss/r1_penalty', r1_penalty)
                    training_stats.report('Loss/D/reg', loss_Dr1)

            with torch.autograd.profiler.record_function(name + '_backward'):
                (loss_Dreal + loss_Dr1).mean().mul(gain).backward()

#----------------------------------------------------------------------------
