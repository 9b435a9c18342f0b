"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): a differentiable, per-sample random augmentation pipeline."""

import itertools
import math

import numpy as np
import torch
from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import conv2d_gradfix

#----------------------------------------------------------------------------
# Filters, computed rather than tabulated.

def symlet(n: int) -> np.ndarray:
    """Least-asymmetric Daubechies low-pass filter with `n` vanishing moments (2n taps, sum = sqrt(2)).

    Daubechies construction: |H|^2 = cos^{2n}(w/2) P(sin^2(w/2)); every root y of P gives a reciprocal pair
    of z-roots, one of which goes into H. The symlet is the choice whose phase is closest to linear.
    """
    P = [math.comb(n - 1 + k, k) for k in range(n)]  # ascending powers of y
    yroots = list(np.roots(P[::-1])) if n > 1 else []
    groups, used = [], [False] * len(yroots)  # real roots alone, complex roots with their conjugate
    for i, y in enumerate(yroots):
        if used[i]:
            continue
        used[i] = True
        if abs(y.imag) < 1e-9:
            groups.append([y])
            continue
        j = min((j for j in range(len(yroots)) if not used[j]), key=lambda j: abs(yroots[j] - np.conj(y)))
        used[j] = True
        groups.append([y, yroots[j]])
    w = np.linspace(0.05, np.pi - 0.3, 512)
    best, best_score = None, np.inf
    for choice in itertools.product([0, 1], repeat=len(groups)):
        zs = [-1.0] * n
        for group, c in zip(groups, choice):
            for y in group:
                pair = sorted(np.roots([1, -(2 - 4 * y), 1]), key=abs)  # z + 1/z = 2 - 4y
                zs.append(pair[c])
        h = np.real(np.poly(zs))
        h = h / h.sum() * np.sqrt(2)
        phase = np.unwrap(np.angle(np.exp(-1j * np.outer(w, np.arange(h.size))) @ h))
        resid = phase - np.polyval(np.polyfit(w, phase, 1), w)
        score = float(np.sum(resid ** 2))
        if score < best_score - 1e-9:
            best, best_score = h, score
    return best

def band_filters(num_bands: int = 4) -> np.ndarray:
    """Zero-phase FIR bank [num_bands, taps] splitting [0, pi] at pi/2^k octaves; rows sum to a unit impulse.

    Built a-trous style from the half-band filter h2 = autocorr(sym2)/2: L1 = h2, L_{k+1} = L_k * up_{2^k}(h2);
    bands are L_{K-1} (lowest), L_{k-1} - L_k, ..., delta - L_1 (highest).
    """
    h = symlet(2)
    h2 = np.convolve(h, h[::-1]) / 2
    lows = [np.array([1.0])]
    for k in range(num_bands - 1):
        up = np.zeros((h2.size - 1) * 2 ** k + 1)
        up[::2 ** k] = h2
        lows.append(np.convolve(lows[-1], up))
    taps = lows[-1].size
    pad = lambda f: np.pad(f, (taps - f.size) // 2)
    lows = [pad(f) for f in lows]
    bands = [lows[-1]] + [lows[k - 1] - lows[k] for k in range(num_bands - 1, 0, -1)]
    return np.stack(bands).astype(np.float32)  # low -> high

#----------------------------------------------------------------------------
# Batched homogeneous matrices, [N, D, D].

def _matrix(*rows, device):
    rows = [[torch.as_tensor(x, dtype=torch.float32, device=device) for x in row] for row in rows]
    n = max(x.numel() for row in rows for x in row)
    return torch.stack([torch.stack([x.expand(n) for x in row], dim=-1) for row in rows], dim=-2)

def translate2d(tx, ty, device): return _matrix([1, 0, tx], [0, 1, ty], [0, 0, 1], device=device)
def scale2d(sx, sy, device): return _matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1], device=device)
def rotate2d(t, device): return _matrix([torch.cos(t), -torch.sin(t), 0], [torch.sin(t), torch.cos(t), 0], [0, 0, 1], device=device)
def translate3d(tx, ty, tz, device): return _matrix([1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1], device=device)
def scale3d(sx, sy, sz, device): return _matrix([sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1], device=device)

def rotate3d(v, t, device):
    """Rotation by angle t about the unit axis v (Rodrigues)."""
    vx, vy, vz = v
    c, s = torch.cos(t), torch.sin(t)
    k = 1 - c
    return _matrix([vx * vx * k + c, vx * vy * k - vz * s, vx * vz * k + vy * s, 0],
                   [vy * vx * k + vz * s, vy * vy * k + c, vy * vz * k - vx * s, 0],
                   [vz * vx * k - vy * s, vz * vy * k + vx * s, vz * vz * k + c, 0],
                   [0, 0, 0, 1], device=device)

