"""EG3D training presets (ffhq, afhq, shapenet): registered functions that turn CLI options into a training config."""

import copy
from typing import Any, Tuple

import dnnlib
from dnnlib import registry

#----------------------------------------------------------------------------
# Preset defaults: CLI options left unset (None) are filled by the chosen preset, so `--cfg=3dgp` can use the 3DGP
# ImageNet values while the EG3D presets keep EG3D's. A preset declares them with @preset_defaults; `required` names
# options the preset has no default for (EG3D: --batch and --gamma, as in EG3D).

EG3D_DEFAULTS = dict(cbase=32768, cmax=512, mirror=False, glr=0.0025, dlr=0.002, map_depth=2, mbstd_group=4,
                     metrics=['fid50k_full'], snap=50)
EG3D_REQUIRED = ('batch', 'gamma')

def preset_defaults(required: Tuple[str, ...] = (), **defaults: Any):
    """Decorator: attach `defaults` (option name -> value) and `required` option names to a preset function."""
    def decorate(fn):
        fn.defaults, fn.required = dict(defaults), tuple(required)
        return fn
    return decorate

def apply_preset_defaults(preset: Any, opts: dnnlib.EasyDict, cfg: str = '?') -> dnnlib.EasyDict:
    """Copy of opts with every unset (None) option taken from the preset's defaults (EG3D's for presets that declare
    none). Raises ValueError naming a required option that is still unset."""
    opts = dnnlib.EasyDict(opts)
    required = getattr(preset, 'required', EG3D_REQUIRED)
    missing = [k for k in required if opts.get(k) is None]
    if missing:
        raise ValueError(f"Missing option '--{missing[0].replace('_', '-')}': --cfg={cfg} has no default for it")
    for key, value in dict(EG3D_DEFAULTS, **getattr(preset, 'defaults', {})).items():
        if opts.get(key) is None:
            opts[key] = copy.deepcopy(value)
    return opts

#----------------------------------------------------------------------------
# Building blocks shared with plugin presets (e.g. eg3d_ext/presets.py).

def init_dataset_kwargs(data: str, class_name: str = 'training.dataset.ImageFolderDataset', **kwargs: Any) -> Tuple[dnnlib.EasyDict, Any]:
    """Probe the dataset once; returns (dataset kwargs with resolution/use_labels/max_size filled in, the probed dataset)."""
    dataset_kwargs = dnnlib.EasyDict(class_name=class_name, path=data, use_labels=True, max_size=None, xflip=False, **kwargs)
    dataset_obj = dnnlib.util.construct_class_by_name(**dataset_kwargs)  # IOError/ValueError propagate with their message
    dataset_kwargs.resolution = dataset_obj.resolution  # Be explicit about resolution.
    dataset_kwargs.use_labels = dataset_obj.has_labels  # Be explicit about labels.
    dataset_kwargs.max_size = len(dataset_obj)  # Be explicit about dataset size.
    return dataset_kwargs, dataset_obj

def common_config(opts: dnnlib.EasyDict) -> dnnlib.EasyDict:
    """Options every preset shares: batch/GPU layout, schedule, logging, data loading, optimisers, resume, speed."""
    c = dnnlib.EasyDict()
    c.num_gpus = opts.gpus
    c.batch_size = opts.batch
    c.batch_gpu = opts.batch_gpu or opts.batch // opts.gpus
    c.metrics = list(opts.metrics)
    c.total_kimg = opts.kimg
    c.kimg_per_tick = opts.tick
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap
    c.random_seed = opts.seed
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, prefetch_factor=2, num_workers=opts.workers)
    c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=opts.glr, betas=[0.0, 0.99], eps=1e-8)  # floats: torch 2.x
    c.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=opts.dlr, betas=[0.0, 0.99], eps=1e-8)
    c.ema_kimg = c.batch_size * 10 / 32
    if opts.get('grid') is not None:
        c.image_grid_size = list(opts.grid)
    if opts.aug != 'noaug':
        c.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1, scale=1,
                                           rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
        if opts.aug == 'ada':
            c.ada_target = opts.target
        if opts.aug == 'fixed':
            c.augment_p = opts.p
    if opts.resume is not None:
        c.resume_pkl = opts.resume
        c.ada_kimg = 100  # Make ADA react faster at the beginning.
        c.ema_rampup = None  # Disable EMA rampup.
    if opts.nobench:
        c.cudnn_benchmark = False
    # Speed options, recorded only when on so that default configs (and runs resumed by config) are unchanged.
    if opts.get('compile'):
        c.torch_compile = True
    if opts.get('amp') not in (None, 'none'):
        c.amp = opts.amp
    if opts.get('detector_dir') is not None:
        c.detector_dir = opts.detector_dir
    return c

