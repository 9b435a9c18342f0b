"""Synthetic RGB-D set: procedural 3D objects of 6 classes rendered by a vectorised analytic CPU ray caster.

Scene: one object centred at the world origin (world is y-up), scaled by s ~ U[0.14, 0.20] and rotated about y by
a ~ U[0, 2pi), with a 3D checker texture (object space, so it is multi-view consistent), Lambertian shading under a
random directional light and a background that is a vertical colour gradient at infinity.
Classes (distinct geometry, canonical size ~1 before scaling):
  0 sphere, 1 box, 2 cylinder (y axis), 3 capsule (lying along x), 4 cone (apex up), 5 snowman (two stacked spheres).

Known camera distribution (3DGP parameterisation, spec 2.1; deliberately NOT the 3DGP uniform prior, so that what a
camera generator learns can be compared with the truth). Angles in radians, fov in degrees:
  yaw    ~ TruncNormal(mean 0,          std 0.5,  range [-pi/2, pi/2])   azimuth about +y, 0 = camera on +z
  pitch  ~ TruncNormal(mean pi/2 - 0.2, std 0.15, range [pi/4, 3pi/4])   polar angle from +y (< pi/2 = above)
  radius ~ Uniform[0.9, 1.1]
  fov    ~ TruncNormal(mean 30,         std 3,    range [24, 36])        full field of view (square images)
  look_at = (x, y, z), each coordinate ~ Normal(0, 0.02^2) independently
Camera origin = radius * (sin(pitch) sin(-yaw), cos(pitch), sin(pitch) cos(yaw)), looking at look_at, world up +y.
The EG3D label c (25 floats) = row-major OpenCV cam2world 4x4 + normalised intrinsics [[f,0,.5],[0,f,.5],[0,0,1]],
f = 1 / (2 tan(fov/2)); rays go through pixel centres ((j + 0.5) / W), as in EG3D's ray sampler.
Depth = ray distance t along unit rays (EG3D/3DGP renderer convention), stored as 16-bit PNG with
v = (t - near) / (far - near) * 65535, near = 0.5, far = 1.5; background = far (v = 65535).
Everything is drawn from numpy's default_rng(seed), so a seed gives byte-identical zips.
"""

import multiprocessing
import os
import time
from typing import Dict, List, Tuple

import click
import numpy as np
import scipy.stats

from eg3d_ext.datasets import zip_writer

CLASS_NAMES = ['sphere', 'box', 'cylinder', 'capsule', 'cone', 'snowman']
DEPTH_NEAR, DEPTH_FAR = 0.5, 1.5
CAMERA_DIST = dict(
    yaw=dict(dist='truncnorm', mean=0.0, std=0.5, lo=-np.pi / 2, hi=np.pi / 2),
    pitch=dict(dist='truncnorm', mean=np.pi / 2 - 0.2, std=0.15, lo=np.pi / 4, hi=3 * np.pi / 4),
    radius=dict(dist='uniform', lo=0.9, hi=1.1),
    fov=dict(dist='truncnorm', mean=30.0, std=3.0, lo=24.0, hi=36.0),
    look_at=dict(dist='normal', mean=0.0, std=0.02),
)

#----------------------------------------------------------------------------
# Camera distribution.

def scipy_dist(name: str):
    """The frozen scipy distribution of camera parameter `name` (for sampling and for KS tests)."""
    p = CAMERA_DIST[name]
    if p['dist'] == 'truncnorm':
        return scipy.stats.truncnorm((p['lo'] - p['mean']) / p['std'], (p['hi'] - p['mean']) / p['std'], loc=p['mean'], scale=p['std'])
    if p['dist'] == 'uniform':
        return scipy.stats.uniform(loc=p['lo'], scale=p['hi'] - p['lo'])
    return scipy.stats.norm(loc=p['mean'], scale=p['std'])

