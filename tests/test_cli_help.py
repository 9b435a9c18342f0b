"""`--help` of every top-level CLI matches docs/<cli>-help.txt (regenerate with UPDATE_HELP_DOCS=1)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, 'docs')

# (doc name, module, expression for the click command). train.py builds its command after loading plugins; the 3DGP
# plugin is named explicitly so that the text is the installed package's (entry point) whether or not it is installed.
CLIS = [
    ('train', 'train', "train.make_cli(['eg3d_ext.plugin'])"),
    ('dataset_tool', 'dataset_tool', 'dataset_tool.main'),
    ('calc_metrics', 'calc_metrics', 'calc_metrics.calc_metrics'),
    ('gen_samples', 'gen_samples', 'gen_samples.generate_images'),
    ('gen_videos', 'gen_videos', 'gen_videos.generate_videos'),
    ('legacy', 'legacy', 'legacy.main'),
    ('viewer', 'viewer', 'viewer.main'),
    ('shape_utils', 'shape_utils', 'shape_utils.convert_main'),
]

# One fresh process renders every help text: no registry state leaks in from other tests, and torch loads once.
_RENDER = r'''
import importlib, json, os, sys
os.environ['COLUMNS'] = '80'  # click wraps to min(terminal width, 80) - 2; fix it for reproducible text
sys.path.insert(0, sys.argv[1])
import click
out = {}
for name, module, expr in json.loads(sys.argv[2]):
    cmd = eval(expr, {module: importlib.import_module(module)})
    ctx = click.Context(cmd, info_name=f'{module}.py')
    out[name] = cmd.get_help(ctx) + '\n'  # exactly what `python <module>.py --help` prints
    for sub_name, sub in sorted(getattr(cmd, 'commands', {}).items()):
        out[f'{name}-{sub_name}'] = sub.get_help(click.Context(sub, info_name=sub_name, parent=ctx)) + '\n'
print(json.dumps(out))
'''

@pytest.fixture(scope='module')
def help_texts():
    env = dict(os.environ, EG3D_TRUST_PICKLES='1')
    p = subprocess.run([sys.executable, '-c', _RENDER, ROOT, json.dumps(CLIS)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])

def test_every_cli_and_subcommand_is_documented(help_texts):
    # dataset_tool's and legacy's subcommands are found through click, so a new one needs its own file.
    assert {'dataset_tool-convert', 'legacy-convert', 'legacy-info'} <= set(help_texts)
    if os.environ.get('UPDATE_HELP_DOCS') == '1':
        for doc, text in help_texts.items():
            with open(os.path.join(DOCS, f'{doc}-help.txt'), 'w') as f:
                f.write(text)
    stale = sorted(f for f in os.listdir(DOCS) if f.endswith('-help.txt') and f[:-len('-help.txt')] not in help_texts)
    assert not stale, f'help files of CLIs that no longer exist: {stale}'
    mismatched = []
    for doc, text in help_texts.items():
        path = os.path.join(DOCS, f'{doc}-help.txt')
        if not os.path.isfile(path) or open(path).read() != text:
            mismatched.append(doc)
    assert not mismatched, f'docs/<cli>-help.txt out of date for {mismatched}; regenerate with UPDATE_HELP_DOCS=1'

def test_help_names_the_cli_and_its_options(help_texts):
    for name, module, _ in CLIS:
        assert help_texts[name].startswith(f'Usage: {module}.py'), name
        assert '--help' in help_texts[name]
    assert '--cfg' in help_texts['train'] and '3dgp' in help_texts['train']  # plugin presets are listed
