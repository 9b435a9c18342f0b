"""Depth estimators: registry, random-weight construction from configs, output sizes and conventions, missing weights."""

import io

import numpy as np
import PIL.Image
import pytest
import torch
import transformers # in the [test] extra: a missing package must fail, not skip

import dnnlib
from eg3d_ext.datasets import depth_estimators as de

def tiny_depth_anything_config(metric: bool = False):
    bb = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                   patch_size=14, image_size=56, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    return transformers.DepthAnythingConfig(backbone_config=bb, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                            fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
                                            depth_estimation_type='metric' if metric else 'relative', max_depth=20)

#----------------------------------------------------------------------------

def test_registry_names():
    names = dnnlib.registry.names('depth_estimator')
    for n in ('file', 'depth-anything', 'depth-anything-metric', 'zoedepth', 'dpt-midas'):
        assert n in names
    assert dnnlib.registry.resolve('depth_estimator', 'file') is de.FileDepth

@pytest.mark.parametrize('name,metric', [('depth-anything', False), ('depth-anything-metric', True)])
def test_random_weights_output_size(name, metric):
    torch.manual_seed(0)
    est = de.make_estimator(name, config=tiny_depth_anything_config(metric), input_size=56)
    assert est.metric == metric
    images = torch.randint(0, 256, [2, 3, 40, 52], dtype=torch.uint8)
    out = est(images)
    assert out.shape == (2, 40, 52) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # Independent reference: same preprocessing by hand, raw model output, bilinear resize, sign convention.
    x = torch.nn.functional.interpolate(images.float() / 255, size=(42, 56), mode='bicubic', align_corners=False, antialias=True).clamp(0, 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = est.model(pixel_values=(x - mean) / std).predicted_depth
    ref = torch.nn.functional.interpolate(raw[:, None], size=(40, 52), mode='bilinear', align_corners=False)[:, 0]
    torch.testing.assert_close(out, ref if metric else -ref)
    if metric:
        assert (out >= 0).all() # metric head: sigmoid * max_depth

def test_dpt_preset_random_config():
    cfg = transformers.DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
                                 patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5])
    est = de.make_estimator('dpt-midas', config=cfg, input_size=64)
    out = est(torch.randint(0, 256, [1, 3, 48, 48], dtype=torch.uint8))
    assert out.shape == (1, 48, 48) and not est.metric

def tiny_zoedepth_config():
    bb = transformers.BeitConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
                                 patch_size=16, out_indices=[1, 2, 3, 4], reshape_hidden_states=False, use_relative_position_bias=True)
    return transformers.ZoeDepthConfig(backbone_config=bb, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                                       reassemble_factors=[4, 2, 1, 0.5], bottleneck_features=16, bin_embedding_dim=8,
                                       num_relative_features=8, num_attractors=[4, 2, 2, 1],
                                       bin_configurations=[dict(n_bins=8, min_depth=0.001, max_depth=10.0, name='nyu')],
                                       num_patch_transformer_layers=1, patch_transformer_hidden_size=16,
                                       patch_transformer_intermediate_size=32, patch_transformer_num_attention_heads=2)

def test_zoedepth_preset_random_config():
    est = de.make_estimator('zoedepth', config=tiny_zoedepth_config(), input_size=64)
    assert est.metric and type(est.model).__name__ == 'ZoeDepthForDepthEstimation'
    # transformers' init makes the tiny model's output constant; larger random weights give a depth map with structure.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in est.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    images = torch.randint(0, 256, [2, 3, 40, 52], dtype=torch.uint8, generator=gen)
    out = est(images)
    assert out.shape == (2, 40, 52) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out > 0).all() and out.std() > 0 # metric: expected value over positive (softplus) bin centres
    # Reference: ZoeDepth's preprocessing (mean = std = 0.5, sides multiple of 32), no sign flip for a metric model.
    x = torch.nn.functional.interpolate(images.float() / 255, size=(64, 64), mode='bicubic', align_corners=False, antialias=True).clamp(0, 1)
    with torch.no_grad():
        raw = est.model(pixel_values=(x - 0.5) / 0.5).predicted_depth
    ref = torch.nn.functional.interpolate(raw.reshape(2, 1, 64, 64), size=(40, 52), mode='bilinear', align_corners=False)[:, 0]
    torch.testing.assert_close(out, ref)

def test_missing_weights_message(tmp_path):
    dnnlib.util.set_cache_dir(str(tmp_path / 'cache'))
    try:
        with pytest.raises(dnnlib.util.MissingWeightsError, match='Depth-Anything-V2-Small-hf'):
            de.make_estimator('depth-anything')
        with pytest.raises(dnnlib.util.MissingWeightsError, match='hf download'):
            de.make_estimator('zoedepth', weights=str(tmp_path / 'nowhere'))
    finally:
        dnnlib.util.set_cache_dir(None)

def test_local_weights_folder_roundtrip(tmp_path):
    torch.manual_seed(1)
    est = de.make_estimator('depth-anything', config=tiny_depth_anything_config(), input_size=56)
    est.model.save_pretrained(str(tmp_path / 'da'))
    est2 = de.make_estimator('depth-anything', weights=str(tmp_path / 'da'), input_size=56)
    x = torch.randint(0, 256, [1, 3, 28, 28], dtype=torch.uint8)
    torch.testing.assert_close(est(x), est2(x))

def test_file_depth_loading():
    d8 = np.arange(12, dtype=np.uint8).reshape(3, 4)
    buf = io.BytesIO(); PIL.Image.fromarray(d8).save(buf, format='png')
    np.testing.assert_array_equal(de.FileDepth.load(buf.getvalue(), 'a_depth.png'), d8.astype(np.float64) * 256)
    d16 = (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4)
    buf = io.BytesIO(); PIL.Image.fromarray(d16).save(buf, format='png')
    np.testing.assert_array_equal(de.FileDepth.load(buf.getvalue(), 'a_depth.png'), d16)
    buf = io.BytesIO(); np.save(buf, np.ones([2, 3, 4]))
    with pytest.raises(IOError, match='2-D'):
        de.FileDepth.load(buf.getvalue(), 'a_depth.npy')
    with pytest.raises(IOError, match='cannot decode'):
        de.FileDepth.load(b'not a png', 'b_depth.png')
