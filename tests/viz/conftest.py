"""Fixtures for the viewer tests: tiny random-init EG3D / 3DGP pickles, their .safetensors twins, and a running viewer
on a free local port."""

import json

import pytest

from tests._tiny_generators import tiny_3dgp_G, tiny_eg3d_G, write_pickle

#----------------------------------------------------------------------------

@pytest.fixture(scope='session')
def eg3d_pkl(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp('viz-eg3d-run')
    with open(run_dir / 'training_options.json', 'w') as f:
        json.dump(dict(batch_size=4, gamma=1.0, cfg='tiny'), f)
    tsk = dict(class_name='training.dataset.ImageFolderDataset', path='tiny.zip', resolution=128)
    return write_pickle(tiny_eg3d_G(), run_dir / 'network-snapshot-000000.pkl', tsk)

@pytest.fixture(scope='session')
def gp_pkl(tmp_path_factory):
    return write_pickle(tiny_3dgp_G(), tmp_path_factory.mktemp('viz-3dgp') / '3dgp-tiny.pkl')

@pytest.fixture(scope='session')
def safetensors_files(tmp_path_factory):
    """{'EG3D': path, '3DGP': path}: the tiny generators as weights-only files (what `legacy.py convert` writes)."""
    import safe_weights
    out = tmp_path_factory.mktemp('viz-safetensors')
    files = {}
    for kind, G in (('EG3D', tiny_eg3d_G()), ('3DGP', tiny_3dgp_G())):
        files[kind] = str(out / f'{kind}.safetensors')
        safe_weights.save_safetensors(dict(G=G, G_ema=G, training_set_kwargs=dict(path=f'{kind}.zip')), files[kind])
    return files

@pytest.fixture(scope='session')
def viewer(eg3d_pkl, tmp_path_factory):
    """A viewer serving the tiny EG3D pickle on a free loopback port, shared by the server and browser tests."""
    from viz.server import ViewerServer
    server = ViewerServer(network=eg3d_pkl, host='127.0.0.1', port=0, device='cpu',
                          outdir=str(tmp_path_factory.mktemp('viz-out')))
    server.start()
    info = server.wait_loaded(timeout=60)
    assert info['status'] == 'ready', info
    yield server
    server.close()

#----------------------------------------------------------------------------
