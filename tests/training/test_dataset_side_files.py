"""training.dataset.ImageFolderDataset with RGB-D side files (`*_depth.png`) and forked DataLoader workers."""

import io
import json
import os
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from training.dataset import ImageFolderDataset

#----------------------------------------------------------------------------

def _png(arr):
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format='png', compress_level=0)
    return buf.getvalue()

def _rgbd_zip(path, n, res=8, seed=0):
    """EG3D-layout zip with a 16-bit depth PNG beside every image, a macOS fork file, labels and embeddings."""
    rng = np.random.RandomState(seed)
    imgs = [rng.randint(0, 256, (res, res, 3), dtype=np.uint8) for _ in range(n)]
    names = [f'{i // 1000:05d}/img{i:08d}.png' for i in range(n)]
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
        for name, img in zip(names, imgs):
            z.writestr(name, _png(img))
            z.writestr(name[:-4] + '_depth.png', _png(rng.randint(0, 65535, (res, res)).astype(np.uint16)))
        z.writestr('00000/._img00000000.png', b'\x00\x05\x16\x07 not an image')
        z.writestr('dataset.json', json.dumps({'labels': [[nm, i % 3] for i, nm in enumerate(names)]}))
        z.writestr('embeddings.npy', b'')
    return imgs, names

def test_depth_maps_and_junk_are_not_images(tmp_path):
    imgs, names = _rgbd_zip(tmp_path / 'rgbd.zip', 5)
    ds = ImageFolderDataset(str(tmp_path / 'rgbd.zip'), use_labels=True)
    assert len(ds) == 5 and ds.image_fnames == names # depth maps would otherwise double the set and lack labels
    assert ds.image_shape == [3, 8, 8] and ds.label_dim == 3
    for i in range(5):
        np.testing.assert_array_equal(ds[i][0], imgs[i].transpose(2, 0, 1))
    assert ds.has_file(names[0][:-4] + '_depth.png') and not ds.has_file('nope.png')
    with ds.open_file(names[1][:-4] + '_depth.png') as f:
        assert np.array(PIL.Image.open(io.BytesIO(f.read()))).shape == (8, 8)
    assert ds.zip_info('dataset.json').compress_type == zipfile.ZIP_STORED and ds.path == str(tmp_path / 'rgbd.zip')
    assert not ImageFolderDataset.is_image_file('a/img_depth.PNG') and ImageFolderDataset.is_image_file('a/img.JPG')
    # A folder dataset behaves the same.
    folder = tmp_path / 'folder'
    with zipfile.ZipFile(tmp_path / 'rgbd.zip') as z:
        z.extractall(folder)
    ds_dir = ImageFolderDataset(str(folder), use_labels=True)
    assert ds_dir.image_fnames == names and ds_dir.zip_info('dataset.json') is None

@pytest.mark.skipif(not hasattr(os, 'fork'), reason='fork start method only')
def test_forked_process_opens_its_own_zip(tmp_path):
    imgs, _ = _rgbd_zip(tmp_path / 'rgbd.zip', 4)
    ds = ImageFolderDataset(str(tmp_path / 'rgbd.zip'))
    parent_zip = ds._get_zipfile() # the parent has a live handle (as after __init__ / reads)
    pid = os.fork()
    if pid == 0: # child: must not reuse the inherited handle, whose file offset is shared with the parent
        ok = ds._get_zipfile() is not parent_zip and np.array_equal(ds[2][0], imgs[2].transpose(2, 0, 1))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert ds._get_zipfile() is parent_zip and not parent_zip.fp.closed # the child did not close the parent's

@pytest.mark.skipif(sys.platform != 'linux', reason='fork start method only')
def test_forked_dataloader_workers_read_correctly(tmp_path):
    """Two forked workers read concurrently; with a shared handle this fails with 'Bad CRC-32' or wrong pixels."""
    imgs, _ = _rgbd_zip(tmp_path / 'rgbd.zip', 48, res=32)
    ds = ImageFolderDataset(str(tmp_path / 'rgbd.zip'))
    ds[0] # open the handle in the parent before forking
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context='fork')
    for _ in range(2):
        for i, (img, _label) in enumerate(loader):
            np.testing.assert_array_equal(img[0].numpy(), imgs[i].transpose(2, 0, 1))

#----------------------------------------------------------------------------
