"""Load network pickles of EG3D, StyleGAN2-ADA, StyleGAN3 and this codebase (incl. TF StyleGAN2 conversion); network
files by suffix (.safetensors via safe_weights.py); CLI to convert and to inspect pickles without running them."""

import copy
import io
import os
import pickle
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import click
import numpy as np
import torch

import dnnlib
from dnnlib import registry
from torch_utils import misc
from safe_weights import (canonical_class_name, inspect_pickle, load_network_safetensors,  # noqa: F401 -- re-exported
                          save_safetensors)

#----------------------------------------------------------------------------
# Module aliases: hooks for third-party pickles (e.g. 3DGP/EpiGRAF `src.*`), filled by plugins.

MODULE_ALIASES: Dict[str, str] = {}               # old module prefix -> new module prefix ('src.torch_utils' -> 'torch_utils')
CLASS_ALIASES: Dict[Tuple[str, str], Any] = {}    # (module, name) -> object or dotted name

def register_module_alias(old_prefix: str, new_prefix: str) -> None:
    """Unpickle classes of module `old_prefix[.x]` from `new_prefix[.x]` (e.g. 3DGP `src.training` names)."""
    MODULE_ALIASES[old_prefix] = new_prefix

def register_class_alias(module: str, name: str, target: Any) -> None:
    """Unpickle `module.name` as `target` (a class or a callable building the object)."""
    CLASS_ALIASES[(module, name)] = target

LOAD_HOOKS: List[Callable[[dict], dict]] = [] # data -> data after loading (e.g. wrap 3DGP generators in our interface)

def register_load_hook(fn: Callable[[dict], dict]) -> None:
    """Run `fn(data) -> data` on every loaded network dict (unless load_network_pkl(adapt=False))."""
    if fn not in LOAD_HOOKS:
        LOAD_HOOKS.append(fn)

def _alias_module(module: str) -> str:
    for old in sorted(MODULE_ALIASES, key=len, reverse=True):  # longest prefix wins
        if module == old or module.startswith(old + '.'):
            return MODULE_ALIASES[old] + module[len(old):]
    return module

#----------------------------------------------------------------------------

class _TFNetworkStub(dnnlib.EasyDict):
    pass

def _load_from_bytes_cpu(b: bytes) -> Any:
    # Storages saved on a GPU (e.g. EG3D's renderer.plane_axes attribute) must load on CPU-only hosts too.
    return torch.load(io.BytesIO(b), map_location='cpu', weights_only=False)

class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == 'dnnlib.tflib.network' and name == 'Network':
            return _TFNetworkStub
        if module == 'torch.storage' and name == '_load_from_bytes':
            return _load_from_bytes_cpu
        if (module, name) in CLASS_ALIASES:
            target = CLASS_ALIASES[(module, name)]
            return dnnlib.util.get_obj_by_name(target) if isinstance(target, str) else target
        mapped = _alias_module(module)
        try:
            return super().find_class(mapped, name)
        except ModuleNotFoundError as err:
            raise MissingModuleError(err.name or mapped, f'{module}.{name}') from err
        except AttributeError as err:
            raise MissingModuleError(mapped, f'{module}.{name}', f'module {mapped!r} has no attribute {name!r}') from err

class MissingModuleError(ImportError):
    """The pickle references a module (or a name in it) that this installation does not provide."""
    def __init__(self, module: str, ref: str, detail: str = ''):
        self.module = module
        super().__init__(detail or f'the pickle needs module {module!r} (for {ref}), which is not available here', name=module)

#----------------------------------------------------------------------------