def cam2world_opencv(origin: np.ndarray, look_at: np.ndarray) -> np.ndarray:
    """[N,3] origins and targets -> [N,4,4] OpenCV cam2world (x right, y down, z forward), world up +y."""
    fwd = look_at - origin
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    m = np.zeros([len(origin), 4, 4])
    m[:, :3, 0], m[:, :3, 1], m[:, :3, 2], m[:, :3, 3], m[:, 3, 3] = right, down, fwd, origin, 1
    return m

def camera_labels(yaw, pitch, radius, fov, look_at) -> np.ndarray:
    """3DGP camera parameters -> EG3D 25-dim labels [N, 25] (float64)."""
    yaw, pitch, radius, fov = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (yaw, pitch, radius, fov)]
    origin = radius[:, None] * np.stack([np.sin(pitch) * np.sin(-yaw), np.cos(pitch), np.sin(pitch) * np.cos(yaw)], axis=1)
    c2w = cam2world_opencv(origin, np.asarray(look_at, dtype=np.float64).reshape(-1, 3))
    f = 1.0 / (2.0 * np.tan(np.radians(fov) / 2))
    intr = np.zeros([len(f), 3, 3])
    intr[:, 0, 0], intr[:, 1, 1], intr[:, 0, 2], intr[:, 1, 2], intr[:, 2, 2] = f, f, 0.5, 0.5, 1
    return np.concatenate([c2w.reshape(-1, 16), intr.reshape(-1, 9)], axis=1)

def sample_scenes(num: int, seed: int = 0, num_classes: int = len(CLASS_NAMES)) -> Dict[str, np.ndarray]:
    """All per-image random parameters (cameras, object, appearance), drawn up front so a seed fixes the set."""
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f'num_classes must be in [1, {len(CLASS_NAMES)}], got {num_classes}')
    rng = np.random.default_rng(seed)
    s = dict(cls=rng.integers(0, num_classes, size=num))
    for name in ('yaw', 'pitch', 'radius', 'fov'):
        s[name] = scipy_dist(name).rvs(size=num, random_state=rng)
    s['look_at'] = scipy_dist('look_at').rvs(size=[num, 3], random_state=rng)
    s['obj_scale'] = rng.uniform(0.14, 0.20, size=num)
    s['obj_rot'] = rng.uniform(0, 2 * np.pi, size=num)
    s['colors'] = rng.uniform(0.1, 1.0, size=[num, 2, 3])
    s['tex_freq'] = rng.uniform(2.0, 5.0, size=num)
    s['bg'] = rng.uniform(0.0, 0.8, size=[num, 2, 3])
    light = rng.normal(size=[num, 3]) + np.array([0.0, 1.5, 1.0])
    s['light'] = light / np.linalg.norm(light, axis=1, keepdims=True)
    s['c'] = camera_labels(s['yaw'], s['pitch'], s['radius'], s['fov'], s['look_at'])
    return s

#----------------------------------------------------------------------------
# Analytic ray-primitive intersections in object space. o, d: [M,3] (d unit). Return t [M] (inf = miss), n [M,3].

def _dot(a, b):
    return np.einsum('ij,ij->i', a, b)

def _union(*hits):
    t = np.stack([h[0] for h in hits])
    k = np.argmin(t, axis=0)
    n = np.stack([h[1] for h in hits])[k, np.arange(len(k))]
    return t[k, np.arange(len(k))], n

def hit_sphere(o, d, center=(0, 0, 0), r=1.0):
    oc = o - np.asarray(center, dtype=o.dtype)
    b = _dot(oc, d)
    disc = b * b - (_dot(oc, oc) - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0))
    t = np.where((disc >= 0) & (t > 0), t, np.inf)
    return t, (oc + np.nan_to_num(t[:, None], posinf=0) * d) / r

def hit_box(o, d, h=(0.8, 0.8, 0.8)):
    h = np.asarray(h, dtype=o.dtype)
    inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1, t2 = (-h - o) * inv, (h - o) * inv
    tn = np.minimum(t1, t2)
    tmin, tmax = tn.max(axis=1), np.maximum(t1, t2).min(axis=1)
    t = np.where((tmax >= tmin) & (tmin > 0), tmin, np.inf)
    axis = tn.argmax(axis=1)
    n = np.zeros_like(o)
    n[np.arange(len(o)), axis] = -np.sign(d[np.arange(len(o)), axis])
    return t, n

