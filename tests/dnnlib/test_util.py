"""Tests for dnnlib.util: EasyDict, formatting, name resolution, Logger, cache dirs, open_url, atomic_write, append_jsonl."""

import functools
import hashlib
import http.server
import io
import os
import pickle
import sys
import threading

import numpy as np
import pytest

import dnnlib
from dnnlib import util

#----------------------------------------------------------------------------

def test_easydict_attribute_access_and_pickle():
    d = dnnlib.EasyDict(a=1)
    assert dnnlib.EasyDict is util.EasyDict
    d.b = 2
    assert d == {'a': 1, 'b': 2} and d.a == 1 and d['b'] == 2
    del d.a
    assert 'a' not in d
    with pytest.raises(AttributeError):
        _ = d.missing
    with pytest.raises(AttributeError):
        del d.missing
    data = pickle.dumps(d)
    assert b'dnnlib.util' in data and b'EasyDict' in data # the global EG3D pickles reference
    e = pickle.loads(data)
    assert type(e) is util.EasyDict and e == d

def test_format_time():
    assert util.format_time(5) == '5s'
    assert util.format_time(65) == '1m 05s'
    assert util.format_time(3725) == '1h 02m 05s'
    assert util.format_time(90061) == '1d 01h 01m'
    assert util.format_time_brief(5) == '5s'
    assert util.format_time_brief(65) == '1m 05s'
    assert util.format_time_brief(3725) == '1h 02m'
    assert util.format_time_brief(90061) == '1d 01h'

def test_name_resolution():
    import os.path as osp
    assert util.get_obj_by_name('os.path.join') is osp.join
    assert util.get_obj_by_name('np.float32') is np.float32
    module, local = util.get_module_from_obj_name('dnnlib.util.EasyDict')
    assert module is util and local == 'EasyDict'
    assert util.call_func_by_name(3, 4, func_name='operator.add') == 7
    obj = util.construct_class_by_name(class_name='dnnlib.util.EasyDict', x=1)
    assert isinstance(obj, util.EasyDict) and obj.x == 1
    with pytest.raises(ImportError, match='no_such_module'):
        util.get_obj_by_name('no_such_module.Foo')
    with pytest.raises(ImportError):
        util.get_obj_by_name('dnnlib.util.NoSuchClass')
    assert util.is_top_level_function(util.format_time)
    assert util.get_top_level_function_name(util.format_time) == 'dnnlib.util.format_time'

def test_name_resolution_surfaces_broken_module(tmp_path, monkeypatch):
    # A module that exists but fails to import must not be reported as "not found".
    (tmp_path / 'broken_mod_for_test.py').write_text('import definitely_missing_dependency_xyz\nX = 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match='definitely_missing_dependency_xyz'):
        util.get_obj_by_name('broken_mod_for_test.X')

def test_misc_helpers():
    assert util.tuple_product((2, 3, 4)) == 24
    dtype, ctype = util.get_dtype_and_ctype('float32')
    assert dtype == np.float32 and ctype.__name__ == 'c_float'
    assert util.is_pickleable([1, 'a']) and not util.is_pickleable(lambda: 0)

#----------------------------------------------------------------------------

def test_logger_tees_and_restores(tmp_path, capsys):
    log = tmp_path / 'log.txt'
    log.write_text('old\n')
    old_stdout, old_stderr = sys.stdout, sys.stderr
    with util.Logger(str(log), file_mode='a') as logger:
        assert sys.stdout is logger and sys.stderr is logger
        print('hello')
        sys.stderr.write(b'bytes too\n'.decode())
        logger.write(b'raw bytes\n')
    assert sys.stdout is old_stdout and sys.stderr is old_stderr
    assert log.read_text() == 'old\nhello\nbytes too\nraw bytes\n'
    assert 'hello' in capsys.readouterr().out

def test_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(util, '_dnnlib_cache_dir', None)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'env'))
    assert util.make_cache_dir_path('a', 'b') == os.path.join(str(tmp_path / 'env'), 'a', 'b')
    monkeypatch.delenv('DNNLIB_CACHE_DIR')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert util.make_cache_dir_path('x') == os.path.join(str(tmp_path / 'home'), '.cache', 'dnnlib', 'x')
    util.set_cache_dir(str(tmp_path / 'explicit'))
    assert dnnlib.make_cache_dir_path('y') == os.path.join(str(tmp_path / 'explicit'), 'y')

#----------------------------------------------------------------------------

