"""3DGP training loss: non-saturating GAN on RGB-D patches, lazy R1, blur schedule, camera regularizers and
knowledge distillation into the discriminator (spec 3dgp-reference 2.5, 4.5, 5)."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
import dnnlib
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from training.loss import Loss
from eg3d_ext.camera_generator import camera_emd_loss, force_mean_loss, linear_schedule
from eg3d_ext.distillation_head import kd_loss

#----------------------------------------------------------------------------
# Patch-wise training (EpiGRAF, spec 5.6).

def sample_patch_params(batch_size: int, beta: float, min_scale: float, max_scale: float = 1.0, alpha: float = 1.0,
                        group_size: int = 4, device='cpu') -> torch.Tensor:
    """[N, 3] = (scale, offset_x, offset_y): s = min + (max-min) Beta(alpha, beta), o ~ U[0, 1-s]; one draw per
    group of `group_size` CONSECUTIVE samples (3DGP; D's mbstd groups are strided, so they mix geometries)."""
    num_groups = -(-batch_size // group_size)
    # Drawn on the CPU (the same random stream as always), then copied without a sync: a plain host->device copy
    # waits for the GPU, a non-blocking copy from pinned memory does not.
    u = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(beta))).sample([num_groups])
    if torch.device(device).type == 'cuda':
        u = u.pin_memory().to(device, non_blocking=True)
    s = min_scale + (max_scale - min_scale) * u.clamp(0, 1)
    o = torch.rand([num_groups, 2], device=device) * (1 - s[:, None])
    params = torch.cat([s[:, None], o], dim=1)
    return params.repeat_interleave(group_size, dim=0)[:batch_size]

