"""EG3D (wide camera prior) vs 3DGP on the synthetic RGB-D set, plus the depth-adaptor 0/50/100% ablation, at small scale.

Every run trains on the same zip with the same seed, batch and number of images (kimg), through demo.train (train.py)
with demo.py's small CPU setup, then gets the same metrics (demo.compute_metrics: camera_w1, nfs, depth_err and
fid_demo, a Frechet distance in the features of a random-init network -- NOT the Inception FID). Results go to
<outdir>/study.json and <outdir>/study.md (markdown table), plus a sample and depth grid per run. Re-running reuses
finished runs and metrics.

\b
python bench/study.py --outdir=bench/results/study --kimg=1
python bench/study.py --outdir=bench/results/study --kimg=1 --runs=3dgp,eg3d-wide   # a subset
"""

import json
import os
import sys
import time
from typing import Dict, List

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import demo # pylint: disable=wrong-import-position
import dnnlib # pylint: disable=wrong-import-position

# name -> (preset, extra train.py options, what it is)
RUNS = {
    'eg3d-wide':  ('eg3d-wide', [], 'EG3D, cameras from the wide (uniform) 3DGP prior'),
    '3dgp':       ('3dgp', [], '3DGP preset (learned camera, depth adaptor with the annealed schedule)'),
    '3dgp-da0':   ('3dgp', ['--depth-adaptor-prob=0'], '3DGP, D always sees the raw rendered depth (no adaptor)'),
    '3dgp-da50':  ('3dgp', ['--depth-adaptor-prob=0.5'], '3DGP, adapted depth with probability 50%'),
    '3dgp-da100': ('3dgp', ['--depth-adaptor-prob=1'], '3DGP, adapted depth with probability 100%'),
}
KEYS = ['camera_w1', 'nfs', 'depth_err', 'fid_demo']

#----------------------------------------------------------------------------

def run_one(name: str, outdir: str, data: str, kimg: float, resolution: int, batch: int, seed: int,
            metric_scale: float) -> Dict:
    """Train (or reuse) one run, export its grids and compute (or reuse) its metrics."""
    cfg, extra, _what = RUNS[name]
    rdir = os.path.join(outdir, name)
    t0 = time.time()
    pkl, done = demo.train(rdir, cfg, data, kimg, resolution, batch, seed, extra=extra, desc=name)
    t_train = time.time() - t0
    mpath = os.path.join(rdir, 'metrics.json')
    if demo.is_newer(mpath, pkl):
        return json.load(open(mpath))
    learned = cfg == '3dgp'
    demo.export(pkl, rdir, camera='learned' if learned else 'prior', video=False, mesh=False)
    t1 = time.time()
    s = metric_scale
    res = demo.compute_metrics(pkl, data, num_fid=max(int(512 * s), 8), num_depth=max(int(128 * s), 4),
                               num_nfs=max(int(64 * s), 4))
    res.update(run=name, cfg=cfg, extra=extra, kimg=done, train_seconds=round(t_train, 1),
               metric_seconds=round(time.time() - t1, 1))
    demo.write_json(mpath, res)
    return res

def table(results: List[Dict]) -> str:
    rows = ['| run | what | kimg | camera_w1 ↓ | nfs ↑ | depth_err ↓ | fid_demo ↓ | train s |',
            '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in results:
        rows.append(f"| `{r['run']}` | {RUNS[r['run']][2]} | {r['kimg']:g} | {r['camera_w1']:.4f} | {r['nfs']:.2f} | "
                    f"{r['depth_err']:.4f} | {r['fid_demo']:.3f} | {r.get('train_seconds', float('nan')):.0f} |")
    return '\n'.join(rows) + '\n'

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--outdir', help='Where to write the runs and the tables', metavar='DIR', default='bench/results/study', show_default=True)
@click.option('--kimg', help='Training length of every run', type=click.FloatRange(min=0, min_open=True), default=1, show_default=True)
@click.option('--runs', help='Comma-separated subset of ' + ','.join(RUNS), default=','.join(RUNS), show_default=True)
@demo.setup_options
def main(outdir, kimg, runs, data_dir, num_images, resolution, batch, seed, metric_scale):
    names = [n.strip() for n in runs.split(',') if n.strip()]
    bad = [n for n in names if n not in RUNS]
    if bad:
        raise click.BadParameter(f'unknown run(s) {", ".join(bad)}; valid: {", ".join(RUNS)}', param_hint='--runs')
    t0 = time.time()
    os.makedirs(outdir, exist_ok=True)
    data = demo.prepare_data(data_dir, num_images, int(resolution), seed)
    results = []
    for i, name in enumerate(names):
        print(f'[{i + 1}/{len(names)}] {name}: {RUNS[name][2]}')
        results.append(run_one(name, outdir, data, kimg, int(resolution), batch, seed, metric_scale))
        print(json.dumps({k: results[-1][k] for k in KEYS}))
    demo.write_json(os.path.join(outdir, 'study.json'), dict(
        command=' '.join(['python', 'bench/study.py'] + sys.argv[1:]), data=os.path.relpath(data),
        seconds=round(time.time() - t0, 1), results=results))
    with dnnlib.util.atomic_write(os.path.join(outdir, 'study.md'), 'wt') as f:
        f.write(table(results))
    print(table(results))
    print(f'Study done in {(time.time() - t0) / 60:.1f} min; {os.path.join(outdir, "study.md")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
