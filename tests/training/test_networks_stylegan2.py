"""Tests for training.networks_stylegan2: shapes, gradients, layer conventions and pickling on tiny CPU networks."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import persistence
from training import networks_stylegan2 as nets

#----------------------------------------------------------------------------

def _tiny_G(**kwargs):
    torch.manual_seed(0)
    args = dict(z_dim=8, c_dim=3, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=16,
        mapping_kwargs=dict(num_layers=2))
    args.update(kwargs)
    return nets.Generator(**args)

def _tiny_D(**kwargs):
    torch.manual_seed(0)
    args = dict(c_dim=3, img_resolution=16, img_channels=3, channel_base=256, channel_max=16,
        epilogue_kwargs=dict(mbstd_group_size=2))
    args.update(kwargs)
    return nets.Discriminator(**args)

#----------------------------------------------------------------------------

def test_fully_connected_matches_equalized_lr_formula():
    torch.manual_seed(1)
    fc = nets.FullyConnectedLayer(5, 4, lr_multiplier=0.1, bias_init=0.5)
    x = torch.randn(3, 5)
    expected = x @ (fc.weight * 0.1 / np.sqrt(5)).t() + fc.bias * 0.1
    torch.testing.assert_close(fc(x), expected)
    fc_act = nets.FullyConnectedLayer(5, 4, activation='lrelu')
    y = x @ (fc_act.weight / np.sqrt(5)).t() + fc_act.bias
    torch.testing.assert_close(fc_act(x), F.leaky_relu(y, 0.2) * np.sqrt(2))
    assert type(fc.weight_gain) is float # Python floats keep pickles loadable with numpy 1

def test_conv2d_layer_correlates_and_applies_gain_and_clamp():
    torch.manual_seed(2)
    layer = nets.Conv2dLayer(3, 4, kernel_size=3, activation='lrelu', conv_clamp=0.5)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(4))
    x = torch.randn(2, 3, 8, 8)
    ref = F.conv2d(x, layer.weight / np.sqrt(27), layer.bias, padding=1)
    ref = (F.leaky_relu(ref, 0.2) * np.sqrt(2) * 2).clamp(-1, 1) # gain=2 scales the clamp too
    torch.testing.assert_close(layer(x, gain=2), ref)

def test_conv2d_layer_down_and_up_shapes_and_frozen_weights():
    x = torch.randn(2, 3, 8, 8)
    assert nets.Conv2dLayer(3, 4, 3, down=2)(x).shape == (2, 4, 4, 4)
    assert nets.Conv2dLayer(3, 4, 3, up=2)(x).shape == (2, 4, 16, 16)
    frozen = nets.Conv2dLayer(3, 4, 3, trainable=False)
    assert 'weight' in dict(frozen.named_buffers()) and not list(frozen.parameters())

#----------------------------------------------------------------------------

def _modconv_reference(x, weight, styles, demodulate, up=1):
    """Per-sample loop: modulate, demodulate, convolve (independent of the fused/non-fused code paths)."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        outs.append(F.conv2d(x[n:n+1], w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)

@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('demodulate', [True, False])
def test_modulated_conv2d_matches_per_sample_reference(fused, demodulate):
    torch.manual_seed(3)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    y = nets.modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate, fused_modconv=fused)
    torch.testing.assert_close(y, _modconv_reference(x, weight, styles, demodulate))

#----------------------------------------------------------------------------

def test_mapping_truncation_and_w_avg_update():
    G = _tiny_G()
    z, c = torch.randn(4, 8), torch.randn(4, 3)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(16))
        ws = G.mapping(z, c)
        assert ws.shape == (4, G.num_ws, 16)
        torch.testing.assert_close(G.mapping(z, c, truncation_psi=0), G.mapping.w_avg.expand_as(ws))
        cut = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)
        torch.testing.assert_close(cut[:, :2], G.mapping.w_avg.lerp(ws[:, :2], 0.5))
        torch.testing.assert_close(cut[:, 2:], ws[:, 2:])
        w_avg = G.mapping.w_avg.clone()
        G.mapping(z, c) # forward must not touch state
        assert torch.equal(G.mapping.w_avg, w_avg)
        G.mapping(z, c, update_emas=True)
        torch.testing.assert_close(G.mapping.w_avg, ws[:, 0].mean(0).lerp(w_avg, 0.998))

