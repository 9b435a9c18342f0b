"""Train an EG3D-style 3D-aware GAN (or a registered plugin preset) with the EG3D command line.

Examples:

\b
# Train FFHQ with camera conditioning on 8 GPUs (as EG3D).
python train.py --outdir ~/training-runs --cfg=ffhq --data ~/datasets/FFHQ_512.zip \\
  --gpus=8 --batch=32 --gamma=1 --gen_pose_cond=True

\b
# Tiny CPU smoke run (two CPU ranks with gloo).
python train.py --outdir=/tmp/runs --cfg=ffhq --data=tiny128.zip --gpus=2 --batch=4 --gamma=1 \\
  --cbase=512 --cmax=16 --kimg=0.008 --metrics=none --neural_rendering_resolution_initial=32
"""

import os
import re
import sys
from typing import List, Optional, Sequence

import click

import dnnlib
from dnnlib import registry
from training.launch import launch_training, next_run_dir, subprocess_fn  # noqa: F401 -- EG3D train.py names

#----------------------------------------------------------------------------
# --resume and the reliability options (docs/reliability.md).

def _resume_kind(opts: dnnlib.EasyDict) -> tuple:
    """(kind, path) for --resume; exact kinds clear opts.resume so that presets build the original run's config."""
    from training import checkpoint
    if opts.resume is None:
        return None, None
    try:
        kind = checkpoint.classify_resume(opts.resume)
    except ValueError as err:
        raise click.BadParameter(str(err).split(': ', 1)[-1], param_hint='--resume')
    if kind == 'pkl':
        if not dnnlib.util.is_url(opts.resume, allow_file_urls=True) and not os.path.isfile(opts.resume):
            raise click.BadParameter(f'{opts.resume}: no such file', param_hint='--resume')
        import legacy
        try:  # fail now, not after a new run dir was created; a pickle (local or downloaded) warns as in the other tools
            legacy.load_network(opts.resume, adapt=False)
        except (IOError, ValueError) as err:
            raise click.BadParameter(str(err), param_hint='--resume')
    path = opts.resume
    if kind != 'pkl':
        opts.resume = None
    return kind, path

def _apply_reliability_options(c: dnnlib.EasyDict, opts: dnnlib.EasyDict, resume: tuple) -> Optional[str]:
    """Record checkpoint/guard options in c; for an exact resume check the run's config and return its run dir."""
    from training import checkpoint
    c.checkpoint_ticks = opts.ckpt
    c.keep_checkpoints = opts.keep_ckpts
    c.write_safetensors = opts.safetensors
    c.guard_kwargs = dnnlib.EasyDict(retries=opts.guard_retries, lr_factor=opts.guard_lr_factor, gamma_factor=opts.guard_gamma_factor,
                                     collapse_ticks=opts.guard_collapse_ticks, grad_limit=opts.guard_grad_limit) if opts.guard else None
    kind, path = resume
    if kind in (None, 'pkl'):
        return None
    if kind == 'auto':
        run_dir = checkpoint.find_matching_run(opts.outdir, c)
        if run_dir is None:
            print(f'--resume=auto: no run in {opts.outdir} matches these options; starting a new run.')
            return None
    else:
        run_dir = path if kind == 'run_dir' else os.path.dirname(os.path.abspath(path))
        stored = checkpoint.read_options(run_dir)
        if stored is None:
            raise click.BadParameter(f'{run_dir} holds no readable training_options.json (not a run directory?)', param_hint='--resume')
        diff = checkpoint.config_diff(stored, c)
        if diff:
            raise click.BadParameter(f'the options differ from the run in {run_dir} ({", ".join(diff[:6])}); repeat its '
                                     f'options, or use --resume=<network-snapshot.pkl> to continue from weights only', param_hint='--resume')
    if kind == 'checkpoint':
        try:
            checkpoint.load(path)
        except IOError as err:
            raise click.BadParameter(str(err), param_hint='--resume')
    c.resume_state = path if kind == 'checkpoint' else run_dir
    if not opts.dry_run:
        if kind == 'checkpoint':  # an explicitly older checkpoint: newer ones belong to an abandoned branch
            state_ticks = [t for t, p in checkpoint.list_checkpoints(run_dir) if os.path.samefile(p, path)]
            if state_ticks:
                checkpoint.discard_newer(run_dir, state_ticks[0], rename=True)
    return run_dir