def load_network_pkl(f, force_fp16: bool = False, adapt: bool = True) -> dict:
    """Returns dict(G, D, G_ema, training_set_kwargs, augment_pipe, ...) from any supported network pickle.
    adapt=False skips the LOAD_HOOKS (e.g. keeps a 3DGP generator as pickled instead of wrapping it)."""
    src = getattr(f, 'name', '<stream>')
    registry.load_plugins() # plugins register module aliases for their own pickle formats (e.g. 3DGP's `src.*`)
    try:
        data = _LegacyUnpickler(f).load()
    except MissingModuleError as err:
        raise IOError(f'{src}: {err}') from err
    except ModuleNotFoundError as err:  # raised while executing an embedded module source
        raise IOError(f'{src}: the pickle needs module {err.name!r}, which is not available here') from err
    except ImportError as err:
        raise IOError(f'{src}: embedded network code failed to import: {err}') from err
    except (EOFError, pickle.UnpicklingError, ValueError, IndexError, TypeError, KeyError, MemoryError) as err:
        # MemoryError: garbage bytes can decode as an opcode announcing a multi-GB object.
        raise IOError(f'{src}: not a valid network pickle (truncated or corrupt file?): {type(err).__name__}: {err}') from err

    # Legacy TensorFlow pickle => convert.
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(net, _TFNetworkStub) for net in data):
        tf_G, tf_D, tf_Gs = data
        data = dict(G=convert_tf_generator(tf_G), D=convert_tf_discriminator(tf_D), G_ema=convert_tf_generator(tf_Gs))

    if not isinstance(data, dict):
        raise IOError(f'{src}: expected a dict of networks, got {type(data).__name__}')
    data.setdefault('training_set_kwargs', None)
    data.setdefault('augment_pipe', None)

    # Validate contents.
    for key in ('G', 'D', 'G_ema'):
        if not isinstance(data.get(key), torch.nn.Module):
            raise IOError(f'{src}: key {key!r} is missing or not a torch.nn.Module (keys: {sorted(data)})')
    if not isinstance(data['training_set_kwargs'], (dict, type(None))):
        raise IOError(f'{src}: training_set_kwargs must be a dict or None')
    if not isinstance(data['augment_pipe'], (torch.nn.Module, type(None))):
        raise IOError(f'{src}: augment_pipe must be a torch.nn.Module or None')

    # Force FP16 (rebuild with num_fp16_res=4, conv_clamp=256 where that changes the constructor kwargs).
    if force_fp16:
        for key in ['G', 'D', 'G_ema']:
            old = data[key]
            kwargs = copy.deepcopy(old.init_kwargs)
            fp16_kwargs = kwargs.get('synthesis_kwargs', kwargs)
            fp16_kwargs.num_fp16_res = 4
            fp16_kwargs.conv_clamp = 256
            if kwargs != old.init_kwargs:
                new = type(old)(**kwargs).eval().requires_grad_(False)
                misc.copy_params_and_buffers(old, new, require_all=True)
                data[key] = new
    for hook in LOAD_HOOKS if adapt else []:
        data = hook(data)
    return data

#----------------------------------------------------------------------------
# TensorFlow StyleGAN2 / StyleGAN2-ADA pickles: (G, D, Gs) of dnnlib.tflib.network.Network.

def _collect_tf_params(tf_net: _TFNetworkStub) -> Dict[str, np.ndarray]:
    params = {}
    def recurse(prefix, net):
        for name, value in net.variables:
            params[prefix + name] = value
        for name, comp in net.components.items():
            recurse(prefix + name + '/', comp)
    recurse('', tf_net)
    return params

class _KwargReader:
    """Reads TF static_kwargs with defaults and remembers which names were consumed (others are an error)."""
    def __init__(self, tf_net: _TFNetworkStub):
        if tf_net.version < 4:
            raise ValueError('TensorFlow pickle version too low')
        self.kwargs, self.known = tf_net.static_kwargs, set()
    def __call__(self, name, default=None, none=None):
        self.known.add(name)
        val = self.kwargs.get(name, default)
        return val if val is not None else none
    def check(self):
        unknown = sorted(set(self.kwargs) - self.known)
        if unknown:
            raise ValueError('Unknown TensorFlow kwarg', unknown[0])