def test_generator_shapes_gradients_and_noise_modes():
    G = _tiny_G()
    assert G.num_ws == 6 # b4: 1 conv, b8 and b16: 2 convs each, plus the final ToRGB
    z, c = torch.randn(2, 8), torch.randn(2, 3)
    img = G(z, c)
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32
    img.square().sum().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(float(p.grad.abs().sum()) > 0 for p in G.parameters()) == len(list(G.parameters()))
    with torch.no_grad():
        for p in G.parameters(): # give noise a visible effect
            if p.ndim == 0:
                p.fill_(0.5)
        a, b = G(z, c, noise_mode='const'), G(z, c, noise_mode='const')
        assert torch.equal(a, b)
        assert not torch.equal(a, G(z, c, noise_mode='random'))
        assert not torch.equal(a, G(z, c, noise_mode='none'))

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_generator_fused_and_unfused_agree(architecture):
    G = _tiny_G(architecture=architecture)
    z, c = torch.randn(2, 8), torch.randn(2, 3)
    with torch.no_grad():
        a = G(z, c, noise_mode='const', fused_modconv=True)
        b = G(z, c, noise_mode='const', fused_modconv=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

def test_fp16_blocks_run_in_fp32_on_cpu_and_conv_clamp_applies():
    G = _tiny_G(num_fp16_res=2, conv_clamp=1e-3, fused_modconv_default='inference_only')
    assert G.synthesis.b16.use_fp16 and G.synthesis.b8.use_fp16 and not G.synthesis.b4.use_fp16
    with torch.no_grad():
        img = G(torch.randn(2, 8), torch.randn(2, 3), noise_mode='const')
    assert img.dtype == torch.float32
    # Each ToRGB output is clamped to 1e-3; the skip image sums three upsampled ToRGB outputs.
    assert img.abs().max() <= 3e-3 + 1e-6

def test_synthesis_block_in_place_residual_on_upsampled_copy():
    G = _tiny_G()
    ws = G.mapping(torch.randn(1, 8), torch.randn(1, 3))
    block = G.synthesis.b8
    x = torch.randn(1, block.conv0.in_channels, 4, 4)
    img = torch.randn(1, 3, 4, 4)
    img_before = img.clone()
    _, out = block(x, img, ws[:, 1:4], noise_mode='none')
    assert torch.equal(img, img_before) and out.shape == (1, 3, 8, 8) # upsampling makes a new tensor

#----------------------------------------------------------------------------

def test_discriminator_shapes_and_gradients():
    D = _tiny_D()
    img = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(img, torch.randn(4, 3))
    assert logits.shape == (4, 1)
    logits.sum().backward()
    assert img.grad.abs().sum() > 0
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

def test_discriminator_freeze_layers_and_architectures():
    D = _tiny_D(block_kwargs=dict(freeze_layers=2))
    assert 'b16.fromrgb.weight' in dict(D.named_buffers()) and 'b16.conv0.weight' in dict(D.named_buffers())
    assert 'b16.conv1.weight' in dict(D.named_parameters())
    for arch in ['orig', 'skip']:
        assert _tiny_D(architecture=arch, c_dim=0)(torch.randn(2, 3, 16, 16), None).shape == (2, 1)

def test_minibatch_std_layer_matches_group_statistics():
    x = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    y = nets.MinibatchStdLayer(group_size=2, num_channels=2)(x)
    assert y.shape == (4, 8, 3, 3)
    groups = x.reshape(2, 2, 2, 3, 3, 3) # [G, n, F, c, H, W]
    std = (groups.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[2, 3, 4]) # [n, F]
    for i in range(4):
        torch.testing.assert_close(y[i, 6:, 0, 0], std[i % 2])

#----------------------------------------------------------------------------

def test_generator_pickle_and_deepcopy_roundtrip():
    G = _tiny_G()
    z, c = torch.randn(2, 8), torch.randn(2, 3)
    with torch.no_grad():
        ref = G(z, c, noise_mode='const')
        for clone in [pickle.loads(pickle.dumps(G)), copy.deepcopy(G)]:
            assert persistence.is_persistent(clone)
            assert torch.equal(clone(z, c, noise_mode='const'), ref)
    assert G.init_kwargs.channel_base == 256

def test_reinstantiate_from_init_kwargs():
    G = _tiny_G()
    G2 = type(G)(*G.init_args, **G.init_kwargs)
    sd, sd2 = G.state_dict(), G2.state_dict()
    assert list(sd) == list(sd2) and all(sd[k].shape == sd2[k].shape for k in sd)

#----------------------------------------------------------------------------
