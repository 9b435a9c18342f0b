"""dataset_tool conversion: folder/tree/zip -> zip -> RGBDDataset round trip, bad inputs, atomic output, add-* commands."""

import errno
import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dataset_tool
from eg3d_ext.dataset_rgbd import RGBDDataset
from eg3d_ext.datasets import convert, zip_writer
from eg3d_ext.datasets.embeddings import Teacher

TEACHER = dict(random_init=True, input_size=32)

def make_tree(root, classes=('cat', 'dog'), per_class=3, hw=(32, 40), seed=0):
    """ImageNet-style tree; every image has a 16-bit <stem>_depth.png. Returns {relpath: (rgb, depth)}."""
    rng, out = np.random.default_rng(seed), {}
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            rgb = rng.integers(0, 256, [*hw, 3], dtype=np.uint8)
            depth = rng.integers(0, 65536, hw, dtype=np.uint16)
            PIL.Image.fromarray(rgb).save(os.path.join(root, c, f'{i}.png'))
            PIL.Image.fromarray(depth).save(os.path.join(root, c, f'{i}_depth.png'))
            out[f'{c}/{i}.png'] = (rgb, depth)
    return out

#----------------------------------------------------------------------------

def test_roundtrip_tree_zip_loader(tmp_path):
    src = make_tree(str(tmp_path / 'src'))
    dest = str(tmp_path / 'out.zip')
    torch.manual_seed(0)
    r = convert.convert_dataset(str(tmp_path / 'src'), dest, transform='center-crop', resolution=32, depth='file',
                                embeddings='resnet10t', teacher_kwargs=TEACHER, workers=2, batch_size=4, progress=False)
    assert r['num_images'] == 6 and r['resolution'] == 32
    ds = RGBDDataset(dest, use_labels=True, require_depth=True, require_embeddings=True)
    assert len(ds) == 6 and ds.has_onehot_labels and ds.label_dim == 2 and ds.embedding_dim == 512
    torch.manual_seed(0)
    teacher = Teacher('resnet10t', None, 'cpu', **TEACHER)
    stored = np.load(io.BytesIO(zipfile.ZipFile(dest).read('embeddings.npy')))
    for k, name in enumerate(sorted(src)):
        rgb, depth = src[name]
        img, label, extras = ds[k]
        # 32x40 -> centre crop to 32x32 at the same size: exact pixels, no resampling.
        np.testing.assert_array_equal(img, rgb[:, 4:36].transpose(2, 0, 1))
        np.testing.assert_array_equal(label, np.eye(2, dtype=np.float32)[int(name.startswith('dog'))])
        assert extras['depth'].shape == (1, 32, 32) and extras['depth'].dtype == torch.float32
        np.testing.assert_array_equal(np.rint((extras['depth'][0].numpy() + 1) / 2 * 65536).astype(np.int64), depth[:, 4:36])
        ref = teacher(torch.from_numpy(img[None])).numpy()[0].astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(extras['embedding'].numpy(), ref, rtol=2e-3, atol=1e-6) # batch-size float noise
        np.testing.assert_array_equal(extras['embedding'].numpy(), stored[k].astype(np.float32))
    meta = json.loads(zipfile.ZipFile(dest).read('dataset.json'))
    assert meta['class_names'] == ['cat', 'dog'] and meta['embeddings']['count'] == 6
    # EG3D zip as the source: labels, depth and pixels survive a second conversion byte for byte.
    dest2 = str(tmp_path / 'again.zip')
    convert.convert_dataset(dest, dest2, depth='file', progress=False)
    z1, z2 = zipfile.ZipFile(dest), zipfile.ZipFile(dest2)
    for n in z1.namelist():
        if n.endswith('.png'):
            assert z1.read(n) == z2.read(n), n
    assert json.loads(z2.read('dataset.json'))['labels'] == meta['labels']

def test_resize_max_images_and_npy_depth(tmp_path):
    os.makedirs(tmp_path / 'src')
    for i in range(4):
        PIL.Image.fromarray(np.full([64, 64, 3], 40 * i, np.uint8)).save(tmp_path / 'src' / f'{i}.jpg', quality=95)
        np.save(tmp_path / 'src' / f'{i}_depth.npy', np.linspace(1, 5, 64 * 64).reshape(64, 64) * (i + 1))
    dest = str(tmp_path / 'o.zip')
    r = convert.convert_dataset(str(tmp_path / 'src'), dest, resolution=32, depth='file', max_images=3, progress=False)
    assert r['num_images'] == 3
    ds = RGBDDataset(dest)
    assert ds.image_shape == [3, 32, 32] and not ds.has_labels
    d = ds[2][2]['depth'][0].numpy()
    assert d.min() == -1 and abs(d.max() - 1) < 1e-4 and np.all(np.diff(d[:, 0]) > 0) # min-max normalised, far = bottom
    ranges = dict(json.loads(zipfile.ZipFile(dest).read('dataset.json'))['depth']['ranges'])
    lo, hi = ranges['00000/img00000002.png']
    assert 3 <= lo < 3.2 and 14.8 < hi <= 15 # bilinear 2x downsampling averages the extremes

#----------------------------------------------------------------------------
# Bad inputs: each is one clear error.

def _one_image_dir(tmp_path, writer):
    d = tmp_path / 'bad'
    os.makedirs(d, exist_ok=True)
    PIL.Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(d / 'a.png')
    writer(d)
    return str(d)