def extract_patches(img: torch.Tensor, patch_params: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear crop of the window [o, o+s] (y offset from the bottom) at resolution^2, same grid as G's rays."""
    lin = torch.linspace(-1, 1, resolution, device=img.device, dtype=img.dtype)
    v, u = torch.meshgrid(-lin, lin, indexing='ij') # v = +1 on the top row
    s, ox, oy = [patch_params[:, i, None, None].to(img.dtype) for i in range(3)]
    gx = (u[None] + 1) * s - 1 + 2 * ox
    gy = -((v[None] + 1) * s - 1 + 2 * oy) # grid_sample: -1 = top row
    return F.grid_sample(img, torch.stack([gx, gy], dim=-1), mode='bilinear', padding_mode='zeros', align_corners=True)

#----------------------------------------------------------------------------
# Blur of every D input (spec 5.4).

def _blur_1d(img: torch.Tensor, taps: torch.Tensor, normalized_border: bool) -> torch.Tensor:
    C, r = img.shape[1], taps.numel() // 2
    kx = taps.to(img.dtype).view(1, 1, 1, -1).repeat(C, 1, 1, 1)
    ky = taps.to(img.dtype).view(1, 1, -1, 1).repeat(C, 1, 1, 1)
    out = F.conv2d(F.conv2d(img, kx, padding=(0, r), groups=C), ky, padding=(r, 0), groups=C)
    if normalized_border: # divide by the filter mass inside the image: no vignetting
        ones = torch.ones_like(img[:1, :1])
        mass = F.conv2d(F.conv2d(ones, kx[:1], padding=(0, r)), ky[:1], padding=(r, 0))
        out = out / mass
    return out

def blur_images(img: torch.Tensor, sigma: float, depth_blur_scale: Optional[float] = None,
                normalized_border: bool = False) -> torch.Tensor:
    """Gaussian-like taps 2^-(x/sigma)^2 on x in [-floor(3 sigma), floor(3 sigma)], normalized, separable, zero padding
    (3DGP; vignettes patches). With depth_blur_scale the 4th channel is blurred again with 2^-(x/scale)^2."""
    size = int(math.floor(3 * sigma)) if sigma > 0 else 0
    if size == 0:
        return img
    x = torch.arange(-size, size + 1, device=img.device, dtype=torch.float32)
    taps = 2 ** (-(x / sigma).square())
    out = _blur_1d(img, taps / taps.sum(), normalized_border)
    if depth_blur_scale and img.shape[1] == 4:
        taps_d = 2 ** (-(x / depth_blur_scale).square())
        out = torch.cat([out[:, :3], _blur_1d(out[:, 3:], taps_d / taps_d.sum(), normalized_border)], dim=1)
    return out

#----------------------------------------------------------------------------

class Loss3DGP(Loss):
    """accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg, depth=None, embedding=None)."""

    def __init__(self, device, G, D, augment_pipe=None,
        r1_gamma:           float = 0.2048,
        style_mixing_prob:  float = 0,      # Kept for EG3D loop compatibility; 3DGP uses 0.
        pl_weight:          float = 0,
        blur_init_sigma:    float = 10,
        blur_fade_kimg:     float = 200,
        depth_blur_scale:   Optional[float] = 30, # Extra depth-only blur of the reference (spec 10.1 #7).
        use_depth:          bool = True,
        learn_camera:       bool = True,
        patch_kwargs:       dict = {},      # resolution, min_scale, max_scale, alpha, beta_start, beta_end, anneal_kimg, group_size.
        kd_weight:          float = 1.0,    # 0 = no distillation.
        kd_anneal_kimg:     float = 100000, # lambda_kd: kd_weight -> 0 over this many kimg.
        kd_loss_type:       str = 'l2',     # 'l2' (Euclidean norm) | 'kl'.
        teacher_kwargs:     Optional[dict] = None, # Online teacher (eg3d_ext.datasets.embeddings.Teacher kwargs); None = dataset embeddings.
        camera_reg_kwargs:  dict = {},      # emd_weights, emd_num_samples, emd_anneal_kimg, force_mean_weight, force_mean_num_samples.
        blur_normalized_border: bool = False, # True = blur without zero-padding vignetting.
        reference_bugs:     bool = False,   # True = first iteration of a run/resume uses t=0 schedules, no NeRF noise.
        **unused_kwargs,                    # EG3D loss options that do not apply (filter_mode, ...).
    ):
        self.device, self.G, self.D, self.augment_pipe = device, G, D, augment_pipe
        self.r1_gamma, self.pl_weight, self.style_mixing_prob = r1_gamma, pl_weight, style_mixing_prob
        self.blur_init_sigma, self.blur_fade_kimg, self.depth_blur_scale = blur_init_sigma, blur_fade_kimg, depth_blur_scale
        self.use_depth, self.learn_camera = use_depth, learn_camera and getattr(G, 'camera_generator', None) is not None
        self.patch = dnnlib.EasyDict(enabled=True, resolution=getattr(G, 'patch_resolution', 64), min_scale=None,
            max_scale=1.0, alpha=1.0, beta_start=0.001, beta_end=0.8, anneal_kimg=10000, group_size=4)
        self.patch.update(patch_kwargs)
        if self.patch.min_scale is None:
            self.patch.min_scale = self.patch.resolution / G.img_resolution
        if kd_loss_type not in ('l2', 'kl'):
            raise ValueError(f"kd_loss_type must be 'l2' or 'kl', got {kd_loss_type!r}")
        if kd_weight > 0 and getattr(D, 'kd_dim', 0) == 0:
            raise ValueError('kd_weight > 0 but the discriminator has no distillation head (D_kwargs.kd_dim = 0)')
        self.kd_weight, self.kd_anneal_kimg, self.kd_loss_type = kd_weight, kd_anneal_kimg, kd_loss_type
        self.teacher_kwargs, self._teacher = teacher_kwargs, None
        self.cam = dnnlib.EasyDict(emd_weights=dict(origin=2.0, radius=0.0, fov=1e-4, look_at=1e-4), emd_num_samples=64,
            emd_anneal_kimg=10000, force_mean_weight=10.0, force_mean_num_samples=256)
        self.cam.update(camera_reg_kwargs)
        self.blur_normalized_border, self.reference_bugs = blur_normalized_border, reference_bugs
        self._first_nimg = None

    # Schedules ---------------------------------------------------------------

    def schedule_kimg(self, cur_nimg: int) -> float:
        if self._first_nimg is None:
            self._first_nimg = cur_nimg
        if self.reference_bugs and cur_nimg == self._first_nimg:
            return 0.0 # 3DGP refreshes schedules only after each step (spec 10.1 #26)
        return cur_nimg / 1e3

    def blur_sigma(self, t: float) -> float:
        if self.blur_fade_kimg <= 0:
            return 0.0
        return max(0.0, 1 - t / self.blur_fade_kimg) * self.blur_init_sigma

    def patch_beta(self, t: float) -> float:
        return linear_schedule(t, self.patch.beta_start, self.patch.beta_end, self.patch.anneal_kimg)

    def kd_lambda(self, t: float) -> float:
        return 0.0 if self.kd_weight <= 0 else linear_schedule(t, self.kd_weight, 0.0, self.kd_anneal_kimg)

    def _update_G_schedules(self, cur_nimg: int, t: float) -> None:
        if self.reference_bugs and cur_nimg == self._first_nimg:
            self.G.nerf_noise_std_value = 0.0 # 3DGP: NeRF noise is 0 until the first progressive_update
            self.G.nerf_noise_std.fill_(0)
        else:
            self.G.progressive_update(t)

    # Building blocks -----------------------------------------------------------

    def _patch_params(self, n: int, t: float) -> Optional[torch.Tensor]:
        if not self.patch.enabled:
            return None
        return sample_patch_params(n, self.patch_beta(t), self.patch.min_scale, self.patch.max_scale,
                                   self.patch.alpha, self.patch.group_size, self.device)

    def run_G(self, z, c, patch_params, update_emas=False):
        out = self.G(z, c, camera_mode='learned' if self.learn_camera else 'prior', patch_params=patch_params,
                     update_emas=update_emas)
        img = out['image']
        if self.use_depth:
            img = torch.cat([img, out['image_depth_adapted']], dim=1)
        return img

    def run_D(self, img, c, patch_params, blur_sigma, predict_feat=False):
        img = blur_images(img, blur_sigma, self.depth_blur_scale if self.use_depth else None, self.blur_normalized_border)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c, patch_params=patch_params, predict_feat=predict_feat)

    def real_patches(self, real_img, depth, patch_params):
        if self.use_depth:
            if depth is None:
                raise ValueError('3DGP loss with use_depth=True needs real depth maps: the dataset returned no "depth" '
                                 '(use eg3d_ext.dataset_rgbd.RGBDDataset with depth PNGs, or pass --use-depth=false)')
            real_img = torch.cat([real_img, depth.to(real_img.dtype)], dim=1)
        if patch_params is None:
            return real_img
        return extract_patches(real_img, patch_params, self.patch.resolution)

    def teacher_features(self, real_img, embedding):
        if embedding is not None:
            return embedding.to(torch.float32)
        if self.teacher_kwargs is None:
            raise ValueError('KD is on (kd_weight > 0) but the dataset provides no "embedding" and no online teacher is '
                             'configured: add embeddings.npy to the dataset, pass --teacher, or set --kd-weight=0')
        if self._teacher is None:
            from eg3d_ext.datasets.embeddings import Teacher
            self._teacher = Teacher(device=self.device, **self.teacher_kwargs)
        return self._teacher(real_img)

    def camera_regularizers(self, t: float) -> Optional[torch.Tensor]:
        """EMD (annealed) + mean forcing on fresh prior samples (spec 2.5); None when both are off."""
        G, cam, total = self.G, self.cam, None
        if not self.learn_camera:
            return None
        def draw(n):
            prior = G.camera_prior.sample(n, device=self.device)
            z = torch.randn([n, G.z_dim], device=self.device)
            c = F.one_hot(torch.randint(G.c_dim, [n], device=self.device), G.c_dim).float() if G.c_dim > 0 else None
            return prior, G.camera_generator(prior, z, c)
        mult = linear_schedule(t, 0.0, 1.0, cam.emd_anneal_kimg)
        if mult > 0 and any(v > 0 for v in cam.emd_weights.values()):
            prior, post = draw(cam.emd_num_samples)
            loss_emd = mult * camera_emd_loss(post, prior, cam.emd_weights)
            training_stats.report('Loss/G/camera_emd', loss_emd)
            total = loss_emd
        if cam.force_mean_weight > 0 and G.camera_generator.adjust['angles']:
            _, post = draw(cam.force_mean_num_samples)
            loss_fm = cam.force_mean_weight * force_mean_loss(post, G.camera_prior.mean_angles())
            training_stats.report('Loss/G/camera_force_mean', loss_fm)
            total = loss_fm if total is None else total + loss_fm
        return total

    # Main entry ------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg, depth=None, embedding=None,
                             **unused_extras):
        assert phase in ['Gmain', 'Greg', 'Gboth', 'Gall', 'Dmain', 'Dreg', 'Dboth']
        if self.r1_gamma == 0:
            phase = {'Dreg': 'none', 'Dboth': 'Dmain'}.get(phase, phase)
        t = self.schedule_kimg(cur_nimg)
        self._update_G_schedules(cur_nimg, t)
        blur_sigma = self.blur_sigma(t)
        training_stats.report('Progress/blur_sigma', blur_sigma)
        loss_Dgen = 0

        # G: non-saturating loss on fake RGB-D patches + camera regularizers.
        if phase in ['Gmain', 'Gboth', 'Gall']:
            with torch.autograd.profiler.record_function('Gmain_forward'):
                pp = self._patch_params(gen_z.shape[0], t)
                logits = self.run_D(self.run_G(gen_z, gen_c, pp), gen_c, pp, blur_sigma)
                training_stats.report('Loss/scores/fake', logits)
                training_stats.report('Loss/signs/fake', logits.sign())
                loss_G = F.softplus(-logits).mean()
                training_stats.report('Loss/G/loss', loss_G)
                loss_cam = self.camera_regularizers(t)
                total = loss_G if loss_cam is None else loss_G + loss_cam
            with torch.autograd.profiler.record_function('Gmain_backward'):
                total.mul(gain).backward()

        # D: fakes.
        if phase in ['Dmain', 'Dboth']:
            with torch.autograd.profiler.record_function('Dgen_forward'):
                pp = self._patch_params(gen_z.shape[0], t)
                with torch.no_grad():
                    fake = self.run_G(gen_z, gen_c, pp, update_emas=True)
                logits = self.run_D(fake, gen_c, pp, blur_sigma)
                training_stats.report('Loss/scores/fake', logits)
                training_stats.report('Loss/signs/fake', logits.sign())
                loss_Dgen = F.softplus(logits).mean()
            with torch.autograd.profiler.record_function('Dgen_backward'):
                loss_Dgen.mul(gain).backward()

        # D: reals (+ KD in Dmain) and R1 (Dreg).
        if phase in ['Dmain', 'Dreg', 'Dboth']:
            name = 'Dreal' if phase == 'Dmain' else 'Dr1' if phase == 'Dreg' else 'Dreal_Dr1'
            with torch.autograd.profiler.record_function(name + '_forward'):
                pp = self._patch_params(real_img.shape[0], t)
                x = self.real_patches(real_img, depth, pp).detach().requires_grad_(phase in ['Dreg', 'Dboth'])
                kd_lambda = self.kd_lambda(t) if phase in ['Dmain', 'Dboth'] else 0.0
                out = self.run_D(x, real_c, pp, blur_sigma, predict_feat=kd_lambda > 0)
                logits, feats = out if kd_lambda > 0 else (out, None)
                training_stats.report('Loss/scores/real', logits)
                training_stats.report('Loss/signs/real', logits.sign())
                loss = logits.new_zeros([])
                if phase in ['Dmain', 'Dboth']:
                    loss_Dreal = F.softplus(-logits).mean()
                    training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
                    loss = loss + loss_Dreal
                if feats is not None:
                    target = self.teacher_features(real_img, embedding)
                    if target.shape != feats.shape:
                        raise ValueError(f'Teacher features {list(target.shape)} do not match the KD head output '
                                         f'{list(feats.shape)}; set D_kwargs.kd_dim to the embedding size')
                    scales = pp[:, 0] if pp is not None else torch.ones_like(feats[:, 0])
                    loss_kd = kd_lambda * kd_loss(feats, target, scales, self.kd_loss_type)
                    training_stats.report('Loss/D/kd', loss_kd)
                    training_stats.report('Loss/D/kd_weight', kd_lambda)
                    loss = loss + loss_kd
                if phase in ['Dreg', 'Dboth']:
                    with torch.autograd.profiler.record_function('r1_grads'), conv2d_gradfix.no_weight_gradients():
                        grads = torch.autograd.grad(outputs=[logits.sum()], inputs=[x], create_graph=True, only_inputs=True)[0]
                    r1_penalty = grads.square().sum(dim=[1, 2, 3])
                    loss_r1 = r1_penalty * (self.r1_gamma / 2)
                    training_stats.report('Loss/r1_penalty', r1_penalty)
                    training_stats.report('Loss/D/reg', loss_r1)
                    loss = loss + loss_r1.mean()
            with torch.autograd.profiler.record_function(name + '_backward'):
                loss.mul(gain).backward()

#----------------------------------------------------------------------------