def _populate(module: torch.nn.Module, tf_params: Dict[str, np.ndarray], patterns: list) -> None:
    for name, value in misc.named_params_and_buffers(module):
        for pattern, fn in patterns:
            m = re.fullmatch(pattern, name)
            if m:
                if fn is not None:
                    value.copy_(torch.from_numpy(np.array(fn(*m.groups()))))
                break
        else:
            raise ValueError(f'Unexpected parameter name while converting TensorFlow pickle: {name}')

def convert_tf_generator(tf_G: _TFNetworkStub) -> torch.nn.Module:
    """A TF StyleGAN2(-ADA) generator stub -> training.networks_stylegan2.Generator with its weights."""
    kw = _KwargReader(tf_G)
    kwargs = dnnlib.EasyDict(
        z_dim=kw('latent_size', 512), c_dim=kw('label_size', 0), w_dim=kw('dlatent_size', 512),
        img_resolution=kw('resolution', 1024), img_channels=kw('num_channels', 3),
        channel_base=kw('fmap_base', 16384) * 2, channel_max=kw('fmap_max', 512),
        num_fp16_res=kw('num_fp16_res', 0), conv_clamp=kw('conv_clamp', None),
        architecture=kw('architecture', 'skip'), resample_filter=kw('resample_kernel', [1, 3, 3, 1]),
        use_noise=kw('use_noise', True), activation=kw('nonlinearity', 'lrelu'),
        mapping_kwargs=dnnlib.EasyDict(
            num_layers=kw('mapping_layers', 8), embed_features=kw('label_fmaps', None),
            layer_features=kw('mapping_fmaps', None), activation=kw('mapping_nonlinearity', 'lrelu'),
            lr_multiplier=kw('mapping_lrmul', 0.01), w_avg_beta=kw('w_avg_beta', 0.995, none=1)),
    )
    for name in ('truncation_psi', 'truncation_cutoff', 'style_mixing_prob', 'structure', 'conditioning', 'fused_modconv'):
        kw(name)  # tolerated, ignored
    kw.check()
    tf_params = _collect_tf_params(tf_G)
    if any(re.fullmatch(r'synthesis/ToRGB_lod\d+/.*', name) for name in tf_params):
        kwargs.architecture = 'orig'  # progressive-growing era pickle (EG3D's loader mis-assigns this)

    from training import networks_stylegan2
    G = networks_stylegan2.Generator(**kwargs).eval().requires_grad_(False)
    conv = lambda w: w.transpose(3, 2, 0, 1)        # HWIO -> OIHW
    conv_flip = lambda w: w[::-1, ::-1].transpose(3, 2, 0, 1)  # TF upsampling convs are spatially flipped
    noise_idx = lambda r, k: int(np.log2(int(r))) * 2 - 5 + k
    s = 'synthesis/{0}x{0}/'
    _populate(G, tf_params, [
        (r'mapping\.w_avg',                     lambda:   tf_params['dlatent_avg']),
        (r'mapping\.embed\.weight',             lambda:   tf_params['mapping/LabelEmbed/weight'].transpose()),
        (r'mapping\.embed\.bias',               lambda:   tf_params['mapping/LabelEmbed/bias']),
        (r'mapping\.fc(\d+)\.weight',           lambda i: tf_params[f'mapping/Dense{i}/weight'].transpose()),
        (r'mapping\.fc(\d+)\.bias',             lambda i: tf_params[f'mapping/Dense{i}/bias']),
        (r'synthesis\.b4\.const',               lambda:   tf_params['synthesis/4x4/Const/const'][0]),
        (r'synthesis\.b4\.conv1\.weight',       lambda:   conv(tf_params['synthesis/4x4/Conv/weight'])),
        (r'synthesis\.b4\.conv1\.bias',         lambda:   tf_params['synthesis/4x4/Conv/bias']),
        (r'synthesis\.b4\.conv1\.noise_const',  lambda:   tf_params['synthesis/noise0'][0, 0]),
        (r'synthesis\.b4\.conv1\.noise_strength', lambda: tf_params['synthesis/4x4/Conv/noise_strength']),
        (r'synthesis\.b4\.conv1\.affine\.weight', lambda: tf_params['synthesis/4x4/Conv/mod_weight'].transpose()),
        (r'synthesis\.b4\.conv1\.affine\.bias', lambda:   tf_params['synthesis/4x4/Conv/mod_bias'] + 1),
        (r'synthesis\.b(\d+)\.conv0\.weight',   lambda r: conv_flip(tf_params[s.format(r) + 'Conv0_up/weight'])),
        (r'synthesis\.b(\d+)\.conv0\.bias',     lambda r: tf_params[s.format(r) + 'Conv0_up/bias']),
        (r'synthesis\.b(\d+)\.conv0\.noise_const', lambda r: tf_params[f'synthesis/noise{noise_idx(r, 0)}'][0, 0]),
        (r'synthesis\.b(\d+)\.conv0\.noise_strength', lambda r: tf_params[s.format(r) + 'Conv0_up/noise_strength']),
        (r'synthesis\.b(\d+)\.conv0\.affine\.weight', lambda r: tf_params[s.format(r) + 'Conv0_up/mod_weight'].transpose()),
        (r'synthesis\.b(\d+)\.conv0\.affine\.bias', lambda r: tf_params[s.format(r) + 'Conv0_up/mod_bias'] + 1),
        (r'synthesis\.b(\d+)\.conv1\.weight',   lambda r: conv(tf_params[s.format(r) + 'Conv1/weight'])),
        (r'synthesis\.b(\d+)\.conv1\.bias',     lambda r: tf_params[s.format(r) + 'Conv1/bias']),
        (r'synthesis\.b(\d+)\.conv1\.noise_const', lambda r: tf_params[f'synthesis/noise{noise_idx(r, 1)}'][0, 0]),
        (r'synthesis\.b(\d+)\.conv1\.noise_strength', lambda r: tf_params[s.format(r) + 'Conv1/noise_strength']),
        (r'synthesis\.b(\d+)\.conv1\.affine\.weight', lambda r: tf_params[s.format(r) + 'Conv1/mod_weight'].transpose()),
        (r'synthesis\.b(\d+)\.conv1\.affine\.bias', lambda r: tf_params[s.format(r) + 'Conv1/mod_bias'] + 1),
        (r'synthesis\.b(\d+)\.torgb\.weight',   lambda r: conv(tf_params[s.format(r) + 'ToRGB/weight'])),
        (r'synthesis\.b(\d+)\.torgb\.bias',     lambda r: tf_params[s.format(r) + 'ToRGB/bias']),
        (r'synthesis\.b(\d+)\.torgb\.affine\.weight', lambda r: tf_params[s.format(r) + 'ToRGB/mod_weight'].transpose()),
        (r'synthesis\.b(\d+)\.torgb\.affine\.bias', lambda r: tf_params[s.format(r) + 'ToRGB/mod_bias'] + 1),
        (r'synthesis\.b(\d+)\.skip\.weight',    lambda r: conv_flip(tf_params[s.format(r) + 'Skip/weight'])),
        (r'.*\.resample_filter',                None),
        (r'.*\.act_filter',                     None),
    ])
    return G

