"""RGBDDataset: extras (depth, embeddings), x-flip, memory-mapped embeddings, clear errors, DataLoader use."""

import io
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from eg3d_ext.dataset_rgbd import RGBDDataset
from eg3d_ext.datasets import synthetic, zip_writer as zw

@pytest.fixture(scope='module')
def rgbd_zip(tmp_path_factory):
    d = tmp_path_factory.mktemp('rgbd')
    path = str(d / 'syn.zip')
    synthetic.build_synthetic(path, num_images=5, resolution=32, workers=1, progress=False)
    emb = np.random.default_rng(0).normal(size=[5, 7]).astype(np.float16)
    zw.rewrite_zip(path, path, lambda n: True, lambda w: w.add_npy(zw.EMBEDDINGS_NAME, emb), overwrite=True)
    return path, emb

def rewrite(src, dest, drop=(), replace=None):
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, 'w') as zout:
        for n in zin.namelist():
            if n not in drop:
                zout.writestr(n, replace.get(n, zin.read(n)))
    return dest

def test_items_and_xflip(rgbd_zip):
    path, emb = rgbd_zip
    ds = RGBDDataset(path, use_labels=True, xflip=True)
    assert len(ds) == 10 and ds.has_depth and ds.has_embeddings and ds.embedding_dim == 7 and ds.label_dim == 6
    zf = zipfile.ZipFile(path)
    for i in (1, 6):
        img, label, extras = ds[i]
        raw = np.array(PIL.Image.open(io.BytesIO(zf.read(zw.depth_fname(zw.image_fname(1)))))).astype(np.float64)
        ref = raw / 65536 * 2 - 1
        if i == 6: # second half = mirrored copy of the first
            ref = ref[:, ::-1]
            np.testing.assert_array_equal(img, ds[1][0][:, :, ::-1])
        np.testing.assert_allclose(extras['depth'][0].numpy(), ref, atol=1e-6)
        assert extras['depth'].dtype == torch.float32 and extras['depth'].min() >= -1 and extras['depth'].max() < 1
        np.testing.assert_array_equal(extras['embedding'].numpy(), emb[1].astype(np.float32)) # not flipped
        np.testing.assert_array_equal(label, ds[1][1])
    assert isinstance(ds._get_embeddings(), np.memmap) # uncompressed member is memory-mapped, not copied

def test_dataloader_and_pickle(rgbd_zip):
    path, _ = rgbd_zip
    ds = pickle.loads(pickle.dumps(RGBDDataset(path, use_labels=True)))
    img, label, extras = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert img.shape == (4, 3, 32, 32) and label.shape == (4, 6)
    assert extras['depth'].shape == (4, 1, 32, 32) and extras['embedding'].shape == (4, 7)

def test_optional_extras(rgbd_zip, tmp_path):
    path, _ = rgbd_zip
    ds = RGBDDataset(path, use_depth=False, use_embeddings=False)
    assert ds[0][2] == {} and len(ds) == 5 # depth maps are not counted as images
    plain = rewrite(path, str(tmp_path / 'plain.zip'), drop=[zw.EMBEDDINGS_NAME] + [zw.depth_fname(zw.image_fname(i)) for i in range(5)])
    assert RGBDDataset(plain)[0][2] == {}
    with pytest.raises(IOError, match='embeddings are required'):
        RGBDDataset(plain, require_embeddings=True)
    with pytest.raises(IOError, match='5 of 5 images have no depth map'):
        RGBDDataset(plain, require_depth=True)
    np.save(tmp_path / 'e.npy', np.ones([5, 3], np.float32))
    assert RGBDDataset(plain, embeddings_path=str(tmp_path / 'e.npy'))[4][2]['embedding'].tolist() == [1, 1, 1]

def test_errors(rgbd_zip, tmp_path):
    path, _ = rgbd_zip
    d2 = zw.depth_fname(zw.image_fname(2))
    with pytest.raises(IOError, match='1 of 5 images have no depth map'):
        RGBDDataset(rewrite(path, str(tmp_path / 'a.zip'), drop=[d2]))
    buf = io.BytesIO(); PIL.Image.fromarray(np.zeros([16, 16], np.uint16)).save(buf, format='png')
    ds = RGBDDataset(rewrite(path, str(tmp_path / 'b.zip'), replace={d2: buf.getvalue()}))
    with pytest.raises(IOError, match='is 16x16 but images are 32x32'):
        ds[2]
    with pytest.raises(IOError, match=r"depth map '00000/img00000002_depth.png': cannot decode"):
        RGBDDataset(rewrite(path, str(tmp_path / 'd.zip'), replace={d2: b'not a png'}))[2]

def test_8bit_depth_scaled(rgbd_zip, tmp_path):
    """8-bit depth maps (as some 3DGP data ships) are read on the 16-bit scale: v * 256."""
    path, _ = rgbd_zip
    d8 = np.arange(32 * 32, dtype=np.int64).reshape(32, 32).astype(np.uint8)
    buf = io.BytesIO(); PIL.Image.fromarray(d8).save(buf, format='png')
    ds = RGBDDataset(rewrite(path, str(tmp_path / 'e.zip'), replace={zw.depth_fname(zw.image_fname(3)): buf.getvalue()}))
    np.testing.assert_allclose(ds[3][2]['depth'][0].numpy(), d8.astype(np.float64) * 256 / 65536 * 2 - 1, atol=1e-6)
    with pytest.raises(IOError, match=r'embeddings have shape \[4, 7\]'):
        RGBDDataset(rewrite(path, str(tmp_path / 'c.zip'), replace={zw.EMBEDDINGS_NAME: zw.npy_bytes(np.zeros([4, 7], np.float16))}))
