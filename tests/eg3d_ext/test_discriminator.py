"""Tests for eg3d_ext.discriminator: shapes, patch encoder layout, hyper-modulation, KD head gradients/training."""

import numpy as np
import torch

from eg3d_ext.discriminator import Discriminator, ScalarEncoder1d
from eg3d_ext.distillation_head import kd_loss
from eg3d_ext.loss_3dgp import Loss3DGP
from tests.eg3d_ext._tiny import tiny_D, tiny_G

def test_shapes_and_predict_feat():
    torch.manual_seed(0)
    D = tiny_D()
    x, c = torch.randn(4, 4, 8, 8), torch.eye(3)[[0, 1, 2, 0]]
    pp = torch.tensor([[0.5, 0.1, 0.3]]).repeat(4, 1)
    assert D(x, c, pp).shape == (4, 1)
    logits, feats = D(x, c, pp, predict_feat=True)
    assert logits.shape == (4, 1) and feats.shape == (4, 12)
    assert torch.allclose(logits, D(x, c, pp)) # the head does not change the adversarial output
    assert not torch.allclose(D(x, c, pp), D(x, c, torch.tensor([[0.9, 0.0, 0.05]]).repeat(4, 1))) # patch-conditioned

def test_block_schedule_matches_spec():
    D = Discriminator(c_dim=0, img_resolution=256, patch_resolution=64, kd_dim=2048)
    assert D.block_resolutions == [256, 128, 64, 32, 16, 8]
    x = torch.randn(4, 4, 64, 64)
    shapes = []
    h = None
    w = D.hyper_mod_mapping(None, D.scalar_enc(torch.rand(4, 3)))
    for res in D.block_resolutions:
        h = getattr(D, f'b{res}')(h, x, w)
        shapes.append(tuple(h.shape[1:]))
    assert shapes == [(256, 64, 64), (512, 64, 64), (512, 32, 32), (512, 16, 16), (512, 8, 8), (512, 4, 4)]
    assert D.b4.kd_fc.weight.shape == (512, 8192) and D.b4.kd_out.weight.shape == (2048, 512)

def test_scalar_encoder_layout():
    enc = ScalarEncoder1d()
    x = torch.tensor([[0.25, 0.5, 0.123]])
    e = enc(x).detach()
    assert e.shape == (1, 828)
    w = np.pi * 2.0 ** np.arange(10) / 1024
    block = e[0, 276:552] # o_x block
    assert np.allclose(block[:10].numpy(), np.sin(500 * w), atol=1e-4)
    assert np.allclose(block[10:20].numpy(), np.cos(500 * w), atol=1e-4)
    assert torch.equal(block[20:], enc.const_embed.weight[500])
    assert torch.equal(e[0, 552 + 20:], enc.const_embed.weight[123])

def _loss(G, D, kd_weight):
    return Loss3DGP('cpu', G, D, r1_gamma=1.0, patch_kwargs=dict(resolution=8), kd_weight=kd_weight, blur_init_sigma=0)

def test_kd_weight_zero_gives_head_no_gradient():
    torch.manual_seed(0)
    G, D = tiny_G(), tiny_D()
    D.requires_grad_(True)
    real, depth, emb = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1, torch.randn(4, 12)
    c, z = torch.eye(3)[[0, 1, 2, 0]], torch.randn(4, 16)
    _loss(G, D, 0.0).accumulate_gradients('Dmain', real, c, z, c, 1, 0, depth=depth, embedding=emb)
    assert D.b4.kd_fc.weight.grad is None and D.b4.kd_out.weight.grad is None
    assert D.b4.fc.weight.grad is not None
    D.zero_grad(set_to_none=True)
    _loss(G, D, 1.0).accumulate_gradients('Dmain', real, c, z, c, 1, 0, depth=depth, embedding=emb)
    assert D.b4.kd_out.weight.grad.abs().sum() > 0 and D.b8.conv0.weight.grad.abs().sum() > 0

def test_kd_loss_decreases_when_trained_alone():
    torch.manual_seed(0)
    D = tiny_D()
    x, c = torch.randn(8, 4, 8, 8), torch.eye(3)[torch.arange(8) % 3]
    pp = torch.tensor([[1.0, 0, 0]]).repeat(8, 1)
    target = torch.randn(8, 12)
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = kd_loss(D(x, c, pp, predict_feat=True)[1], target, pp[:, 0])
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]

def test_kd_loss_definition():
    pred, tgt = torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.zeros(2, 2)
    # d = (5, 0); weights s/mean(s) = (1.5, 0.5) for s = (0.75, 0.25)
    assert torch.isclose(kd_loss(pred, tgt, torch.tensor([0.75, 0.25])), torch.tensor(1.5 * 5 / 2), atol=1e-5)
    kl = kd_loss(pred, tgt, torch.ones(2), 'kl')
    p = torch.softmax(tgt, 1)
    ref = (p * (p.log() - torch.log_softmax(pred, 1))).sum(1).mean()
    assert torch.isclose(kl, ref)