def convert_tf_discriminator(tf_D: _TFNetworkStub) -> torch.nn.Module:
    """A TF StyleGAN2(-ADA) discriminator stub -> training.networks_stylegan2.Discriminator with its weights."""
    kw = _KwargReader(tf_D)
    kwargs = dnnlib.EasyDict(
        c_dim=kw('label_size', 0), img_resolution=kw('resolution', 1024), img_channels=kw('num_channels', 3),
        architecture=kw('architecture', 'resnet'), channel_base=kw('fmap_base', 16384) * 2,
        channel_max=kw('fmap_max', 512), num_fp16_res=kw('num_fp16_res', 0), conv_clamp=kw('conv_clamp', None),
        cmap_dim=kw('mapping_fmaps', None),
        block_kwargs=dnnlib.EasyDict(activation=kw('nonlinearity', 'lrelu'), resample_filter=kw('resample_kernel', [1, 3, 3, 1]),
                                     freeze_layers=kw('freeze_layers', 0)),
        mapping_kwargs=dnnlib.EasyDict(num_layers=kw('mapping_layers', 0), embed_features=kw('mapping_fmaps', None),
                                       layer_features=kw('mapping_fmaps', None), activation=kw('nonlinearity', 'lrelu'),
                                       lr_multiplier=kw('mapping_lrmul', 0.1)),
        epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=kw('mbstd_group_size', None),
                                        mbstd_num_channels=kw('mbstd_num_features', 1), activation=kw('nonlinearity', 'lrelu')),
    )
    kw('structure'); kw('conditioning')  # tolerated, ignored
    kw.check()
    tf_params = _collect_tf_params(tf_D)

    from training import networks_stylegan2
    D = networks_stylegan2.Discriminator(**kwargs).eval().requires_grad_(False)
    conv = lambda w: w.transpose(3, 2, 0, 1)  # D's down-sampling convs are not flipped
    _populate(D, tf_params, [
        (r'b(\d+)\.fromrgb\.weight',    lambda r:    conv(tf_params[f'{r}x{r}/FromRGB/weight'])),
        (r'b(\d+)\.fromrgb\.bias',      lambda r:    tf_params[f'{r}x{r}/FromRGB/bias']),
        (r'b(\d+)\.conv(\d+)\.weight',  lambda r, i: conv(tf_params[f'{r}x{r}/Conv{i}{["", "_down"][int(i)]}/weight'])),
        (r'b(\d+)\.conv(\d+)\.bias',    lambda r, i: tf_params[f'{r}x{r}/Conv{i}{["", "_down"][int(i)]}/bias']),
        (r'b(\d+)\.skip\.weight',       lambda r:    conv(tf_params[f'{r}x{r}/Skip/weight'])),
        (r'mapping\.embed\.weight',     lambda:      tf_params['LabelEmbed/weight'].transpose()),
        (r'mapping\.embed\.bias',       lambda:      tf_params['LabelEmbed/bias']),
        (r'mapping\.fc(\d+)\.weight',   lambda i:    tf_params[f'Mapping{i}/weight'].transpose()),
        (r'mapping\.fc(\d+)\.bias',     lambda i:    tf_params[f'Mapping{i}/bias']),
        (r'b4\.conv\.weight',           lambda:      conv(tf_params['4x4/Conv/weight'])),
        (r'b4\.conv\.bias',             lambda:      tf_params['4x4/Conv/bias']),
        (r'b4\.fc\.weight',             lambda:      tf_params['4x4/Dense0/weight'].transpose()),
        (r'b4\.fc\.bias',               lambda:      tf_params['4x4/Dense0/bias']),
        (r'b4\.out\.weight',            lambda:      tf_params['Output/weight'].transpose()),
        (r'b4\.out\.bias',              lambda:      tf_params['Output/bias']),
        (r'.*\.resample_filter',        None),
    ])
    return D

