"""KD with an online teacher (eg3d_ext.datasets.embeddings.Teacher, random init) instead of dataset embeddings."""

import pytest
import torch

from eg3d_ext import loss_3dgp
from eg3d_ext.datasets.embeddings import Teacher
from eg3d_ext.loss_3dgp import Loss3DGP
from tests.eg3d_ext._tiny import tiny_D, tiny_G

TEACHER = dict(model_name='resnet18', random_init=True, input_size=32)

def test_online_teacher_kd_step(monkeypatch):
    torch.manual_seed(0)
    G, D = tiny_G(), tiny_D(kd_dim=512).requires_grad_(True) # resnet18 features are 512-d
    loss = Loss3DGP('cpu', G, D, r1_gamma=1.0, patch_kwargs=dict(resolution=8), kd_weight=1.0, blur_init_sigma=0,
                    teacher_kwargs=TEACHER)
    seen = []
    orig = loss_3dgp.kd_loss
    monkeypatch.setattr(loss_3dgp, 'kd_loss', lambda pred, target, *a: seen.append(target) or orig(pred, target, *a))
    real, depth = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    c, z = torch.eye(3)[[0, 1, 2, 0]], torch.randn(4, 16)
    loss.accumulate_gradients('Dmain', real, c, z, c, 1, 0, depth=depth) # no 'embedding' extra: teacher runs
    assert isinstance(loss._teacher, Teacher) and loss._teacher.dim == 512
    assert not any(p.requires_grad for p in loss._teacher.parameters()) # frozen
    # The KD target is the teacher's feature of the full real image (not the patch), as for precomputed embeddings.
    with torch.no_grad():
        torch.testing.assert_close(seen[0], loss._teacher(real))
    assert D.b4.kd_out.weight.grad.abs().sum() > 0 and D.b4.kd_fc.weight.grad.abs().sum() > 0

def test_online_teacher_size_mismatch_is_clear():
    torch.manual_seed(0)
    G, D = tiny_G(), tiny_D(kd_dim=12)
    loss = Loss3DGP('cpu', G, D, r1_gamma=1.0, patch_kwargs=dict(resolution=8), kd_weight=1.0, blur_init_sigma=0,
                    teacher_kwargs=TEACHER)
    with pytest.raises(ValueError, match='do not match the KD head'):
        loss.accumulate_gradients('Dmain', torch.rand(2, 3, 16, 16), torch.eye(3)[:2], torch.randn(2, 16),
                                  torch.eye(3)[:2], 1, 0, depth=torch.rand(2, 1, 16, 16))