#----------------------------------------------------------------------------

@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """Each enabled transform is applied to each image independently with probability (strength * p).

    Channel layouts: C=1 (grayscale), C=3k (k RGB images side by side, e.g. EG3D's [image, image_raw]),
    C=3k+1 (RGB images followed by one extra channel such as depth). Geometric transforms and cutout act on
    all channels; colour transforms, image-space filtering and additive noise act on the RGB channels only.
    """
    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,        # Pixel blitting.
        scale=0, rotate=0, aniso=0, xfrac=0,                 # General geometric transforms.
        scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0,  # Colour transforms.
        brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=[1,1,1,1], imgfilter_std=1,     # Image-space filtering.
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,           # Image-space corruptions.
    ):
        super().__init__()
        self.register_buffer('p', torch.ones([]))  # Overall multiplier; adjusted by the ADA heuristic.
        self.xflip, self.rotate90, self.xint, self.xint_max = float(xflip), float(rotate90), float(xint), float(xint_max)
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.scale_std, self.rotate_max, self.aniso_std, self.xfrac_std = float(scale_std), float(rotate_max), float(aniso_std), float(xfrac_std)
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        self.imgfilter, self.imgfilter_bands, self.imgfilter_std = float(imgfilter), [float(b) for b in imgfilter_bands], float(imgfilter_std)
        self.noise, self.cutout, self.noise_std, self.cutout_size = float(noise), float(cutout), float(noise_std), float(cutout_size)
        if len(self.imgfilter_bands) != 4:
            raise ValueError('AugmentPipe: imgfilter_bands must have 4 entries')
        # Orthogonal wavelet for 2x up/down sampling around the geometric warp: up then down is exactly the identity.
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(symlet(6)))
        self.register_buffer('Hz_fbank', torch.as_tensor(band_filters(4)))

    # Random draws; debug_percentile replaces them by a fixed quantile and enables every transform.
    def _uniform(self, shape, dp, device):
        return torch.rand(shape, device=device) if dp is None else torch.full(shape, float(dp), device=device)

    def _normal(self, shape, dp, device):
        if dp is None:
            return torch.randn(shape, device=device)
        return torch.full(shape, float(torch.erfinv(torch.tensor(2 * float(dp) - 1)) * np.sqrt(2)), device=device)

    def _gate(self, x, prob, default, dp):
        if dp is not None:
            return x
        mask = torch.rand([x.shape[0]] + [1] * (x.ndim - 1), device=x.device) < prob
        return torch.where(mask, x, torch.as_tensor(default, dtype=x.dtype, device=x.device))

    def forward(self, images: torch.Tensor, debug_percentile=None) -> torch.Tensor:
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise ValueError('AugmentPipe expects images as a [N, C, H, W] tensor')
        N, C, H, W = images.shape
        dev = images.device
        dp = debug_percentile
        rgb = self._rgb_slices(C)

        # Geometric transforms, composed as an inverse matrix (output pixel -> input pixel, centred pixel units).
        G_inv = None
        def compose(M):
            nonlocal G_inv
            G_inv = M if G_inv is None else G_inv @ M
        if self.xflip > 0:
            i = self._gate(torch.floor(self._uniform([N], dp, dev) * 2).clamp(max=1), self.xflip * self.p, 0, dp)
            compose(scale2d(1 - 2 * i, 1, device=dev))
        if self.rotate90 > 0:
            i = self._gate(torch.floor(self._uniform([N], dp, dev) * 4).clamp(max=3), self.rotate90 * self.p, 0, dp)
            compose(rotate2d(-np.pi / 2 * i, device=dev))
        if self.xint > 0:
            t = self._gate((self._uniform([N, 2], dp, dev) * 2 - 1) * self.xint_max, self.xint * self.p, 0, dp)
            compose(translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H), device=dev))
        if self.scale > 0:
            s = self._gate(torch.exp2(self._normal([N], dp, dev) * self.scale_std), self.scale * self.p, 1, dp)
            compose(scale2d(1 / s, 1 / s, device=dev))
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))  # applied twice: P(any) = rotate * p
        if self.rotate > 0:
            t = self._gate((self._uniform([N], dp, dev) * 2 - 1) * np.pi * self.rotate_max, p_rot, 0, dp)
            compose(rotate2d(-t, device=dev))
        if self.aniso > 0:
            s = self._gate(torch.exp2(self._normal([N], dp, dev) * self.aniso_std), self.aniso * self.p, 1, dp)
            compose(scale2d(1 / s, s, device=dev))
        if self.rotate > 0:
            t = self._gate((self._uniform([N], dp, dev) * 2 - 1) * np.pi * self.rotate_max, p_rot, 0, dp)
            compose(rotate2d(-t, device=dev))
        if self.xfrac > 0:
            t = self._gate(self._normal([N, 2], dp, dev) * self.xfrac_std, self.xfrac * self.p, 0, dp)
            compose(translate2d(-t[:, 0] * W, -t[:, 1] * H, device=dev))
        if G_inv is not None:
            images = self._warp(images, G_inv.expand(N, 3, 3))

        # Colour transforms, composed as a 4x4 matrix acting on (r, g, b, 1).
        Cm = None
        def compose_c(M):
            nonlocal Cm
            Cm = M if Cm is None else M @ Cm
        v = [1 / np.sqrt(3)] * 3  # luma axis
        if self.brightness > 0:
            b = self._gate(self._normal([N], dp, dev) * self.brightness_std, self.brightness * self.p, 0, dp)
            compose_c(translate3d(b, b, b, device=dev))
        if self.contrast > 0:
            c = self._gate(torch.exp2(self._normal([N], dp, dev) * self.contrast_std), self.contrast * self.p, 1, dp)
            compose_c(scale3d(c, c, c, device=dev))
        vv = torch.tensor(v + [0], dtype=torch.float32, device=dev)
        luma_proj = torch.outer(vv, vv)  # projector onto the luma axis
        if self.lumaflip > 0:
            i = self._gate(torch.floor(self._uniform([N], dp, dev) * 2).clamp(max=1), self.lumaflip * self.p, 0, dp)
            compose_c(torch.eye(4, device=dev) - 2 * luma_proj * i[:, None, None])  # Householder reflection
        if self.hue > 0:
            t = self._gate((self._uniform([N], dp, dev) * 2 - 1) * np.pi * self.hue_max, self.hue * self.p, 0, dp)
            compose_c(rotate3d(v, t, device=dev))
        if self.saturation > 0:
            s = self._gate(torch.exp2(self._normal([N], dp, dev) * self.saturation_std), self.saturation * self.p, 1, dp)
            e3 = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev))  # keep the homogeneous row intact
            compose_c(luma_proj + (e3 - luma_proj) * s[:, None, None] + (torch.eye(4, device=dev) - e3))
        if Cm is not None:
            images = self._apply_color(images, Cm.expand(N, 4, 4), rgb)

        if self.imgfilter > 0:
            images = self._imgfilter(images, rgb, dp)
        if self.noise > 0:
            sigma = self._gate(self._normal([N, 1, 1, 1], dp, dev).abs() * self.noise_std, self.noise * self.p, 0, dp)
            noise = torch.randn_like(images) * sigma
            images = images + noise * self._channel_mask(C, rgb, dev)
        if self.cutout > 0:
            size = self._gate(torch.full([N, 1, 1, 1], self.cutout_size, device=dev), self.cutout * self.p, 0, dp)
            center = self._uniform([N, 2, 1, 1], dp, dev)
            cx = ((torch.arange(W, device=dev) + 0.5) / W).reshape(1, 1, 1, W)
            cy = ((torch.arange(H, device=dev) + 0.5) / H).reshape(1, 1, H, 1)
            keep = ((cx - center[:, :1]).abs() >= size / 2) | ((cy - center[:, 1:]).abs() >= size / 2)
            images = images * keep.to(images.dtype)
        return images

    #------------------------------------------------------------------------

    @staticmethod
    def _rgb_slices(C):
        if C == 1:
            return None  # grayscale: colour matrices are reduced to luma
        if C % 3 == 0 or (C % 3 == 1 and C > 1):
            return [slice(3 * k, 3 * k + 3) for k in range(C // 3)]
        raise ValueError(f'AugmentPipe: unsupported channel count {C} (expected 1, 3k or 3k+1)')

    @staticmethod
    def _channel_mask(C, rgb, device):
        mask = torch.zeros([1, C, 1, 1], device=device)
        for sl in (rgb or [slice(0, 1)]):
            mask[:, sl] = 1
        return mask

    def _warp(self, images, G_inv):
        """Resample images at G_inv @ (output pixel), with 2x oversampling and reflect padding of the input."""
        N, C, H, W = images.shape
        dev = images.device
        f = self.Hz_geom
        M = f.numel() // 4 + 1  # filter support in original pixels
        # The symlet is not linear-phase: up/down sampling displaces content by its group delay. Conjugating the warp
        # by that delay keeps mirrors/rotations centred while integer shifts stay exact (they commute with it).
        d = float(((f * torch.arange(f.numel(), device=dev)).sum() / f.sum() - (f.numel() - 1) / 2) / 2)
        G_inv = translate2d(d, d, device=dev) @ G_inv @ translate2d(-d, -d, device=dev)
        # Input margin: where the corners of the margin-extended output land, plus filter support.
        ex, ey = W / 2 + M, H / 2 + M
        corners = torch.tensor([[-ex, -ey, 1], [ex, -ey, 1], [ex, ey, 1], [-ex, ey, 1]], device=dev).T
        src = (G_inv @ corners)[:, :2, :]
        lo = src.amin(dim=(0, 2)).tolist()
        hi = src.amax(dim=(0, 2)).tolist()
        pl = int(np.clip(np.ceil(-lo[0] - W / 2) + M, 0, W - 1)); pr = int(np.clip(np.ceil(hi[0] - W / 2) + M, 0, W - 1))
        pt = int(np.clip(np.ceil(-lo[1] - H / 2) + M, 0, H - 1)); pb = int(np.clip(np.ceil(hi[1] - H / 2) + M, 0, H - 1))
        x = torch.nn.functional.pad(images, [pl, pr, pt, pb], mode='reflect')
        Hp, Wp = H + pt + pb, W + pl + pr
        x = upfirdn2d.upsample2d(x, f, up=2)

        # Output sample positions (2x grid over the extended output), centred original pixel units.
        qx = (torch.arange(2 * (W + 2 * M), device=dev) + 0.5) / 2 - M - W / 2
        qy = (torch.arange(2 * (H + 2 * M), device=dev) + 0.5) / 2 - M - H / 2
        gy, gx = torch.meshgrid(qy, qx, indexing='ij')
        q = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, -1, 3)
        p = q @ G_inv.transpose(1, 2)  # [N, HW, 3]
        grid = torch.stack([(p[..., 0] + W / 2 + pl) / Wp * 2 - 1, (p[..., 1] + H / 2 + pt) / Hp * 2 - 1], dim=-1)
        grid = grid.reshape(N, qy.numel(), qx.numel(), 2)
        x = grid_sample_gradfix.grid_sample(x, grid)
        x = upfirdn2d.downsample2d(x, f, down=2, flip_filter=True)
        return x[:, :, M:M + H, M:M + W]

    @staticmethod
    def _apply_color(images, Cm, rgb):
        N, C, H, W = images.shape
        if rgb is None:  # grayscale: average the colour response over output channels
            Cg = Cm[:, :3, :].mean(dim=1)
            return images * Cg[:, :3].sum(dim=1).reshape(N, 1, 1, 1) + Cg[:, 3].reshape(N, 1, 1, 1)
        parts = []
        for sl in rgb:
            x = images[:, sl].reshape(N, 3, H * W)
            parts.append((Cm[:, :3, :3] @ x + Cm[:, :3, 3:]).reshape(N, 3, H, W))
        if C % 3 == 1:
            parts.append(images[:, -1:])
        return torch.cat(parts, dim=1)

    def _imgfilter(self, images, rgb, dp):
        N, C, H, W = images.shape
        dev = images.device
        # Random per-band gains, renormalised so the expected (1/f-like) image power is preserved.
        expected_power = torch.tensor([10, 1, 1, 1], dtype=torch.float32, device=dev) / 13
        g = torch.ones([N, 4], device=dev)
        for i, band_strength in enumerate(self.imgfilter_bands):
            t_i = self._gate(torch.exp2(self._normal([N], dp, dev) * self.imgfilter_std), self.imgfilter * band_strength * self.p, 1, dp)
            t = torch.ones([N, 4], device=dev)
            t[:, i] = t_i
            t = t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()
            g = g * t
        h = g @ self.Hz_fbank  # [N, taps], symmetric
        taps = h.shape[1]
        chans = [c for sl in (rgb or [slice(0, 1)]) for c in range(C)[sl]]
        x = images[:, chans]
        K = len(chans)
        w = h[:, None, :].expand(N, K, taps).reshape(N * K, 1, 1, taps)
        mode = 'reflect' if taps // 2 < min(H, W) else 'replicate'
        x = torch.nn.functional.pad(x.reshape(1, N * K, H, W), [taps // 2] * 4, mode=mode)
        x = conv2d_gradfix.conv2d(x, w, groups=N * K)
        x = conv2d_gradfix.conv2d(x, w.transpose(2, 3), groups=N * K)
        x = x.reshape(N, K, H, W)
        if K == C:
            return x
        return torch.cat([x, images[:, K:]], dim=1)  # extra (depth) channel is last and untouched

#----------------------------------------------------------------------------
