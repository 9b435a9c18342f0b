"""Presets: each fills unset CLI options with its own defaults (3DGP ImageNet recipe vs EG3D values), and every
registered preset trains one CPU tick on synthetic RGB-D data (in-process, tiny sizes)."""

import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dnnlib import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

@pytest.fixture(scope='module')
def zips(tmp_path_factory):
    """Synthetic RGB-D sets at 32 px: class labels + 2048-d embeddings (3DGP), and 25-d camera labels (EG3D)."""
    from eg3d_ext.datasets.synthetic import build_synthetic
    d = tmp_path_factory.mktemp('data')
    build_synthetic(str(d / 'cls.zip'), num_images=8, resolution=32, seed=0, num_classes=3, workers=1, progress=False)
    buf = io.BytesIO()
    np.save(buf, np.random.RandomState(0).randn(8, 2048).astype(np.float16))
    with zipfile.ZipFile(d / 'cls.zip', 'a', compression=zipfile.ZIP_STORED) as z:
        z.writestr('embeddings.npy', buf.getvalue())
    build_synthetic(str(d / 'cam.zip'), num_images=8, resolution=32, seed=1, label_type='camera', workers=1, progress=False)
    return dict(cls=str(d / 'cls.zip'), cam=str(d / 'cam.zip'))

def cli():
    import train
    return train.make_cli(['eg3d_ext.plugin'])

def dry_run(args, tmp_path):
    res = CliRunner().invoke(cli(), ['--outdir', str(tmp_path / 'runs'), '--gpus=1', '-n'] + args)
    assert res.exit_code == 0, res.output
    out = res.output
    return json.loads(out[out.index('{'):out.index('\nOutput directory')]), out

#----------------------------------------------------------------------------

def test_3dgp_presets_use_their_own_defaults(zips, tmp_path):
    c, out = dry_run(['--cfg=3dgp', '--data', zips['cls'], '--patch-res=16'], tmp_path)
    assert (c['G_kwargs']['channel_base'], c['G_kwargs']['channel_max'], c['D_kwargs']['channel_max']) == (65536, 1024, 1024)
    assert c['loss_kwargs']['r1_gamma'] == 0.05 and c['batch_size'] == 64 and c['training_set_kwargs']['xflip'] is True
    assert c['metrics'] == ['fid2k_full', 'nfs256'] and c['network_snapshot_ticks'] == 100 and '-batch64-gamma0.05' in out
    c, out = dry_run(['--cfg=3dgp-dogs', '--data', zips['cls'], '--patch-res=16', '--batch=8'], tmp_path)
    assert (c['G_kwargs']['channel_base'], c['G_kwargs']['channel_max']) == (32768, 512)
    assert c['loss_kwargs']['r1_gamma'] == pytest.approx(0.0002 * 32 ** 2 / 8) # 'auto'
    # Explicit options win over preset defaults.
    c, _ = dry_run(['--cfg=3dgp', '--data', zips['cls'], '--patch-res=16', '--cbase=1024', '--gamma=2', '--mirror=0'], tmp_path)
    assert c['G_kwargs']['channel_base'] == 1024 and c['loss_kwargs']['r1_gamma'] == 2 and c['training_set_kwargs']['xflip'] is False

def test_3dgp_kd_head_width_follows_the_teacher(zips, tmp_path):
    """KD head = the teacher's feature width: stored embeddings (any dim), an online timm teacher, or none."""
    small = str(tmp_path / 'emb96.zip')
    with zipfile.ZipFile(zips['cls']) as src, zipfile.ZipFile(small, 'w') as dst:
        for name in src.namelist():
            if name != 'embeddings.npy':
                dst.writestr(name, src.read(name))
        buf = io.BytesIO()
        np.save(buf, np.zeros([8, 96], np.float16))
        dst.writestr('embeddings.npy', buf.getvalue())
    width = lambda args: dry_run(['--cfg=3dgp', '--patch-res=16'] + args, tmp_path)[0]['D_kwargs']['kd_dim']
    assert width(['--data', zips['cls']]) == 2048
    assert width(['--data', small]) == 96
    assert width(['--data', small, '--teacher=resnet18']) == 512
    assert width(['--data', small, '--kd-weight=0']) == 0