#----------------------------------------------------------------------------
# Option parsing helpers.

class CommaSeparatedList(click.ParamType):
    name = 'list'
    def convert(self, value, param, ctx) -> List[str]:
        if isinstance(value, list):
            return value
        if value is None or value.lower() == 'none' or value == '':
            return []
        return value.split(',')

class Kimg(click.ParamType):
    """Positive number of thousands of images; fractions allowed (tiny test runs), integers stay integers."""
    name = 'kimg'
    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f'{value!r} is not a number', param, ctx)
        if not v > 0:
            self.fail(f'{value} must be > 0', param, ctx)
        return int(v) if v.is_integer() else v

class GridSize(click.ParamType):
    name = 'WxH'
    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        m = re.fullmatch(r'(\d+)[x,](\d+)', str(value))
        if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            self.fail(f'{value!r} is not a grid size like 4x2', param, ctx)
        return [int(m.group(1)), int(m.group(2))]

class Hyphenated(click.Option):
    """An EG3D option spelled with underscores that also takes the hyphenated spelling, like the other options. --help
    lists the EG3D name only (--neural_rendering_resolution_fade_kimg alone fills the option column) and says so."""
    def __init__(self, param_decls: Sequence[str], **kwargs):
        super().__init__(list(param_decls) + [d.replace('_', '-') for d in param_decls if d.startswith('--')], **kwargs)

    def get_help_record(self, ctx):
        """Help line under the first (EG3D) spelling only, noting the hyphenated alias."""
        names, text = super().get_help_record(ctx)
        for alias in self.opts[1:]:
            names = names.replace(f', {alias}', '')
        return names, f'{text}  [also spelled with hyphens]'

def _message(err: Exception) -> str:
    """str(err) without the quotes of a KeyError-style repr, which wraps the whole message and nothing else."""
    text = str(err)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"' and text[0] not in text[1:-1]:
        return text[1:-1]
    return text

def _plugin_modules_from_argv(argv: List[str]) -> List[str]:
    """--plugin must be known before the CLI is built, because plugins add presets and options."""
    mods = []
    for i, a in enumerate(argv):
        if a.startswith('--plugin='):
            mods.append(a.split('=', 1)[1])
        elif a == '--plugin' and i + 1 < len(argv):
            mods.append(argv[i + 1])
    return mods

#----------------------------------------------------------------------------
# The command; built after plugins load so that --cfg lists every registered preset.

