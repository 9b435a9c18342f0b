"""Tests for training.dataset: folder/zip loading, labels, subsetting, x-flip, errors, pickling."""

import io
import json
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest

from training.dataset import ImageFolderDataset

#----------------------------------------------------------------------------

def _png(arr):
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format='png', compress_level=0)
    return buf.getvalue()

def make_zip(path, images, labels='none', extra=None):
    """images: list of HWC uint8 arrays; labels: 'none' | None (json null) | list aligned with images."""
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
        names = []
        for i, img in enumerate(images):
            name = f'{i // 1000:05d}/img{i:08d}.png'
            z.writestr(name, _png(img))
            names.append(name)
        if labels != 'none':
            z.writestr('dataset.json', json.dumps({'labels': None if labels is None else [[n, l] for n, l in zip(names, labels)]}))
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return names

def rand_images(n, h=8, w=8, c=3, seed=0):
    rnd = np.random.RandomState(seed)
    return [rnd.randint(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8) for _ in range(n)]

#----------------------------------------------------------------------------

def test_zip_vector_labels_roundtrip(tmp_path):
    imgs = rand_images(5)
    labels = [list(np.arange(25, dtype=np.float32) + i) for i in range(5)]
    make_zip(tmp_path / 'ds.zip', imgs, [[float(x) for x in l] for l in labels])
    ds = ImageFolderDataset(str(tmp_path / 'ds.zip'), use_labels=True)
    assert ds.name == 'ds' and len(ds) == 5 and ds.resolution == 8 and ds.num_channels == 3
    assert ds.label_dim == 25 and ds.has_labels and not ds.has_onehot_labels
    img, label = ds[3]
    assert img.dtype == np.uint8 and img.shape == (3, 8, 8)
    np.testing.assert_array_equal(img, imgs[3].transpose(2, 0, 1))
    np.testing.assert_allclose(label, labels[3])
    np.testing.assert_allclose(ds.get_label_std(), np.std(np.stack(labels), axis=0))

def test_dir_class_labels_onehot_and_grayscale(tmp_path):
    imgs = rand_images(4, c=1)
    d = tmp_path / 'folder'
    (d / 'sub').mkdir(parents=True)
    for i, img in enumerate(imgs):
        PIL.Image.fromarray(img).save(d / 'sub' / f'{i}.png')
    (d / 'dataset.json').write_text(json.dumps({'labels': [[f'sub/{i}.png', [2, 0, 1, 2][i]] for i in range(4)]}))
    ds = ImageFolderDataset(str(d), use_labels=True)
    assert ds.image_shape == [1, 8, 8] and ds.has_onehot_labels and ds.label_shape == [3]
    np.testing.assert_array_equal(ds.get_label(0), [0, 0, 1])
    np.testing.assert_array_equal(ds[1][1], [1, 0, 0])
    np.testing.assert_array_equal(ds[2][0][0], imgs[2])

def test_labels_disabled_or_null(tmp_path):
    make_zip(tmp_path / 'a.zip', rand_images(3), None)
    ds = ImageFolderDataset(str(tmp_path / 'a.zip'), use_labels=True)
    assert not ds.has_labels and ds.label_dim == 0 and ds[0][1].shape == (0,)
    make_zip(tmp_path / 'b.zip', rand_images(3), [[1.0, 2.0]] * 3)
    assert ImageFolderDataset(str(tmp_path / 'b.zip'), use_labels=False).label_dim == 0

def test_max_size_and_xflip(tmp_path):
    imgs = rand_images(10)
    make_zip(tmp_path / 'ds.zip', imgs, [[float(i)] for i in range(10)])
    ds = ImageFolderDataset(str(tmp_path / 'ds.zip'), use_labels=True, max_size=4, xflip=True, random_seed=3)
    assert len(ds) == 8
    raw = [ds.get_details(i).raw_idx for i in range(8)]
    assert raw[:4] == sorted(raw[:4]) and raw[:4] == raw[4:]
    expected = np.sort(np.random.RandomState(3).permutation(10)[:4])  # independent re-derivation of the subset
    assert raw[:4] == list(expected)
    img, label = ds[5]
    assert ds.get_details(5).xflip and not ds.get_details(1).xflip
    np.testing.assert_array_equal(img, imgs[raw[5]].transpose(2, 0, 1)[:, :, ::-1])
    assert label[0] == raw[5]

def test_pickle_drops_zip_handle(tmp_path):
    make_zip(tmp_path / 'ds.zip', rand_images(3), [[0.5]] * 3)
    ds = ImageFolderDataset(str(tmp_path / 'ds.zip'), use_labels=True)
    ds[0]
    assert ds._zipfile is not None
    state = ds.__getstate__()
    assert state['_zipfile'] is None and state['_raw_labels'] is None
    ds2 = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(ds2[2][0], ds[2][0])
    np.testing.assert_array_equal(ds2[2][1], [0.5])

#----------------------------------------------------------------------------
# Errors.

def test_bad_path(tmp_path):
    with pytest.raises(IOError, match='directory or zip'):
        ImageFolderDataset(str(tmp_path / 'missing.zip'))
    (tmp_path / 'x.txt').write_text('hi')
    with pytest.raises(IOError, match='directory or zip'):
        ImageFolderDataset(str(tmp_path / 'x.txt'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(IOError, match='No image files'):
        ImageFolderDataset(str(tmp_path / 'empty'))
    (tmp_path / 'bad.zip').write_bytes(b'not a zip')
    with pytest.raises(IOError, match='not a valid zip'):
        ImageFolderDataset(str(tmp_path / 'bad.zip'))

def test_missing_and_mismatched_labels(tmp_path):
    names = make_zip(tmp_path / 'a.zip', rand_images(3), 'none',
                     extra={'dataset.json': json.dumps({'labels': [['00000/img00000000.png', [1.0]]]})})
    ds = ImageFolderDataset(str(tmp_path / 'a.zip'), use_labels=True)
    with pytest.raises(ValueError, match=r'no label for 2 image.*img00000001'):
        ds.get_label(0)
    make_zip(tmp_path / 'b.zip', rand_images(2), [[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match='differ in length'):
        ImageFolderDataset(str(tmp_path / 'b.zip'), use_labels=True).label_dim
    assert names

def test_wrong_size_and_non_square(tmp_path):
    make_zip(tmp_path / 'a.zip', rand_images(2), None)
    with pytest.raises(IOError, match='expected 16x16'):
        ImageFolderDataset(str(tmp_path / 'a.zip'), resolution=16)
    make_zip(tmp_path / 'b.zip', rand_images(2, h=8, w=4), None)
    ds = ImageFolderDataset(str(tmp_path / 'b.zip'))
    with pytest.raises(IOError, match='square'):
        ds.resolution
    make_zip(tmp_path / 'c.zip', rand_images(1) + rand_images(1, h=4, w=4), None)
    ds = ImageFolderDataset(str(tmp_path / 'c.zip'))
    with pytest.raises(IOError, match='image 1 has shape'):
        ds[1]

#----------------------------------------------------------------------------