def _hit_quadric_side(a, b, c, valid_fn):
    """Smallest positive root of a t^2 + 2 b t + c = 0 whose point passes valid_fn(t)."""
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0))
    a_safe = np.where(np.abs(a) < 1e-12, 1e-12, a)
    best = np.full(a.shape, np.inf, dtype=a.dtype)
    for t in ((-b - sq) / a_safe, (-b + sq) / a_safe):
        ok = (disc >= 0) & (t > 0) & valid_fn(t) & (t < best)
        best = np.where(ok, t, best)
    return best

def hit_cylinder(o, d, r=0.6, hh=1.0):
    side = _hit_quadric_side(d[:, 0] ** 2 + d[:, 2] ** 2, o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2],
                             o[:, 0] ** 2 + o[:, 2] ** 2 - r * r, lambda t: np.abs(o[:, 1] + t * d[:, 1]) <= hh)
    p = o + np.nan_to_num(side[:, None], posinf=0) * d
    hits = [(side, np.stack([p[:, 0], np.zeros_like(p[:, 0]), p[:, 2]], axis=1) / r)]
    for y in (hh, -hh):
        hits.append(_hit_disc_y(o, d, y, r))
    return _union(*hits)

def _hit_disc_y(o, d, y, r):
    dy = np.where(np.abs(d[:, 1]) < 1e-12, 1e-12, d[:, 1])
    t = (y - o[:, 1]) / dy
    p = o + t[:, None] * d
    t = np.where((t > 0) & (p[:, 0] ** 2 + p[:, 2] ** 2 <= r * r), t, np.inf)
    n = np.zeros_like(o)
    n[:, 1] = np.sign(y) if y != 0 else -1
    return t, n

def hit_capsule(o, d, r=0.5, half_len=0.6):
    side = _hit_quadric_side(d[:, 1] ** 2 + d[:, 2] ** 2, o[:, 1] * d[:, 1] + o[:, 2] * d[:, 2],
                             o[:, 1] ** 2 + o[:, 2] ** 2 - r * r, lambda t: np.abs(o[:, 0] + t * d[:, 0]) <= half_len)
    p = o + np.nan_to_num(side[:, None], posinf=0) * d
    n_side = np.stack([np.zeros_like(p[:, 0]), p[:, 1], p[:, 2]], axis=1) / r
    return _union((side, n_side), hit_sphere(o, d, (-half_len, 0, 0), r), hit_sphere(o, d, (half_len, 0, 0), r))