def test_atomic_write(tmp_path):
    path = tmp_path / 'out.bin'
    with util.atomic_write(path) as f:
        f.write(b'first')
        assert not path.exists() # nothing visible until the context exits
    assert path.read_bytes() == b'first'
    with pytest.raises(RuntimeError):
        with util.atomic_write(path) as f:
            f.write(b'partial')
            raise RuntimeError('boom')
    assert path.read_bytes() == b'first' # old content kept
    assert sorted(os.listdir(tmp_path)) == ['out.bin'] # temp file cleaned up
    with util.atomic_write(tmp_path / 'text.txt', 'w') as f:
        f.write('text')
    assert (tmp_path / 'text.txt').read_text() == 'text'
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(tmp_path / 'text.txt').st_mode & 0o777 == 0o666 & ~umask # not mkstemp's 0600
    with pytest.raises(ValueError):
        with util.atomic_write(path, 'rb'):
            pass

def _append_lines(path, writer, count):
    for i in range(count):
        util.append_jsonl(path, dict(writer=writer, i=i))

def test_append_jsonl_drops_torn_line_and_serialises_writers(tmp_path):
    import json, multiprocessing
    path = str(tmp_path / 'metric-x.jsonl')
    with open(path, 'wb') as f:
        f.write(b'{"a": 1}\n{"torn": ')
    util.append_jsonl(path, dict(b=2))
    assert [json.loads(l) for l in open(path)] == [dict(a=1), dict(b=2)]
    # A training run and calc_metrics.py may append to the same file: read-modify-rename must not lose lines.
    procs = [multiprocessing.get_context('fork').Process(target=_append_lines, args=(path, k, 40)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    rows = [json.loads(l) for l in open(path)][2:]
    assert sorted((r['writer'], r['i']) for r in rows) == [(k, i) for k in range(3) for i in range(40)]
    assert sorted(os.listdir(tmp_path)) == ['metric-x.jsonl'] # no lock or temp files left

#----------------------------------------------------------------------------

def test_is_url():
    assert util.is_url('https://example.com/a.pkl')
    assert not util.is_url('/some/path.pkl')
    assert not util.is_url('file:///tmp/x')
    assert util.is_url('file:///tmp/x', allow_file_urls=True)
    assert not util.is_url(123)

def test_open_url_local(tmp_path):
    path = tmp_path / 'w.pkl'
    path.write_bytes(b'abc')
    with util.open_url(str(path)) as f:
        assert f.read() == b'abc'
    with util.open_url(path.as_uri()) as f:
        assert f.read() == b'abc'
    assert util.open_url(path.as_uri(), return_filename=True) == str(path)
    with pytest.raises(util.MissingWeightsError, match='nope.pkl'):
        util.open_url(str(tmp_path / 'nope.pkl'))
    with pytest.raises(FileNotFoundError): # MissingWeightsError is a FileNotFoundError
        util.open_url((tmp_path / 'nope.pkl').as_uri())

@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / 'www'
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args, **kwargs: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # is_url() requires a dotted host name; 127.0.0.1 qualifies.
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()

def test_open_url_download_and_cache(tmp_path, http_server, capsys):
    root, base = http_server
    (root / 'net work.pkl').write_bytes(b'weights')
    url = base + '/net%20work.pkl'
    cache = tmp_path / 'cache'
    with util.open_url(url, cache_dir=str(cache)) as f:
        assert f.read() == b'weights'
    expected = cache / f'{hashlib.md5(url.encode()).hexdigest()}_net_20work.pkl'
    assert expected.read_bytes() == b'weights'
    assert util.url_cache_path(url, str(cache)) == str(expected)
    (root / 'net work.pkl').unlink() # now served only from the cache
    assert util.open_url(url, cache_dir=str(cache), return_filename=True) == str(expected)
    assert capsys.readouterr().out.count('Downloading') == 1 # the second call did not download

def test_open_url_missing_names_url_and_path(tmp_path, http_server, monkeypatch):
    _, base = http_server
    url = base + '/missing.pkl'
    cache = tmp_path / 'cache'
    expected = util.url_cache_path(url, str(cache))
    with pytest.raises(util.MissingWeightsError) as info:
        util.open_url(url, cache_dir=str(cache), num_attempts=2, verbose=False)
    msg = str(info.value)
    assert url in msg and expected in msg and 'HTTP 404' in msg
    # Offline mode: no network attempt, same clear message; a file placed by hand is then used.
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    with pytest.raises(util.MissingWeightsError, match='offline'):
        util.open_url(url, cache_dir=str(cache), verbose=False)
    os.makedirs(os.path.dirname(expected))
    with open(expected, 'wb') as f:
        f.write(b'manual')
    with util.open_url(url, cache_dir=str(cache)) as f:
        assert f.read() == b'manual'

def test_open_url_no_cache_returns_bytes(tmp_path, http_server):
    root, base = http_server
    (root / 'a.bin').write_bytes(b'xyz')
    f = util.open_url(base + '/a.bin', cache_dir=str(tmp_path / 'c'), cache=False, verbose=False)
    assert isinstance(f, io.BytesIO) and f.read() == b'xyz'
    assert not (tmp_path / 'c').exists()
    with pytest.raises(ValueError):
        util.open_url(base + '/a.bin', cache=False, return_filename=True)

#----------------------------------------------------------------------------
