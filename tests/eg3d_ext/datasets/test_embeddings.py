"""Teacher embeddings: timm backbone features, input conventions, local weights, batching order."""

import numpy as np
import pytest
import timm
import torch

import dnnlib
from eg3d_ext.datasets.embeddings import Teacher, compute_embeddings

MODEL = 'resnet10t' # tiny timm ResNet, random init

@pytest.fixture(scope='module')
def teacher():
    torch.manual_seed(0)
    return Teacher(MODEL, None, 'cpu', input_size=64, random_init=True)

def test_output_and_reference(teacher):
    x = torch.randint(0, 256, [3, 3, 40, 40], dtype=torch.uint8)
    out = teacher(x)
    assert out.shape == (3, teacher.dim) and teacher.dim == teacher.model.num_features == 512
    # Reference: resize + ImageNet normalisation by hand, pooled features of the same module.
    y = torch.nn.functional.interpolate(x.float() / 255, size=(64, 64), mode='bilinear', align_corners=False, antialias=True)
    y = (y - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = teacher.model.forward_head(teacher.model.forward_features(y), pre_logits=True)
    torch.testing.assert_close(out, ref)
    # Float input in [-1, 1] (training convention) gives the same features as uint8.
    torch.testing.assert_close(teacher(x.float() / 127.5 - 1), out, atol=1e-4, rtol=1e-4)

def test_local_weights(tmp_path):
    import safetensors.torch
    torch.manual_seed(3)
    src = timm.create_model(MODEL, pretrained=False) # with a classifier: it must be dropped on load
    path = str(tmp_path / 'w.safetensors')
    safetensors.torch.save_file({k: v.contiguous() for k, v in src.state_dict().items()}, path)
    t = Teacher(MODEL, path, 'cpu', input_size=32)
    x = torch.randint(0, 256, [2, 3, 32, 32], dtype=torch.uint8)
    src.reset_classifier(0)
    src.eval()
    y = (x.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(t(x), src(y))
    torch.save(timm.create_model('resnet18', pretrained=False).state_dict(), str(tmp_path / 'other.pth'))
    with pytest.raises(IOError, match='lacks'):
        Teacher(MODEL, str(tmp_path / 'other.pth'), 'cpu')

def test_missing_weights(tmp_path):
    with pytest.raises(dnnlib.util.MissingWeightsError, match='resnet50'):
        Teacher('resnet50', str(tmp_path / 'missing.safetensors'))
    with pytest.raises(ValueError, match='Unknown timm model'):
        Teacher('no_such_model_xyz', random_init=True)

def test_compute_embeddings_order(teacher):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, [24, 24, 3], dtype=np.uint8) for _ in range(7)]
    emb = compute_embeddings(teacher, iter(imgs), 7, batch_size=3, dtype=np.float32, progress=False)
    ref = teacher(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match='expected 8'):
        compute_embeddings(teacher, iter(imgs), 8, progress=False)