SR_MODULES = {  # dataset resolution -> superresolution class (EG3D)
    512: 'training.superresolution.SuperresolutionHybrid8XDC',
    256: 'training.superresolution.SuperresolutionHybrid4X',
    128: 'training.superresolution.SuperresolutionHybrid2X',
}

def eg3d_config(opts: dnnlib.EasyDict, **dataset_rendering: Any) -> dnnlib.EasyDict:
    """Full EG3D config; `dataset_rendering` are the per-dataset rendering_kwargs (ray bounds, box, camera)."""
    c = common_config(opts)
    c.training_set_kwargs, _ = init_dataset_kwargs(opts.data)
    if opts.cond and not c.training_set_kwargs.use_labels:
        raise ValueError('--cond=True requires labels specified in dataset.json')
    c.training_set_kwargs.use_labels = opts.cond
    c.training_set_kwargs.xflip = opts.mirror
    c.training_set_kwargs.random_seed = opts.seed
    resolution = c.training_set_kwargs.resolution

    sr_module = opts.sr_module or SR_MODULES.get(resolution)
    if sr_module is None:
        raise ValueError(f'No EG3D superresolution module for {resolution}x{resolution} images '
                         f'(supported: {sorted(SR_MODULES)}); pass --sr-module to choose one, e.g. '
                         f'--sr-module=training.superresolution.SuperresolutionHybrid2XAnyRes '
                         f'--neural_rendering_resolution_initial={resolution // 2}')

    rendering_options = {
        'image_resolution': resolution,
        'disparity_space_sampling': False,
        'clamp_mode': 'softplus',
        'superresolution_module': sr_module,
        'c_gen_conditioning_zero': not opts.gen_pose_cond,  # If true, fill generator pose conditioning label with dummy zero vector
        'gpc_reg_prob': opts.gpc_reg_prob if opts.gen_pose_cond else None,
        'c_scale': opts.c_scale,  # mutliplier for generator pose conditioning label
        'superresolution_noise_mode': opts.sr_noise_mode,  # [random or none], whether to inject pixel noise into super-resolution layers
        'density_reg': opts.density_reg,  # strength of density regularization
        'density_reg_p_dist': opts.density_reg_p_dist,  # distance at which to sample perturbed points for density regularization
        'reg_type': opts.reg_type,  # for experimenting with variations on density regularization
        'decoder_lr_mul': opts.decoder_lr_mul,  # learning rate multiplier for decoder
        'sr_antialias': True,
    }
    rendering_options.update(copy.deepcopy(dataset_rendering))
    # Hidden knobs (tiny CPU runs, benchmarks): override the preset's ray sample counts.
    if opts.get('depth_resolution') is not None:
        rendering_options['depth_resolution'] = opts.depth_resolution
    if opts.get('depth_resolution_importance') is not None:
        rendering_options['depth_resolution_importance'] = opts.depth_resolution_importance

    c.G_kwargs = dnnlib.EasyDict(class_name='training.triplane.TriPlaneGenerator', z_dim=512, w_dim=512, mapping_kwargs=dnnlib.EasyDict())
    c.G_kwargs.channel_base = opts.cbase
    c.G_kwargs.channel_max = opts.cmax
    c.G_kwargs.mapping_kwargs.num_layers = opts.map_depth
    c.G_kwargs.fused_modconv_default = 'inference_only'  # Speed up training by using regular convolutions instead of grouped convolutions.
    c.G_kwargs.rendering_kwargs = rendering_options
    c.G_kwargs.num_fp16_res = opts.g_num_fp16_res
    c.G_kwargs.conv_clamp = 256 if opts.g_num_fp16_res > 0 else None
    c.G_kwargs.sr_num_fp16_res = opts.sr_num_fp16_res
    c.G_kwargs.sr_kwargs = dnnlib.EasyDict(channel_base=opts.cbase, channel_max=opts.cmax, fused_modconv_default='inference_only')

    c.D_kwargs = dnnlib.EasyDict(class_name='training.dual_discriminator.DualDiscriminator', block_kwargs=dnnlib.EasyDict(),
                                 mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    c.D_kwargs.channel_base = opts.cbase
    c.D_kwargs.channel_max = opts.cmax
    c.D_kwargs.block_kwargs.freeze_layers = opts.freezed
    c.D_kwargs.epilogue_kwargs.mbstd_group_size = opts.mbstd_group
    c.D_kwargs.disc_c_noise = opts.disc_c_noise  # Regularization for discriminator pose conditioning
    c.D_kwargs.num_fp16_res = opts.d_num_fp16_res
    c.D_kwargs.conv_clamp = 256 if opts.d_num_fp16_res > 0 else None

    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss')
    c.loss_kwargs.r1_gamma = opts.gamma
    c.loss_kwargs.filter_mode = 'antialiased'  # Filter mode for raw images ['antialiased', 'none', float [0-1]]
    c.loss_kwargs.blur_init_sigma = 10  # Blur the images seen by the discriminator.
    c.loss_kwargs.blur_fade_kimg = c.batch_size * opts.blur_fade_kimg / 32  # Fade out the blur during the first N kimg.
    c.loss_kwargs.gpc_reg_prob = opts.gpc_reg_prob if opts.gen_pose_cond else None
    c.loss_kwargs.gpc_reg_fade_kimg = opts.gpc_reg_fade_kimg
    c.loss_kwargs.dual_discrimination = True
    c.loss_kwargs.neural_rendering_resolution_initial = opts.neural_rendering_resolution_initial
    c.loss_kwargs.neural_rendering_resolution_final = opts.neural_rendering_resolution_final
    c.loss_kwargs.neural_rendering_resolution_fade_kimg = opts.neural_rendering_resolution_fade_kimg
    c.loss_kwargs.style_mixing_prob = opts.style_mixing_prob
    if opts.density_reg > 0:
        c.G_reg_interval = opts.density_reg_every
    if opts.resume is not None and not opts.resume_blur:
        c.loss_kwargs.blur_init_sigma = 0  # Disable blur rampup.
        c.loss_kwargs.gpc_reg_fade_kimg = 0  # Disable swapping rampup.
    return c

#----------------------------------------------------------------------------
# The three EG3D datasets; only the rendering setup differs.

@registry.register('preset', 'ffhq')
@preset_defaults(required=EG3D_REQUIRED, **EG3D_DEFAULTS)
def ffhq(opts: dnnlib.EasyDict) -> dnnlib.EasyDict:
    """FFHQ faces: cameras at radius 2.7 looking at the head centre."""
    return eg3d_config(opts, depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3,
                       box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])

@registry.register('preset', 'afhq')
@preset_defaults(required=EG3D_REQUIRED, **EG3D_DEFAULTS)
def afhq(opts: dnnlib.EasyDict) -> dnnlib.EasyDict:
    """AFHQv2 cats: like ffhq, with a lower look-at pivot."""
    return eg3d_config(opts, depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3,
                       box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, -0.06])

@registry.register('preset', 'shapenet')
@preset_defaults(required=EG3D_REQUIRED, **EG3D_DEFAULTS)
def shapenet(opts: dnnlib.EasyDict) -> dnnlib.EasyDict:
    """ShapeNet cars: closer cameras, a larger box and a white background."""
    return eg3d_config(opts, depth_resolution=64, depth_resolution_importance=64, ray_start=0.1, ray_end=2.6,
                       box_warp=1.6, white_back=True, avg_camera_radius=1.7, avg_camera_pivot=[0, 0, 0])

#----------------------------------------------------------------------------
