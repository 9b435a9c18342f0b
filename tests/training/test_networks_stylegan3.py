"""Tests for training.networks_stylegan3: tiny alias-free generators (T and R configs) on CPU."""

import pickle

import numpy as np
import pytest
import torch

from training import networks_stylegan3 as sg3

#----------------------------------------------------------------------------

@pytest.mark.parametrize('cfg', [dict(), dict(conv_kernel=1, use_radial_filters=True)]) # StyleGAN3-T, -R
def test_generator_shapes_gradients_and_pickle(cfg):
    torch.manual_seed(0)
    G = sg3.Generator(z_dim=8, c_dim=2, w_dim=8, img_resolution=16, img_channels=3, channel_base=256,
        channel_max=8, num_layers=4, num_critical=1, margin_size=2, **cfg)
    assert G.num_ws == 6 and len(G.synthesis.layer_names) == 5
    z, c = torch.randn(2, 8), torch.randn(2, 2)
    img = G(z, c)
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32 and torch.isfinite(img).all()
    img.square().mean().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        torch.testing.assert_close(pickle.loads(pickle.dumps(G))(z, c), G(z, c))
        G(z, c, update_emas=True)
        assert any(float(m.magnitude_ema) != 1 for m in G.modules() if isinstance(m, sg3.SynthesisLayer))

def test_lowpass_filter_design():
    assert sg3.SynthesisLayer.design_lowpass_filter(numtaps=1, cutoff=2, width=1, fs=8) is None
    f = sg3.SynthesisLayer.design_lowpass_filter(numtaps=12, cutoff=2, width=2, fs=16)
    assert f.shape == (12,) and f.sum().item() == pytest.approx(1, abs=1e-5)
    fr = sg3.SynthesisLayer.design_lowpass_filter(numtaps=12, cutoff=2, width=2, fs=16, radial=True)
    assert fr.shape == (12, 12) and torch.allclose(fr, fr.T) and fr.sum().item() == pytest.approx(1, abs=1e-5)

def test_mapping_truncation():
    torch.manual_seed(0)
    m = sg3.MappingNetwork(z_dim=4, c_dim=0, w_dim=6, num_ws=3)
    with torch.no_grad():
        m.w_avg.copy_(torch.randn(6))
        ws = m(torch.randn(2, 4), None, truncation_psi=0)
    torch.testing.assert_close(ws, m.w_avg.expand(2, 3, 6))
    assert np.isclose(m.fc0.weight_gain, 0.01 / 2)

#----------------------------------------------------------------------------