@pytest.mark.parametrize('case,pattern', [
    ('corrupt', 'corrupt or truncated'),
    ('truncated', 'corrupt or truncated'),
    ('16bit', '16-bit'),
    ('depth_size', 'depth map is 8x8 but image'),
    ('missing_depth', 'no depth map found'),
    ('size_mismatch', 'earlier images are 16x16'),
])
def test_bad_images(tmp_path, case, pattern):
    def writer(d):
        buf = io.BytesIO(); PIL.Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(buf, format='jpeg')
        data = {'corrupt': b'\x89PNG\r\n\x1a\nnot really', 'truncated': buf.getvalue()[:len(buf.getvalue()) // 2]}.get(case)
        if data is not None:
            (d / 'b.jpg').write_bytes(data)
        elif case == '16bit':
            PIL.Image.fromarray(np.zeros([16, 16], np.uint16)).save(d / 'b.png')
        elif case == 'size_mismatch':
            PIL.Image.fromarray(np.zeros([32, 32, 3], np.uint8)).save(d / 'b.png')
        else:
            PIL.Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(d / 'b.png')
        for stem in ('a', 'b'):
            size = 8 if case == 'depth_size' and stem == 'b' else 32 if case == 'size_mismatch' and stem == 'b' else 16
            if not (case == 'missing_depth' and stem == 'b'):
                PIL.Image.fromarray(np.zeros([size, size], np.uint16)).save(d / f'{stem}_depth.png')
    src = _one_image_dir(tmp_path, writer)
    dest = str(tmp_path / 'o.zip')
    with pytest.raises((IOError, ValueError), match=pattern):
        convert.convert_dataset(src, dest, depth='file', progress=False)
    assert not os.path.exists(dest) and not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    # The CLI reports the same problem without a traceback; --skip-bad keeps the good image.
    res = CliRunner().invoke(dataset_tool.main, ['convert', '--source', src, '--dest', dest, '--depth', 'file'])
    assert res.exit_code == 1 and 'Error:' in res.output and 'Traceback' not in res.output
    r = convert.convert_dataset(src, dest, depth='file', skip_bad=True, progress=False)
    assert r['num_images'] == 1 and len(r['skipped']) == 1

def test_gray_and_rgba_are_converted(tmp_path):
    d = tmp_path / 's'; os.makedirs(d)
    PIL.Image.fromarray(np.full([16, 16], 77, np.uint8)).save(d / 'a.png')
    PIL.Image.fromarray(np.full([16, 16, 4], 99, np.uint8)).save(d / 'b.png')
    r = convert.convert_dataset(str(d), str(tmp_path / 'o.zip'), progress=False)
    assert r['notes'] == {'grayscale': 1, 'rgba': 1}
    ds = RGBDDataset(str(tmp_path / 'o.zip'))
    assert ds.image_shape == [3, 16, 16] and np.all(ds[0][0] == 77) and np.all(ds[1][0] == 99)

def test_missing_labels(tmp_path):
    d = tmp_path / 's'; os.makedirs(d)
    for n in ('a', 'b'):
        PIL.Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(d / f'{n}.png')
    (d / 'dataset.json').write_text(json.dumps({'labels': [['a.png', 1]]}))
    with pytest.raises(ValueError, match='no label for 1 of 2 images'):
        convert.convert_dataset(str(d), str(tmp_path / 'o.zip'), progress=False)
    r = convert.convert_dataset(str(d), str(tmp_path / 'o.zip'), labels='none', progress=False)
    assert r['num_images'] == 2

def test_existing_output_and_full_disk(tmp_path, monkeypatch):
    src = str(tmp_path / 'src'); make_tree(src, per_class=1)
    dest = tmp_path / 'o.zip'
    dest.write_bytes(b'precious')
    with pytest.raises(FileExistsError, match='--overwrite'):
        convert.convert_dataset(src, str(dest), progress=False)
    res = CliRunner().invoke(dataset_tool.main, ['convert', '--source', src, '--dest', str(dest)])
    assert res.exit_code == 1 and 'already exists' in res.output
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(zipfile.ZipFile, 'writestr', full)
    with pytest.raises(zip_writer.DiskFullError, match='No space left'):
        convert.convert_dataset(src, str(dest), overwrite=True, transform='center-crop', resolution=32, progress=False)
    assert dest.read_bytes() == b'precious' # the old file is untouched, no temp file left behind
    assert sorted(os.listdir(tmp_path)) == ['o.zip', 'src']

#----------------------------------------------------------------------------

def test_add_depth_and_embeddings_keep_images(tmp_path):
    from tests.eg3d_ext.datasets.test_depth_estimators import tiny_depth_anything_config
    src = str(tmp_path / 'src'); make_tree(src, per_class=2)
    path = str(tmp_path / 'o.zip')
    convert.convert_dataset(src, path, transform='center-crop', resolution=32, progress=False)
    before = {n: zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist() if not n.endswith('.json')}
    convert.add_to_zip(path, depth='depth-anything', depth_kwargs=dict(config=tiny_depth_anything_config(), input_size=28), progress=False)
    convert.add_to_zip(path, embeddings='resnet10t', teacher_kwargs=TEACHER, progress=False)
    zf = zipfile.ZipFile(path)
    assert all(zf.read(n) == b for n, b in before.items())
    ds = RGBDDataset(path, use_labels=True, require_depth=True, require_embeddings=True)
    _img, _label, extras = ds[3]
    assert extras['depth'].shape == (1, 32, 32) and extras['embedding'].shape == (512,)
    assert ds.label_dim == 2 # labels kept
    with pytest.raises(FileExistsError, match='already has depth'):
        convert.add_to_zip(path, depth='depth-anything', depth_kwargs=dict(config=tiny_depth_anything_config(), input_size=28), progress=False)