def make_cli(plugins: List[str] = ()) -> click.Command:
    import training.presets  # noqa: F401 -- registers the EG3D presets
    registry.load_plugins(plugins)
    cfgs = registry.names('preset')
    B, S = bool, str
    PD = 'preset default' # unset options are filled by the --cfg preset (training.presets.apply_preset_defaults)
    o = click.option

    @click.command(help=__doc__)
    @click.pass_context
    # Required.
    @o('--outdir',      help='Where to save the results', metavar='DIR', required=True)
    @o('--cfg',         help='Base configuration', type=click.Choice(cfgs), required=True)
    @o('--data',        help='Training data', metavar='[ZIP|DIR]', type=S, required=True)
    @o('--gpus',        help='Number of GPUs (CPU: processes) to use', metavar='INT', type=click.IntRange(min=1), required=True)
    @o('--batch',       help='Total batch size [EG3D presets: required]', metavar='INT', type=click.IntRange(min=1), default=None, show_default=PD)
    @o('--gamma',       help='R1 regularization weight [EG3D presets: required]', metavar='FLOAT', type=click.FloatRange(min=0), default=None, show_default=PD)
    # Optional features.
    @o('--cond',        help='Train conditional model', metavar='BOOL', type=B, default=True, show_default=True)
    @o('--mirror',      help='Enable dataset x-flips', metavar='BOOL', type=B, default=None, show_default=PD)
    @o('--aug',         help='Augmentation mode', type=click.Choice(['noaug', 'ada', 'fixed']), default='noaug', show_default=True)
    @o('--resume',      help='Resume: network pickle/.safetensors (weights only, new run dir), or exactly from a run dir, a checkpoint-*.pt, or "auto" (latest matching run in --outdir; else start fresh)', metavar='[PATH|URL|DIR|auto]', type=S)
    # Reliability (docs/reliability.md).
    @o('--ckpt',        help='Ticks between training-state checkpoints  [default: --snap]', metavar='TICKS', type=click.IntRange(min=1), default=None)
    @o('--keep-ckpts',  help='Checkpoints to keep (0 = all)', metavar='INT', type=click.IntRange(min=0), default=2, show_default=True)
    @o('--guard',       help='Divergence guard: roll back to the last good checkpoint on NaN/explosion/D collapse', metavar='BOOL', type=B, default=True, show_default=True)
    @o('--guard-retries', help='Consecutive rollbacks before giving up', metavar='INT', type=click.IntRange(min=0), default=3, show_default=True)
    @o('--guard-lr-factor', help='Multiply G/D learning rates by this on each rollback', metavar='FLOAT', type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
    @o('--guard-gamma-factor', help='Multiply R1 gamma by this on each rollback', metavar='FLOAT', type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
    @o('--guard-collapse-ticks', help='Ticks of D-dominates signature before a rollback (0 = off)', metavar='INT', type=click.IntRange(min=0), default=20, show_default=True)
    @o('--guard-grad-limit', help='Roll back when a gradient norm exceeds this', metavar='FLOAT', type=click.FloatRange(min=0, min_open=True), default=None)
    @o('--safetensors', help='Also write network-snapshot-*.safetensors (weights only)', metavar='BOOL', type=B, default=False, show_default=True)
    @o('--freezed',     help='Freeze first layers of D', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
    # Misc hyperparameters.
    @o('--p',           help='Probability for --aug=fixed', metavar='FLOAT', type=click.FloatRange(min=0, max=1), default=0.2, show_default=True)
    @o('--target',      help='Target value for --aug=ada', metavar='FLOAT', type=click.FloatRange(min=0, max=1), default=0.6, show_default=True)
    @o('--batch-gpu',   help='Limit batch size per GPU', metavar='INT', type=click.IntRange(min=1))
    @o('--cbase',       help='Capacity multiplier', metavar='INT', type=click.IntRange(min=1), default=None, show_default=PD)
    @o('--cmax',        help='Max. feature maps', metavar='INT', type=click.IntRange(min=1), default=None, show_default=PD)
    @o('--glr',         help='G learning rate', metavar='FLOAT', type=click.FloatRange(min=0), default=None, show_default=PD)
    @o('--dlr',         help='D learning rate', metavar='FLOAT', type=click.FloatRange(min=0), default=None, show_default=PD)
    @o('--map-depth',   help='Mapping network depth', metavar='INT', type=click.IntRange(min=1), default=None, show_default=PD)
    @o('--mbstd-group', help='Minibatch std group size', metavar='INT', type=click.IntRange(min=1), default=None, show_default=PD)
    # Misc settings.
    @o('--desc',        help='String to include in result dir name', metavar='STR', type=S)
    @o('--metrics',     help='Quality metrics', metavar='[NAME|A,B,C|none]', type=CommaSeparatedList(), default=None, show_default=PD)
    @o('--kimg',        help='Total training duration', metavar='KIMG', type=Kimg(), default=25000, show_default=True)
    @o('--tick',        help='How often to print progress', metavar='KIMG', type=Kimg(), default=4, show_default=True)
    @o('--snap',        help='How often to save snapshots', metavar='TICKS', type=click.IntRange(min=1), default=None, show_default=PD)
    @o('--seed',        help='Random seed', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
    @o('--nobench',     help='Disable cuDNN benchmarking', metavar='BOOL', type=B, default=False, show_default=True)
    @o('--workers',     help='DataLoader worker processes', metavar='INT', type=click.IntRange(min=1), default=3, show_default=True)
    @o('--compile',     help='torch.compile the networks in the loss (snapshots hold plain modules)', metavar='BOOL', type=B, is_flag=False, flag_value=True, default=False, show_default=True)
    @o('--amp',         help='Autocast the G/D forward passes of the loss (CPU and CUDA)', type=click.Choice(['none', 'bf16']), default='none', show_default=True)
    @o('--detector-dir', help='Folder with metric detector pickles (inception-2015-12-05.pkl, vgg16.pkl)  [default: $EG3D_DETECTOR_DIR, else download cache]', metavar='DIR', type=S, default=None)
    @o('-n', '--dry-run', help='Print training options and exit', is_flag=True)
    @o('--plugin',      help='Extra plugin module to import (repeatable)', metavar='MODULE', multiple=True)
    # EG3D options.
    @o('--neural_rendering_resolution_initial', cls=Hyphenated, help='Resolution to render at', metavar='INT', type=click.IntRange(min=1), default=64, show_default=True)
    @o('--neural_rendering_resolution_final', cls=Hyphenated, help='Final resolution to render at, if blending', metavar='INT', type=click.IntRange(min=1), default=None)
    @o('--neural_rendering_resolution_fade_kimg', cls=Hyphenated, help='Kimg to blend resolution over', metavar='INT', type=click.IntRange(min=0), default=1000, show_default=True)
    @o('--blur_fade_kimg', help='Blur over how many', metavar='INT', type=click.IntRange(min=0), default=200, show_default=True)
    @o('--gen_pose_cond', help='If true, enable generator pose conditioning.', metavar='BOOL', type=B, default=False, show_default=True)
    @o('--c-scale',     help='Scale factor for generator pose conditioning.', metavar='FLOAT', type=click.FloatRange(min=0), default=1, show_default=True)
    @o('--c-noise',     help='Add noise for generator pose conditioning (unused, as in EG3D).', metavar='FLOAT', type=click.FloatRange(min=0), default=0, show_default=True)
    @o('--gpc_reg_prob', help='Strength of swapping regularization. None means no generator pose conditioning, i.e. condition with zeros.', metavar='FLOAT', type=click.FloatRange(min=0, max=1), default=0.5, show_default=True)
    @o('--gpc_reg_fade_kimg', help='Length of swapping prob fade', metavar='INT', type=click.IntRange(min=0), default=1000, show_default=True)
    @o('--disc_c_noise', help='Strength of discriminator pose conditioning regularization, in standard deviations.', metavar='FLOAT', type=click.FloatRange(min=0), default=0, show_default=True)
    @o('--sr_noise_mode', help='Type of noise for superresolution', metavar='STR', type=click.Choice(['random', 'none']), default='none', show_default=True)
    @o('--resume_blur', help='Enable to blur even on resume', metavar='BOOL', type=B, default=False, show_default=True)
    @o('--sr_num_fp16_res', help='Number of fp16 layers in superresolution', metavar='INT', type=click.IntRange(min=0), default=4, show_default=True)
    @o('--g_num_fp16_res', help='Number of fp16 layers in generator', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
    @o('--d_num_fp16_res', help='Number of fp16 layers in discriminator', metavar='INT', type=click.IntRange(min=0), default=4, show_default=True)
    @o('--sr_first_cutoff', help='First cutoff for AF superresolution (unused, as in EG3D)', metavar='INT', type=click.IntRange(min=2), default=2, show_default=True)
    @o('--sr_first_stopband', help='First stopband for AF superresolution (unused, as in EG3D)', metavar='FLOAT', type=click.FloatRange(min=2), default=2**2.1, show_default=True)
    @o('--style_mixing_prob', help='Style-mixing regularization probability for training.', metavar='FLOAT', type=click.FloatRange(min=0, max=1), default=0, show_default=True)
    @o('--sr-module',   help='Superresolution module override', metavar='STR', type=S, required=False, default=None)
    @o('--density_reg', help='Density regularization strength.', metavar='FLOAT', type=click.FloatRange(min=0), default=0.25, show_default=True)
    @o('--density_reg_every', help='lazy density reg', metavar='int', type=click.FloatRange(min=1), default=4, show_default=True)
    @o('--density_reg_p_dist', help='density regularization strength.', metavar='FLOAT', type=click.FloatRange(min=0), default=0.004, show_default=True)
    @o('--reg_type', help='Type of regularization', metavar='STR', type=click.Choice(['l1', 'l1-alt', 'monotonic-detach', 'monotonic-fixed', 'total-variation']), default='l1', show_default=True)
    @o('--decoder_lr_mul', help='decoder learning rate multiplier.', metavar='FLOAT', type=click.FloatRange(min=0), default=1, show_default=True)
    # Hidden knobs for tiny CPU runs and benchmarks (recorded in training_options.json like everything else).
    @o('--depth-resolution', help='Override coarse ray samples', type=click.IntRange(min=2), default=None, hidden=True)
    @o('--depth-resolution-importance', help='Override importance ray samples', type=click.IntRange(min=0), default=None, hidden=True)
    @o('--grid',        help='Image snapshot grid size WxH', type=GridSize(), default=None, hidden=True)
    def main(ctx, **kwargs):
        from training.presets import apply_preset_defaults
        preset = registry.resolve('preset', kwargs['cfg'])
        try:
            opts = apply_preset_defaults(preset, dnnlib.EasyDict(kwargs), kwargs['cfg'])
        except ValueError as err:
            raise click.UsageError(str(err))
        if opts.batch % opts.gpus != 0:
            raise click.BadParameter(f'--batch={opts.batch} must be a multiple of --gpus={opts.gpus}', param_hint='--batch')
        batch_gpu = opts.batch_gpu or opts.batch // opts.gpus
        if opts.batch % (opts.gpus * batch_gpu) != 0:
            raise click.BadParameter(f'--batch={opts.batch} must be a multiple of --gpus times --batch-gpu ({opts.gpus}x{batch_gpu})', param_hint='--batch')
        if batch_gpu < opts.mbstd_group:
            raise click.BadParameter(f'--batch-gpu={batch_gpu} must be at least --mbstd-group={opts.mbstd_group}', param_hint='--batch-gpu')
        if opts.metrics:
            try:
                from metrics import metric_main
            except ImportError as err:
                raise click.ClickException(f'--metrics needs the metrics package ({err}); use --metrics=none')
            bad = [m for m in opts.metrics if m not in metric_main.list_valid_metrics()]
            if bad:
                raise click.BadParameter(f'unknown metric(s) {", ".join(bad)}; valid: {", ".join(metric_main.list_valid_metrics())}', param_hint='--metrics')
        if opts.detector_dir is not None and not os.path.isdir(opts.detector_dir):
            raise click.BadParameter(f'{opts.detector_dir!r} is not a folder', param_hint='--detector-dir')
        resume = _resume_kind(opts)  # exact resume clears opts.resume: the config must be the original run's
        try:
            c = preset(opts)
        except (IOError, ValueError) as err:
            raise click.ClickException(_message(err))
        run_dir = _apply_reliability_options(c, opts, resume)

        dataset_name = os.path.splitext(os.path.basename(os.path.normpath(opts.data)))[0]
        gamma = c.get('loss_kwargs', {}).get('r1_gamma', opts.gamma) # a preset may derive it (3DGP 'auto')
        desc = f'{opts.cfg:s}-{dataset_name:s}-gpus{c.num_gpus:d}-batch{c.batch_size:d}-gamma{gamma:g}'
        if opts.desc is not None:
            desc += f'-{opts.desc}'
        launch_training(c=c, desc=desc, outdir=opts.outdir, dry_run=opts.dry_run, run_dir=run_dir)

    for name in registry.names('train_option'):  # plugin options (click.Option objects) arrive in opts
        main.params.append(registry.resolve('train_option', name))
    return main

#----------------------------------------------------------------------------

if __name__ == '__main__':
    make_cli(_plugin_modules_from_argv(sys.argv[1:]))()

#----------------------------------------------------------------------------
