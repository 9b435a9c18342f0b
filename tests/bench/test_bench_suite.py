"""Tests for the benchmark suite's building blocks: configs it builds, the KD FLOP count, the results table."""

import os
import sys

import pytest
import torch

import dnnlib
from bench import kd_share
from bench import run as bench_run

sys.path.insert(0, os.path.join(bench_run.ROOT, 'bench')) # the workers import bench/step_time.py as `step_time`
import step_time # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

def test_kd_flop_delta_is_the_heads_matmuls():
    """KD on minus KD off = the head's two linear layers, forward + both backward matmuls (6 * batch * in * out)."""
    res = kd_share.measure('tiny', iters=0)
    D, _inputs, _kw = kd_share.setup('tiny')
    head = [p for n, p in D.named_parameters() if '.kd_' in n and p.ndim == 2]
    assert len(head) == 2
    assert res['flops_d_step_with_kd'] - res['flops_d_step'] == 6 * res['batch'] * sum(w.numel() for w in head)
    assert res['kd_flop_share'] == pytest.approx(1 - res['flops_d_step'] / res['flops_d_step_with_kd'])
    assert 'kd_time_share' not in res # iters=0: FLOPs only

def test_step_time_build_follows_its_arguments():
    G, D, loss, phases = step_time.build(torch.device('cpu'), torch, dnnlib, cbase=1024, cmax=16, depth=4, nrr=64)
    assert G.init_kwargs['channel_base'] == D.init_kwargs['channel_base'] == 1024 and G.init_kwargs['channel_max'] == 16
    assert G.img_resolution == D.img_resolution == 128 and loss.neural_rendering_resolution_initial == 64
    assert G.rendering_kwargs['depth_resolution'] == G.rendering_kwargs['depth_resolution_importance'] == 4
    assert [(n, m, i) for n, m, _opt, i in phases] == [('Gmain', G, 1), ('Greg', G, 4), ('Dmain', D, 1), ('Dreg', D, 16)]
    # Lazy regularisation scales Adam as the training loop does: lr * 4/5, beta2 = 0.99^(4/5) for G.
    g_opt = phases[0][2]
    assert g_opt.defaults['lr'] == pytest.approx(0.0025 * 4 / 5) and g_opt.defaults['betas'][1] == pytest.approx(0.99 ** 0.8)
    assert [n for n, *_ in step_time.adam_phases(torch, G, D, None)] == ['Gboth', 'Dmain', 'Dreg']

def test_eg3d256_is_the_ffhq_preset_shape():
    from training.presets import SR_MODULES
    G, loss, phases = bench_run._build_eg3d256(torch.device('cpu'), torch, dnnlib, step_time)
    rk = G.rendering_kwargs
    assert G.img_resolution == 256 and rk['superresolution_module'] == SR_MODULES[256]
    assert type(G.superresolution).__name__ == SR_MODULES[256].rsplit('.', 1)[1]
    assert rk['depth_resolution'] == rk['depth_resolution_importance'] == 48 and loss.neural_rendering_resolution_initial == 64
    assert (G.init_kwargs['channel_base'], G.init_kwargs['channel_max']) == (32768, 512)
    assert len(phases) == 4

def test_table_ratios_against_same_run_baselines():
    R = dict(render={'eg3d_rays_per_s_train_gathers': 300.0, 'eg3d_rays_per_s_train_grid_sample': 200.0,
                     '3dgp_rays_per_s_train_gathers': 120.0, '3dgp_rays_per_s_train_grid_sample': 100.0},
             kd=dict(flops_d_step=999e9, flops_d_step_with_kd=1000e9, kd_flop_share=0.001, batch=4))
    rows = {r['figure']: r for r in bench_run.table(R)}
    assert rows['EG3D renderer rays/s train']['ratio'] == pytest.approx(1.5)
    assert rows['3DGP renderer rays/s train']['ratio'] == pytest.approx(1.2)
    assert '3DGP renderer rays/s eval' not in rows # not measured: no row
    kd = rows['D step GFLOP, KD on']
    assert (kd['value'], kd['baseline']) == (1000, 999) and '0.100%' in kd['note']

#----------------------------------------------------------------------------
