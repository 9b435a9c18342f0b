"""Teacher embeddings: timm backbone features, timm's eval transform, input conventions, local weights."""

import numpy as np
import pytest
import timm
import torch

import dnnlib
from eg3d_ext.datasets.embeddings import Teacher

MODEL = 'resnet10t' # tiny timm ResNet, random init

@pytest.fixture(scope='module')
def teacher():
    torch.manual_seed(0)
    return Teacher(MODEL, None, 'cpu', input_size=64, random_init=True)

def test_output_and_input_conventions(teacher):
    x = torch.randint(0, 256, [3, 3, 40, 40], dtype=torch.uint8)
    out = teacher(x)
    assert out.shape == (3, teacher.dim) and teacher.dim == teacher.model.num_features == 512
    assert teacher.preprocess(x).shape == (3, 3, 64, 64)
    with torch.no_grad():
        ref = teacher.model.forward_head(teacher.model.forward_features(teacher.preprocess(x)), pre_logits=True)
    torch.testing.assert_close(out, ref)
    # Float input in [-1, 1] (training convention) gives the same features as uint8.
    torch.testing.assert_close(teacher(x.float() / 127.5 - 1), out, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match='expects images'):
        teacher(x[:, :1])

@pytest.mark.parametrize('model_name', ['resnet50', MODEL])
def test_preprocess_matches_timm_eval_transform(model_name):
    """Same pixels as timm's own PIL eval transform (3DGP's extract_features.py): resize short side to
    input/crop_pct, center-crop, normalise. Only PIL-vs-torch resampling rounding may differ."""
    import PIL.Image
    import skimage.data
    from timm.data import create_transform, resolve_data_config
    t = Teacher(model_name, random_init=True)
    assert t.input_size == {'resnet50': 224, MODEL: 176}[model_name] # the model's own eval size
    transform = create_transform(**resolve_data_config({}, model=t.model))
    for img in (skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()[:, :300]): # square, wide, tall
        ref = transform(PIL.Image.fromarray(img))[None]
        ours = t.preprocess(torch.from_numpy(img).permute(2, 0, 1)[None])
        assert ours.shape == ref.shape == (1, 3, t.input_size, t.input_size)
        assert (ours - ref).abs().mean() < 0.01 # a one-pixel shift or a missed crop gives > 0.05

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
    with torch.no_grad():
        torch.testing.assert_close(t(x), src(t.preprocess(x)))
    torch.save(timm.create_model('resnet18', pretrained=False).state_dict(), str(tmp_path / 'other.pth'))
    with pytest.raises(IOError, match='lacks'):
        Teacher(MODEL, str(tmp_path / 'other.pth'), 'cpu')

def test_missing_weights(tmp_path):
    with pytest.raises(dnnlib.util.MissingWeightsError, match='resnet50'):
        Teacher('resnet50', str(tmp_path / 'missing.safetensors'))
    with pytest.raises(ValueError, match='Unknown timm model'):
        Teacher('no_such_model_xyz', random_init=True)