def test_3dgp_blur_fade_follows_option_unscaled(zips, tmp_path):
    # Default: 3DGP's 200 kimg regardless of batch (EG3D would scale it by batch/32 -> 400 at batch 64).
    c, _ = dry_run(['--cfg=3dgp', '--data', zips['cls'], '--patch-res=16'], tmp_path)
    assert c['batch_size'] == 64 and c['loss_kwargs']['blur_fade_kimg'] == 200 and c['loss_kwargs']['blur_init_sigma'] == 10
    c, _ = dry_run(['--cfg=3dgp-dogs', '--data', zips['cls'], '--patch-res=16', '--batch=8', '--blur_fade_kimg=37'], tmp_path)
    assert c['loss_kwargs']['blur_fade_kimg'] == 37
    c, _ = dry_run(['--cfg=3dgp', '--data', zips['cls'], '--patch-res=16', '--blur_fade_kimg=0'], tmp_path)
    assert c['loss_kwargs']['blur_fade_kimg'] == 0
    # EG3D presets keep EG3D's batch scaling of the same option.
    c, _ = dry_run(['--cfg=ffhq', '--data', zips['cam'], '--batch=4', '--gamma=1', '--blur_fade_kimg=40',
                    '--sr-module=tests.tiny_sr.TinySuperresolution'], tmp_path)
    assert c['loss_kwargs']['blur_fade_kimg'] == 4 * 40 / 32

def test_eg3d_presets_keep_eg3d_defaults(zips, tmp_path):
    c, _ = dry_run(['--cfg=ffhq', '--data', zips['cam'], '--batch=4', '--gamma=1', '--sr-module=tests.tiny_sr.TinySuperresolution'], tmp_path)
    assert (c['G_kwargs']['channel_base'], c['G_kwargs']['channel_max'], c['G_kwargs']['mapping_kwargs']['num_layers']) == (32768, 512, 2)
    assert c['training_set_kwargs']['xflip'] is False and c['metrics'] == ['fid50k_full'] and c['network_snapshot_ticks'] == 50
    assert c['G_opt_kwargs']['lr'] == 0.0025 and c['D_opt_kwargs']['lr'] == 0.002
    assert c['training_set_kwargs']['max_size'] == 8 # *_depth.png side files are not images
    for cfg, missing in (('ffhq', '--gamma'), ('eg3d-wide', '--batch')):
        args = ['--outdir', str(tmp_path), '--gpus=1', '-n', f'--cfg={cfg}', '--data', zips['cam']]
        args += ['--batch=4'] if missing == '--gamma' else ['--gamma=1']
        res = CliRunner().invoke(cli(), args)
        assert res.exit_code != 0 and f"Missing option '{missing}'" in res.output and 'Traceback' not in res.output

def test_help_says_preset_default():
    res = CliRunner().invoke(cli(), ['--help'])
    assert res.exit_code == 0
    for opt in ('--cbase', '--cmax', '--gamma', '--batch', '--mirror'):
        opts = res.output[res.output.index('Options:'):]
        block = opts[opts.index(f'  {opt} '):].split('\n  -')[0]
        assert 'preset default' in ' '.join(block.split()), (opt, block)

#----------------------------------------------------------------------------
# One CPU tick per registered preset (in-process training loop, one iteration).

TINY_3DGP = ['--cbase=512', '--cmax=16', '--patch-res=16', '--triplane-res=32', '--depth-resolution=4',
             '--depth-resolution-importance=4', '--gamma=1']
TINY_EG3D = ['--gamma=1', '--cbase=256', '--cmax=8', '--map-depth=1', '--neural_rendering_resolution_initial=16',
             '--depth-resolution=4', '--depth-resolution-importance=4', '--sr-module=tests.tiny_sr.TinySuperresolution']

def _preset_names():
    import training.presets  # noqa: F401 -- registers the EG3D presets
    registry.load_plugins(['eg3d_ext.plugin'])
    return registry.names('preset')

@pytest.mark.parametrize('cfg', _preset_names())
def test_every_preset_trains_one_tick(cfg, zips, tmp_path):
    from training import training_loop
    is_3dgp = cfg.startswith('3dgp')
    data = zips['cls'] if is_3dgp or cfg == 'eg3d-wide' else zips['cam']
    args = [f'--cfg={cfg}', '--data', data, '--batch=2', '--mbstd-group=2', '--kimg=0.002', '--tick=0.002', '--snap=1',
            '--metrics=none', '--workers=1', '--grid=2x2'] + (TINY_3DGP if is_3dgp else TINY_EG3D)
    c, _ = dry_run(args, tmp_path)
    c['run_dir'] = str(tmp_path / 'run')
    c['data_loader_kwargs']['num_workers'] = 0 # in-process: no worker start-up cost
    os.makedirs(c['run_dir'])
    torch.manual_seed(0)
    training_loop.training_loop(rank=0, device=torch.device('cpu'), **c)
    stats = [json.loads(l) for l in open(os.path.join(c['run_dir'], 'stats.jsonl'))]
    assert np.isfinite(stats[-1]['Loss/G/loss']['mean']) and np.isfinite(stats[-1]['Loss/D/loss']['mean'])
    assert os.path.isfile(os.path.join(c['run_dir'], 'network-snapshot-000000.pkl'))

#----------------------------------------------------------------------------
