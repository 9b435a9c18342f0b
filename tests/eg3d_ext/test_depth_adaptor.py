"""Tests for eg3d_ext.depth_adaptor: normalization, selection schedule (statistical), ablation knob, gradients."""

import numpy as np
import pytest
import torch

from eg3d_ext.depth_adaptor import DepthAdaptor, selection_probs

def test_schedule_endpoints_match_spec():
    assert np.allclose(selection_probs(4, 0.0, 0.1), [0.25] * 4)
    assert np.allclose(selection_probs(4, 1.0, 0.1), [0.1, 0.2, 0.3, 0.4])
    assert np.allclose(selection_probs(4, 1.0, 0.0), [0, 1 / 6, 1 / 3, 1 / 2])
    assert np.allclose(selection_probs(4, 0.5, 0.1).sum(), 1)

@pytest.mark.parametrize('kimg', [0, 5000, 20000])
def test_selection_frequencies_follow_schedule(kimg):
    torch.manual_seed(0)
    da = DepthAdaptor(0.75, 1.25, hid_dim=4)
    da.set_progress(kimg)
    expected = selection_probs(4, min(kimg / 10000, 1), 0.1)
    n = 4000
    _, idx = da(torch.full([n, 1, 2, 2], 1.0))
    freq = np.bincount(idx.numpy(), minlength=4) / n
    # Multinomial: each |freq - p| < 4.5 sigma.
    assert np.all(np.abs(freq - expected) < 4.5 * np.sqrt(expected * (1 - expected) / n) + 1e-9), (freq, expected)

def test_ablation_knob_and_eval_mode():
    torch.manual_seed(0)
    raw_only = DepthAdaptor(0.75, 1.25, hid_dim=4, raw_prob=1.0)
    d = torch.rand(256, 1, 3, 3) * 0.5 + 0.75
    out, idx = raw_only(d)
    assert torch.all(idx == 0) and torch.allclose(out, raw_only.normalize(d))
    half = DepthAdaptor(0.75, 1.25, hid_dim=4, raw_prob=0.5)
    _, idx = half(torch.rand(4000, 1, 1, 1))
    assert abs((idx == 0).float().mean() - 0.5) < 0.03 and set(idx.unique().tolist()) == {0, 3}
    always = DepthAdaptor(0.75, 1.25, hid_dim=4, raw_prob=0.0)
    assert torch.all(always(d)[1] == 3)
    always.eval()
    assert torch.allclose(always(d)[0], always.candidates(d)[-1])

def test_normalization_maps_range_to_unit_interval():
    da = DepthAdaptor(0.75, 1.25, hid_dim=4)
    offset = torch.sigmoid(torch.tensor(-3.0)) * 0.25 * 0.5
    d = torch.tensor([0.75 + offset, 1.0, 1.25]).view(3, 1, 1, 1)
    n = da.normalize(d).flatten()
    assert torch.allclose(n[[0, 2]], torch.tensor([-1.0, 1.0]), atol=1e-5) and -1 < n[1] < 1

def test_gradients_reach_convs_heads_and_near_plane():
    torch.manual_seed(0)
    da = DepthAdaptor(0.75, 1.25, hid_dim=4, raw_prob=0.5)
    da(torch.rand(64, 1, 5, 5) * 0.5 + 0.75)[0].square().sum().backward()
    for name, p in da.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

def test_bad_arguments():
    with pytest.raises(ValueError, match='out_strategy'):
        DepthAdaptor(0.75, 1.25, out_strategy='x')
    with pytest.raises(ValueError, match='raw_prob'):
        DepthAdaptor(0.75, 1.25, raw_prob=2)
