"""Layering (style rec. 3): no core module (dnnlib, torch_utils, training, metrics) refers to the 3DGP extension;
the core reaches plugins only through dnnlib.registry."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = ('dnnlib', 'torch_utils', 'training', 'metrics')
EXT = 'eg3d_ext'

def _core_files():
    for pkg in CORE:
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, pkg)):
            for name in sorted(files):
                if name.endswith('.py'):
                    yield os.path.join(dirpath, name)

def _ext_references(path):
    """(line, what) for every import of eg3d_ext and every dotted-name string that starts with it."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            hits += [(node.lineno, f'import {a.name}') for a in node.names if a.name.split('.')[0] == EXT]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or '').split('.')[0] == EXT:
            hits.append((node.lineno, f'from {node.module} import ...'))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # importlib.import_module('eg3d_ext.x'), class_name='eg3d_ext.x.Y', ... (docstrings are prose, not names)
            if node.value.split('.')[0] == EXT or node.value.split(':')[0].split('.')[0] == EXT:
                hits.append((node.lineno, repr(node.value)))
    return hits

def test_core_files_exist():
    files = list(_core_files())
    assert len(files) > 30 and any(f.endswith(os.path.join('training', 'training_loop.py')) for f in files)

def test_core_never_names_the_extension():
    bad = [f'{os.path.relpath(p, ROOT)}:{line}: {what}' for p in _core_files() for line, what in _ext_references(p)]
    assert not bad, 'core modules must reach eg3d_ext through dnnlib.registry:\n' + '\n'.join(bad)

def test_checker_catches_violations(tmp_path):
    p = tmp_path / 'bad.py'
    p.write_text('import eg3d_ext.plugin\nfrom eg3d_ext import presets\nx = dict(class_name="eg3d_ext.generator.Generator")\n'
                 'import eg3d_extra\n"""eg3d_ext is mentioned in prose only"""\n')
    assert [line for line, _ in _ext_references(str(p))] == [1, 2, 3]
