"""Registers everything of 3DGP (presets, train options, networks, loss, datasets, legacy pickle aliases) in dnnlib.registry."""

import click
from dnnlib import registry

#----------------------------------------------------------------------------
# Presets (`--cfg`).

registry.register('preset', '3dgp', 'eg3d_ext.presets.preset_3dgp')
registry.register('preset', '3dgp-dogs', 'eg3d_ext.presets.preset_3dgp_dogs')
registry.register('preset', '3dgp-elephants', 'eg3d_ext.presets.preset_3dgp_elephants')
registry.register('preset', '3dgp-horses', 'eg3d_ext.presets.preset_3dgp_horses')
registry.register('preset', 'eg3d-wide', 'eg3d_ext.presets.preset_eg3d_wide')

#----------------------------------------------------------------------------
# Networks, loss, datasets.

registry.register('network', '3dgp-generator', 'eg3d_ext.generator.Generator')
registry.register('network', '3dgp-discriminator', 'eg3d_ext.discriminator.Discriminator')
registry.register('network', '3dgp-camera-generator', 'eg3d_ext.camera_generator.CameraGenerator')
registry.register('network', '3dgp-depth-adaptor', 'eg3d_ext.depth_adaptor.DepthAdaptor')
registry.register('network', '3dgp-camera-prior', 'eg3d_ext.camera.CameraPrior')
registry.register('loss', '3dgp', 'eg3d_ext.loss_3dgp.Loss3DGP')
registry.register('dataset', 'rgbd', 'eg3d_ext.dataset_rgbd.RGBDDataset')
registry.register('dataset', 'wide-camera', 'eg3d_ext.presets.WideCameraDataset')

#----------------------------------------------------------------------------
# Training options; values arrive in `opts` under the parameter name (e.g. opts.camera_prior).
# Defaults are None where the preset decides (so each preset keeps its own spec value).

def _prob_or_anneal(ctx, param, value):
    if value is None or value == 'anneal':
        return value
    try:
        p = float(value)
    except ValueError:
        raise click.BadParameter(f"expected 'anneal' or a number in [0, 1], got {value!r}") from None
    if not 0 <= p <= 1:
        raise click.BadParameter(f'must be in [0, 1], got {p}')
    return value

_OPTIONS = [
    click.Option(['--camera-prior'], type=click.Choice(['uniform', 'narrow', 'epigraf', 'custom']), default=None,
        help='3DGP camera prior (default uniform = wide: yaw +-1.57, pitch pi/4..3pi/4, fov 10-45)'),
    click.Option(['--camera-prior-file'], type=str, default=None, metavar='PATH',
        help='Yaw/pitch table (.npy [K,2] / [K,25]) or dataset with "cameras" for --camera-prior=custom'),
    click.Option(['--learn-camera'], type=bool, default=None, metavar='BOOL', help='Learn the camera distribution [default: true]'),
    click.Option(['--use-depth'], type=bool, default=None, metavar='BOOL', help='RGB-D discriminator + depth adaptor [default: true]'),
    click.Option(['--depth-adaptor-prob'], type=str, default=None, callback=_prob_or_anneal, metavar='anneal|P',
        help="P(D sees adapted depth): 'anneal' = 3DGP schedule (75%->90%), or 0 / 0.5 / 1 for the paper ablation"),
    click.Option(['--kd-weight'], type=click.FloatRange(min=0), default=None, help='Distillation weight (0 = no KD head) [default: 1]'),
    click.Option(['--kd-anneal-kimg'], type=click.FloatRange(min=0), default=None, help='KD weight decays to 0 over this [default: 100000]'),
    click.Option(['--teacher'], type=str, default=None, metavar='TIMM_NAME', help='Online KD teacher (timm model) instead of dataset embeddings'),
    click.Option(['--teacher-weights'], type=str, default=None, metavar='PATH', help='Local weights of the online teacher'),
    click.Option(['--patch-res'], type=click.IntRange(min=4), default=None, help='Training patch resolution [default: 64]'),
    click.Option(['--triplane-res'], type=click.IntRange(min=4), default=None, help='Tri-plane resolution [default: 512]'),
    click.Option(['--reference-bugs'], type=bool, default=None, metavar='BOOL',
        help='Restore reference 3DGP behaviour where we fix its bugs (docs/3dgp-deviations.md) [default: false]'),
]
for _option in _OPTIONS:
    registry.register('train_option', _option.name, _option)

#----------------------------------------------------------------------------
# Legacy 3DGP / EpiGRAF pickles: `src.*` module aliases, the bare non-persistent
# `training.networks_discriminator.Discriminator`, an omegaconf stand-in and TensorGroup (eg3d_ext.compat).

def _register_legacy_aliases() -> bool:
    from eg3d_ext import compat
    return compat.install()

LEGACY_HOOKED = _register_legacy_aliases()

#----------------------------------------------------------------------------