def hit_cone(o, d, base_r=0.9, y_base=-0.8, y_apex=1.0):
    k2 = (base_r / (y_apex - y_base)) ** 2
    w = y_apex - o[:, 1]
    side = _hit_quadric_side(d[:, 0] ** 2 + d[:, 2] ** 2 - k2 * d[:, 1] ** 2,
                             o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2] + k2 * w * d[:, 1],
                             o[:, 0] ** 2 + o[:, 2] ** 2 - k2 * w * w,
                             lambda t: (o[:, 1] + t * d[:, 1] >= y_base) & (o[:, 1] + t * d[:, 1] <= y_apex))
    p = o + np.nan_to_num(side[:, None], posinf=0) * d
    n = np.stack([p[:, 0], k2 * (y_apex - p[:, 1]), p[:, 2]], axis=1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return _union((side, n), _hit_disc_y(o, d, y_base, base_r))

def hit_snowman(o, d):
    return _union(hit_sphere(o, d, (0, -0.4, 0), 0.65), hit_sphere(o, d, (0, 0.6, 0), 0.45))

PRIMITIVES = [hit_sphere, hit_box, hit_cylinder, hit_capsule, hit_cone, hit_snowman]

#----------------------------------------------------------------------------
# Rendering.

def camera_rays(c: np.ndarray, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """EG3D labels [N,25] -> world ray origins and unit directions [N, R*R, 3] through pixel centres."""
    c2w, intr = c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)
    uv = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution
    v, u = np.meshgrid(uv, uv, indexing='ij')
    x = (u[None] - intr[:, 0, 2, None, None]) / intr[:, 0, 0, None, None]
    y = (v[None] - intr[:, 1, 2, None, None]) / intr[:, 1, 1, None, None]
    cam = np.stack([x, y, np.ones_like(x)], axis=-1).reshape(len(c), -1, 3)
    d = np.einsum('nij,nrj->nri', c2w[:, :3, :3], cam)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return np.broadcast_to(c2w[:, None, :3, 3], d.shape), d

def render(scenes: Dict[str, np.ndarray], idx: np.ndarray, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render scenes[idx] -> (rgb uint8 [N,R,R,3], ray distance float64 [N,R,R], inf = background)."""
    idx = np.asarray(idx)
    n, rr = len(idx), resolution * resolution
    rgb, depth = np.zeros([n, rr, 3]), np.full([n, rr], np.inf)
    o_w, d_w = camera_rays(scenes['c'][idx], resolution)
    for cls in np.unique(scenes['cls'][idx]):
        sel = np.nonzero(scenes['cls'][idx] == cls)[0]
        gi = idx[sel]
        ca, sa = np.cos(scenes['obj_rot'][gi]), np.sin(scenes['obj_rot'][gi])
        rot = np.zeros([len(gi), 3, 3]) # object->world rotation about y
        rot[:, 0, 0], rot[:, 0, 2], rot[:, 1, 1], rot[:, 2, 0], rot[:, 2, 2] = ca, sa, 1, -sa, ca
        scale = scenes['obj_scale'][gi][:, None, None]
        o = np.einsum('nji,nrj->nri', rot, o_w[sel]) / scale # world->object: R^T (x) / s
        d = np.einsum('nji,nrj->nri', rot, d_w[sel])
        t, nrm = PRIMITIVES[cls](o.reshape(-1, 3), d.reshape(-1, 3))
        t, nrm = t.reshape(len(gi), rr), nrm.reshape(len(gi), rr, 3)
        p = o + np.nan_to_num(t, posinf=0)[..., None] * d
        checker = (np.floor(p * scenes['tex_freq'][gi][:, None, None]).sum(-1) % 2)[..., None]
        albedo = np.where(checker > 0, scenes['colors'][gi][:, None, 0], scenes['colors'][gi][:, None, 1])
        n_world = np.einsum('nij,nrj->nri', rot, nrm)
        shade = 0.3 + 0.7 * np.clip(np.einsum('nri,ni->nr', n_world, scenes['light'][gi]), 0, 1)
        rgb[sel] = albedo * shade[..., None]
        depth[sel] = t * scale[:, :, 0] # object units -> world units
    g = np.clip(0.5 + 2.0 * d_w[..., 1:2], 0, 1) # background gradient by world ray elevation
    bg = scenes['bg'][idx][:, None, 0] * (1 - g) + scenes['bg'][idx][:, None, 1] * g
    rgb = np.where(np.isfinite(depth)[..., None], rgb, bg)
    rgb = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8).reshape(n, resolution, resolution, 3)
    return rgb, depth.reshape(n, resolution, resolution)

def depth_to_png16(t: np.ndarray) -> np.ndarray:
    return zip_writer.depth_to_uint16(np.where(np.isfinite(t), t, DEPTH_FAR), DEPTH_NEAR, DEPTH_FAR)[0]

def _render_chunk(args) -> List[Tuple[bytes, bytes]]:
    scenes, resolution = args # scenes: this chunk's slice only (cheap to pickle)
    out, num = [], len(scenes['cls'])
    for b in range(0, num, 32):
        rgb, t = render(scenes, np.arange(b, min(b + 32, num)), resolution)
        out += [(zip_writer.encode_png(im), zip_writer.encode_png(depth_to_png16(dm))) for im, dm in zip(rgb, t)]
    return out

#----------------------------------------------------------------------------
# Dataset writer.

def build_synthetic(dest: str, num_images: int = 10000, resolution: int = 64, seed: int = 0, num_classes: int = 6,
                    label_type: str = 'class', workers: int = 2, overwrite: bool = False, progress: bool = True) -> dict:
    """Render the synthetic set into an EG3D/RGB-D zip at `dest`; returns a summary dict."""
    if not 32 <= resolution <= 256 or resolution & (resolution - 1):
        raise ValueError(f'resolution must be a power of two in [32, 256], got {resolution}')
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    if label_type not in ('class', 'camera'):
        raise ValueError(f"label_type must be 'class' or 'camera', got {label_type!r}")
    zip_writer.check_dest(dest, overwrite)
    t0 = time.time()
    scenes = sample_scenes(num_images, seed, num_classes)
    chunk = max(32, min(256, -(-num_images // max(workers * 4, 1))))
    jobs = [({k: v[lo:lo + chunk] for k, v in scenes.items()}, resolution) for lo in range(0, num_images, chunk)]
    import tqdm
    names = [zip_writer.image_fname(i) for i in range(num_images)]
    with zip_writer.zip_writer(dest, overwrite=overwrite) as w:
        pool = multiprocessing.get_context('fork' if os.name == 'posix' else 'spawn').Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(_render_chunk, jobs) if pool else map(_render_chunk, jobs)
            i = 0
            with tqdm.tqdm(total=num_images, disable=not progress, unit='img', desc='synthetic') as bar:
                for res in results:
                    for img_png, depth_png in res:
                        w.add(names[i], img_png)
                        w.add(zip_writer.depth_fname(names[i]), depth_png)
                        i += 1
                    bar.update(len(res))
        finally:
            if pool:
                pool.terminate()
        cams = [[names[i], dict(yaw=float(scenes['yaw'][i]), pitch=float(scenes['pitch'][i]), radius=float(scenes['radius'][i]),
                 fov=float(scenes['fov'][i]), look_at=scenes['look_at'][i].tolist(), c=scenes['c'][i].tolist())] for i in range(num_images)]
        classes = [[names[i], int(scenes['cls'][i])] for i in range(num_images)]
        w.add_json(zip_writer.DATASET_JSON, dict(
            labels=classes if label_type == 'class' else [[n, cam['c']] for n, cam in cams],
            class_labels=classes, class_names=CLASS_NAMES[:num_classes], cameras=cams,
            depth=dict(convention='ray_distance', encoding='global_range', near=DEPTH_NEAR, far=DEPTH_FAR, source='synthetic'),
            synthetic=dict(seed=seed, resolution=resolution, camera_distribution=CAMERA_DIST)))
    return dict(dest=dest, num_images=num_images, resolution=resolution, seconds=time.time() - t0)

#----------------------------------------------------------------------------

@click.command('synthetic')
@click.option('--dest', '--outdir', 'dest', help='Output zip', metavar='ZIP', required=True)
@click.option('--num-images', help='Number of images', type=click.IntRange(min=1), default=10000, show_default=True)
@click.option('--resolution', help='Image size (power of two, 32-256)', type=int, default=64, show_default=True)
@click.option('--seed', help='Random seed (same seed = same zip)', type=int, default=0, show_default=True)
@click.option('--num-classes', help='Number of object classes', type=click.IntRange(1, len(CLASS_NAMES)), default=len(CLASS_NAMES), show_default=True)
@click.option('--label-type', help='What dataset.json "labels" holds', type=click.Choice(['class', 'camera']), default='class', show_default=True)
@click.option('--workers', help='Render processes', type=click.IntRange(min=1), default=2, show_default=True)
@click.option('--overwrite', help='Replace an existing output', is_flag=True)
def synthetic_cli(dest, num_images, resolution, seed, num_classes, label_type, workers, overwrite):
    """Render the synthetic RGB-D set (known cameras, true depth, class labels)."""
    try:
        r = build_synthetic(dest, num_images, resolution, seed, num_classes, label_type, workers, overwrite)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err))
    print(f'Wrote {r["num_images"]} images at {r["resolution"]}px to {r["dest"]} in {r["seconds"]:.1f} s')

if __name__ == '__main__':
    synthetic_cli() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