#----------------------------------------------------------------------------
# Loading by suffix. The weights-only format and safe inspection live in safe_weights.py; their names are
# re-exported here for the callers that know legacy as the one loader.

_pickle_warned = False

def load_network(path: str, force_fp16: bool = False, trusted: Optional[bool] = None, adapt: bool = True) -> dict:
    """Load a network file by suffix: .safetensors (safe, weights only) or a pickle (path or URL), which runs code
    from the file: a one-time warning says so unless trusted=True or the env var EG3D_TRUST_PICKLES=1."""
    global _pickle_warned
    if str(path).split('?')[0].endswith('.safetensors'):
        with dnnlib.util.open_url(path) as f:
            return load_network_safetensors(f)
    if not (trusted or os.environ.get('EG3D_TRUST_PICKLES') == '1' or _pickle_warned):
        _pickle_warned = True
        print(f'Warning: loading a pickle runs code stored in it; only load pickles you trust ({path}). Convert with '
              f'`python legacy.py convert IN.pkl OUT.safetensors` for a weights-only file; EG3D_TRUST_PICKLES=1 silences '
              f'this.', file=sys.stderr, flush=True)
    with dnnlib.util.open_url(path) as f:
        return load_network_pkl(f, force_fp16=force_fp16, adapt=adapt)

