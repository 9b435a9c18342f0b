"""dataset_tool check: a good zip passes; each kind of broken zip is reported with a clear message."""

import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from eg3d_ext.datasets import check, synthetic, zip_writer as zw

@pytest.fixture(scope='module')
def good_zip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('chk') / 'good.zip')
    synthetic.build_synthetic(path, num_images=6, resolution=32, workers=1, progress=False)
    return path

def mutate(src: str, dest: str, drop=(), replace=None) -> str:
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, 'w') as zout:
        for n in zin.namelist():
            if n not in drop:
                zout.writestr(n, replace.get(n, zin.read(n)))
        for n, data in replace.items():
            if n not in zin.namelist():
                zout.writestr(n, data)
    return dest

def png(arr) -> bytes:
    buf = io.BytesIO(); PIL.Image.fromarray(arr).save(buf, format='png'); return buf.getvalue()

def test_good_zip(good_zip):
    summary, problems = check.check_dataset(good_zip)
    assert problems == []
    assert summary['num_images'] == 6 and summary['depth_maps'] == 6 and summary['sizes'] == {'32x32': 6}
    assert summary['cameras'] == 6 and summary['labels'].startswith('class')
    res = CliRunner().invoke(dataset_tool.main, ['check', good_zip])
    assert res.exit_code == 0 and 'OK' in res.output

def test_bad_zips(good_zip, tmp_path):
    meta = json.loads(zipfile.ZipFile(good_zip).read('dataset.json'))
    img1, dep2 = '00000/img00000001.png', '00000/img00000002_depth.png'
    cases = {
        'corrupt': (dict(replace={img1: b'garbage'}), 'corrupt or truncated'),
        'rgba': (dict(replace={img1: png(np.zeros([32, 32, 4], np.uint8))}), 'image mode RGBA'),
        'size': (dict(replace={img1: png(np.zeros([16, 16, 3], np.uint8))}), 'different sizes'),
        'depth_size': (dict(replace={dep2: png(np.zeros([16, 16], np.uint16))}), 'depth map is 16x16 but the image is 32x32'),
        'depth_missing': (dict(drop=[dep2]), 'only 5 of 6 images have a depth map'),
        'labels': (dict(replace={'dataset.json': json.dumps(dict(meta, labels=meta['labels'][:4])).encode()}), '2 images have no entry'),
        'label_kind': (dict(replace={'dataset.json': json.dumps(dict(meta, labels=[[n, [0.5]] if i == 0 else [n, v] for i, (n, v) in enumerate(meta['labels'])])).encode()}), 'inconsistent'),
        'embeddings': (dict(replace={'embeddings.npy': zw.npy_bytes(np.zeros([5, 8], np.float16))}), r'shape \[5, 8\], expected \[6, D\]'),
    }
    for name, (kwargs, pattern) in cases.items():
        path = mutate(good_zip, str(tmp_path / f'{name}.zip'), **kwargs)
        _summary, problems = check.check_dataset(path)
        assert any(__import__('re').search(pattern, p) for p in problems), (name, problems)
    res = CliRunner().invoke(dataset_tool.main, ['check', str(tmp_path / 'depth_size.zip')])
    assert res.exit_code == 1 and 'problem' in res.output and 'Traceback' not in res.output
    (tmp_path / 'notzip.zip').write_bytes(b'nope')
    res = CliRunner().invoke(dataset_tool.main, ['check', str(tmp_path / 'notzip.zip')])
    assert res.exit_code == 1 and 'not a readable zip' in res.output
