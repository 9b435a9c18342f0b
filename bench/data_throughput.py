"""Data throughput benchmark: images/s of the synthetic renderer, dataset_tool convert and the RGBDDataset loader."""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import PIL.Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#----------------------------------------------------------------------------

def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the machine may be shared)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

def bench(num_synthetic: int, num_convert: int, resolution: int, workers: int) -> dict:
    import torch
    from eg3d_ext.dataset_rgbd import RGBDDataset
    from eg3d_ext.datasets import convert, synthetic
    res = dict(resolution=resolution, workers=workers, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        syn = os.path.join(tmp, 'syn.zip')
        t0, c0 = time.time(), cpu_seconds()
        synthetic.build_synthetic(syn, num_images=num_synthetic, resolution=resolution, workers=workers, progress=False)
        res['synthetic_images_per_s'] = num_synthetic / (time.time() - t0)
        res['synthetic_cpu_ms_per_image'] = (cpu_seconds() - c0) / num_synthetic * 1000
        res['synthetic_10k_projected_s'] = 10000 / res['synthetic_images_per_s']
        res['synthetic_10k_projected_s_on_idle_cores'] = 10 * res['synthetic_cpu_ms_per_image'] / max(1, min(workers, os.cpu_count()))

        src = os.path.join(tmp, 'src')
        rng = np.random.default_rng(0)
        for c in range(4):
            os.makedirs(os.path.join(src, f'class{c}'))
        for i in range(num_convert): # in-the-wild-like input: 320x256 JPEGs in class folders + 16-bit depth
            img = (rng.random([256, 320, 3]) * 255).astype(np.uint8)
            stem = os.path.join(src, f'class{i % 4}', f'{i:06d}')
            PIL.Image.fromarray(img).save(stem + '.jpg', quality=90)
            PIL.Image.fromarray(rng.integers(0, 65535, [256, 320], dtype=np.uint16)).save(stem + '_depth.png')
        out = os.path.join(tmp, 'conv.zip')
        t0, c0 = time.time(), cpu_seconds()
        convert.convert_dataset(src, out, transform='center-crop', resolution=resolution, depth='file', workers=workers, progress=False)
        res['convert_images_per_s'] = num_convert / (time.time() - t0)
        res['convert_cpu_ms_per_image'] = (cpu_seconds() - c0) / num_convert * 1000

        for nw in (0, workers):
            ds = RGBDDataset(syn, use_labels=True, xflip=True)
            loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=nw)
            n, t0 = 0, time.time()
            for img, _label, extras in loader:
                assert 'depth' in extras
                n += img.shape[0]
            res[f'loader_images_per_s_workers{nw}'] = n / (time.time() - t0)
    return res

def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--num-synthetic', type=int, default=2000)
    p.add_argument('--num-convert', type=int, default=500)
    p.add_argument('--resolution', type=int, default=64)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--out', help='Write the results as JSON here')
    a = p.parse_args()
    res = bench(a.num_synthetic, a.num_convert, a.resolution, a.workers)
    for k, v in res.items():
        print(f'{k:36s} {v:.1f}' if isinstance(v, float) else f'{k:36s} {v}')
    if a.out:
        with open(a.out, 'w') as f:
            json.dump(res, f, indent=2)
    print(json.dumps(res))

if __name__ == '__main__':
    main()

#----------------------------------------------------------------------------