#----------------------------------------------------------------------------
# CLI: `python legacy.py --source=... --dest=...` converts; `python legacy.py info PATH` inspects.

@click.group(invoke_without_command=True)
@click.pass_context
@click.option('--source', help='Input pickle', metavar='PATH|URL')
@click.option('--dest', help='Output pickle', metavar='PATH')
@click.option('--force-fp16', help='Force the networks to use FP16', type=bool, default=False, metavar='BOOL', show_default=True)
def main(ctx, source, dest, force_fp16):
    """Convert a network pickle to the current format (EG3D legacy.py), or inspect one with `info`.

    \b
    python legacy.py --source=stylegan2-ffhq-config-f.pkl --dest=converted.pkl
    python legacy.py info network-snapshot-000000.pkl
    """
    if ctx.invoked_subcommand is not None:
        return
    if source is None or dest is None:
        raise click.UsageError('--source and --dest are required (or use the `info` command)')
    _convert(source, dest, force_fp16)

def _convert(source: str, dest: str, force_fp16: bool) -> None:
    print(f'Loading "{source}"...')
    try: # trusted: the user asked to convert this very file; adapt=False: save the networks as they were pickled
        data = load_network(source, force_fp16=force_fp16, trusted=True, adapt=False)
    except (IOError, ValueError) as err:
        raise click.ClickException(str(err))
    print(f'Saving "{dest}"...')
    try:
        if dest.endswith('.safetensors'):
            save_safetensors(data, dest)
        else:
            with dnnlib.util.atomic_write(dest, 'wb') as f:
                pickle.dump(data, f)
    except (OSError, ValueError) as err:
        raise click.ClickException(f'cannot write {dest}: {err}')
    print('Done.')

@main.command('convert')
@click.argument('source')
@click.argument('dest')
@click.option('--force-fp16', help='Force the networks to use FP16', type=bool, default=False, metavar='BOOL', show_default=True)
def convert(source, dest, force_fp16):
    """Convert a network file: IN.pkl OUT.safetensors (weights-only, loads without unpickling), or back to a pickle."""
    _convert(source, dest, force_fp16)

@main.command('info')
@click.argument('path')
@click.option('--show-src', is_flag=True, help='Print every embedded module source in full')
def info(path, show_src):
    """Print what a pickle holds without running any of its code."""
    try:
        with dnnlib.util.open_url(path) as f:
            r = inspect_pickle(f)
    except IOError as err:
        raise click.ClickException(str(err))
    print(f'File: {path}')
    print('Top level:')
    for k, v in r['top'].items():
        print(f'  {k}: {v}')
    print(f'Tensors: {r["num_tensors"]} ({r["num_elements"]:,} elements)')
    print('Embedded module sources:')
    for key, entry in r['sources'].items():
        src = entry['source']
        imports = [l.strip() for l in src.splitlines() if re.match(r'\s*(import|from)\s', l)]
        first = next((l for l in src.splitlines() if l.strip()), '')
        print(f'  [{key}] {len(src.splitlines())} lines, first line: {first[:90]}')
        print('    instances: ' + ', '.join(f'{n} x{c}' for n, c in entry['instances'].items()))
        print('    imports: ' + '; '.join(imports))
        if show_src:
            print('    ' + src.replace('\n', '\n    '))
    print('Global references:')
    for name, count in sorted(r['globals'].items()):
        print(f'  {name} ({count})')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
