"""Shared helpers for the reliability tests: a tiny 32 px dataset, the tiny ffhq option set, run helpers."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'training'))
from test_dataset import make_zip  # noqa: E402

FRONTAL = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]

# Tiny ffhq config (as tests/test_train.py): 1 step per first tick, then 2 steps (batch 2) per tick.
TINY = ['--cfg=ffhq', '--gamma=1', '--cbase=256', '--cmax=8', '--map-depth=1', '--metrics=none', '--workers=1',
        '--neural_rendering_resolution_initial=16', '--depth-resolution=6', '--depth-resolution-importance=6',
        '--grid=2x2', '--sr-module=tests.tiny_sr.TinySuperresolution', '--snap=1', '--gpus=1', '--batch=2',
        '--mbstd-group=2', '--tick=0.004']

def make_tiny_zip(path: str) -> str:
    rnd = np.random.RandomState(0)
    imgs = [rnd.randint(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    make_zip(path, imgs, [[float(v) + 0.01 * i for v in FRONTAL] for i in range(4)])
    return path

def train_cmd(outdir: str, data: str, *args: str) -> list:
    return [sys.executable, os.path.join(ROOT, 'train.py'), '--outdir', outdir, '--data', data] + TINY + list(args)

def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT, EG3D_TRUST_PICKLES='1')

def run_train(outdir: str, data: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(train_cmd(outdir, data, *args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, f'train.py failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    return r

def tiny_config(outdir: str, data: str, *args: str):
    """The training config (dict c) that train.py would build, without launching anything."""
    import train
    cli = train.make_cli()
    ctx = cli.make_context('train.py', ['--outdir', outdir, '--data', data] + TINY + list(args))
    captured = {}
    orig = train.launch_training
    train.launch_training = lambda c, **kw: captured.update(c=c, **kw)
    try:
        cli.invoke(ctx)
    finally:
        train.launch_training = orig
    return captured['c']

def stats_lines(run_dir: str) -> list:
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return [json.loads(l) for l in f.read().splitlines()]
