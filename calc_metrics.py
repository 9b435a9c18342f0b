"""Calculate quality metrics for a network pickle (EG3D or 3DGP) and append them to the run's metric-*.jsonl."""

import copy
import json
import os
import tempfile
from typing import List

import click
import torch

import dnnlib
from dnnlib import registry

#----------------------------------------------------------------------------

def subprocess_fn(rank: int, args: dnnlib.EasyDict, temp_dir: str) -> None:
    """One process per GPU (or a single CPU process): load G, compute every metric, report from rank 0."""
    from metrics import metric_main, metric_utils
    import gen_utils
    dnnlib.util.Logger(should_flush=True)

    # Init torch.distributed (NCCL on GPUs, gloo otherwise).
    if args.num_gpus > 1:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        backend = 'nccl' if args.device == 'cuda' else 'gloo'
        torch.distributed.init_process_group(backend=backend, init_method=f'file://{init_file}', rank=rank,
                                             world_size=args.num_gpus)

    # Init torch_utils and the device (TF32 off: metrics are compared with published numbers).
    device = torch.device('cuda', rank) if args.device == 'cuda' else torch.device('cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    from torch_utils import training_stats
    from torch_utils.ops import conv2d_gradfix
    sync_device = device if args.num_gpus > 1 else None
    training_stats.init_multiprocessing(rank=rank, sync_device=sync_device)
    conv2d_gradfix.enabled = True

    G = copy.deepcopy(args.G).eval().requires_grad_(False).to(device)
    if rank == 0 and args.verbose:
        print(f'Loaded {type(G).__name__} ({"3DGP, learns cameras" if gen_utils.learns_camera(G) else "EG3D"}) '
              f'from {args.network_pkl}')

    progress = metric_utils.ProgressMonitor(verbose=args.verbose)
    for metric in args.metrics:
        if rank == 0 and args.verbose:
            print(f'Calculating {metric}...')
        result_dict = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=copy.deepcopy(args.dataset_kwargs),
            num_gpus=args.num_gpus, rank=rank, device=device, progress=progress, detector_dir=args.detector_dir)
        if rank == 0:
            metric_main.report_metric(result_dict, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)
        if rank == 0 and args.verbose:
            print()
    if rank == 0 and args.verbose:
        print('Exiting...')

#----------------------------------------------------------------------------

def parse_comma_separated_list(s) -> List[str]:
    if isinstance(s, list):
        return s
    if s is None or s.lower() == 'none' or s == '':
        return []
    return s.split(',')

def load_network(network_pkl: str) -> dict:
    """legacy.load_network_pkl with file problems turned into one clear CLI error."""
    import legacy
    try:
        return legacy.load_network(network_pkl)  # .pkl or weights-only .safetensors
    except (IOError, OSError, ValueError) as err: # includes MissingWeightsError
        raise click.ClickException(f'Cannot load --network {network_pkl}: {err}')

def data_kwargs(data: str) -> dnnlib.EasyDict:
    """Dataset options for --data: EG3D's ImageFolderDataset, or the registered 'rgbd' loader for RGB-D zips, whose
    '<name>_depth.png' maps must not be counted as images (depth and embeddings are not loaded for metrics)."""
    from metrics.dataset_files import DatasetFiles
    try:
        has_depth = any(name.endswith('_depth.png') for name in DatasetFiles(data).names)
    except (ValueError, OSError) as err:
        raise click.ClickException(f'--data: {err}')
    if has_depth and 'rgbd' not in registry.names('dataset'):
        raise click.ClickException(f'--data {data} holds depth maps (*_depth.png), but no RGB-D dataset loader is '
                                   f'registered to skip them; install the project (pip install -e .) so that the '
                                   f'eg3d_ext plugin registers it')
    if has_depth:
        target = registry.get('dataset', 'rgbd')
        class_name = target if isinstance(target, str) else f'{target.__module__}.{target.__qualname__}'
        return dnnlib.EasyDict(class_name=class_name, path=data, use_depth=False, use_embeddings=False)
    return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data)

@click.command()
@click.pass_context
@click.option('network_pkl', '--network', help='Network pickle filename or URL', metavar='PATH', required=True)
@click.option('--metrics', help='Quality metrics', metavar='[NAME|A,B,C|none]', type=parse_comma_separated_list, default='fid50k_full', show_default=True)
@click.option('--data', help='Dataset to evaluate against  [default: look up]', metavar='[ZIP|DIR]')
@click.option('--mirror', help='Enable dataset x-flips  [default: look up]', type=bool, metavar='BOOL')
@click.option('--gpus', help='Number of GPUs to use', type=click.IntRange(min=1), default=1, metavar='INT', show_default=True)
@click.option('--device', help='Device type', type=click.Choice(['auto', 'cuda', 'cpu']), default='auto', show_default=True)
@click.option('--detector-dir', help='Folder with detector pickles (inception-2015-12-05.pkl, vgg16.pkl)  [default: $EG3D_DETECTOR_DIR, else download cache]', metavar='DIR')
@click.option('--verbose', help='Print optional information', type=bool, default=True, metavar='BOOL', show_default=True)
def calc_metrics(ctx, network_pkl, metrics, data, mirror, gpus, device, detector_dir, verbose):
    """Calculate quality metrics for previous training run or pretrained network pickle.

    \b
    Examples:

    \b
    # FID of an EG3D pickle against its training data (looked up from the pickle).
    python calc_metrics.py --metrics=fid50k_full,kid50k_full --network=ffhq512-128.pkl

    \b
    # 3DGP metrics on the synthetic set, with detectors stored offline.
    python calc_metrics.py --metrics=fid2k_full,nfs256,camera_w1,depth_err --network=network-snapshot-000400.pkl \\
        --data=synthetic.zip --mirror=0 --detector-dir ~/detectors

    \b
    Available metrics: fid50k_full, kid50k_full, pr50k3_full, is50k, fid50k, kid50k, pr50k3 (EG3D/StyleGAN);
    fid2k_full, nfs256 (3DGP); camera_w1, depth_err (data sets with known cameras and depth).
    """
    registry.load_plugins()
    from metrics import metric_main, metric_utils
    dnnlib.util.Logger(should_flush=True)

    # Validate arguments.
    args = dnnlib.EasyDict(metrics=metrics, num_gpus=gpus, network_pkl=network_pkl, verbose=verbose,
                           detector_dir=detector_dir)
    if not all(metric_main.is_valid_metric(metric) for metric in args.metrics):
        ctx.fail('\n'.join(['--metrics can only contain the following values:'] + metric_main.list_valid_metrics()))
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        ctx.fail('--device=cuda, but CUDA is not available')
    if device == 'cuda' and args.num_gpus > torch.cuda.device_count():
        ctx.fail(f'--gpus={args.num_gpus}, but only {torch.cuda.device_count()} GPUs are available')
    args.device = device
    if detector_dir is not None and not os.path.isdir(detector_dir):
        ctx.fail(f'--detector-dir {detector_dir!r} is not a folder')

    # Load network (once; spawned processes receive it pickled).
    network_dict = load_network(network_pkl)
    args.G = network_dict['G_ema'] # subclass of torch.nn.Module

    # Find (or download) the detectors before any metric work (after the network, so a bad --network is reported
    # first): with --gpus > 1 a worker would report a missing file as a multiprocessing exception, not this line.
    try:
        metric_utils.prepare_detectors(metric_main.detector_urls(args.metrics), detector_dir, verbose=verbose)
    except dnnlib.util.MissingWeightsError as err:
        raise click.ClickException(str(err))

    # Initialize dataset options.
    if data is not None:
        args.dataset_kwargs = data_kwargs(data)
    elif network_dict['training_set_kwargs'] is not None:
        args.dataset_kwargs = dnnlib.EasyDict(network_dict['training_set_kwargs'])
    else:
        ctx.fail('Could not look up dataset options; please specify --data')

    # Finalize dataset options.
    args.dataset_kwargs.resolution = args.G.img_resolution
    args.dataset_kwargs.use_labels = (args.G.c_dim != 0)
    if mirror is not None:
        args.dataset_kwargs.xflip = mirror
    try:
        dnnlib.util.construct_class_by_name(**args.dataset_kwargs) # fail early, with the loader's message
    except (IOError, OSError, ValueError) as err:
        raise click.ClickException(f'Cannot open the dataset: {err}')

    # Print dataset options.
    if args.verbose:
        print('Dataset options:')
        print(json.dumps(args.dataset_kwargs, indent=2, default=str))

    # Locate run dir.
    args.run_dir = None
    if os.path.isfile(network_pkl):
        pkl_dir = os.path.dirname(os.path.abspath(network_pkl))
        if os.path.isfile(os.path.join(pkl_dir, 'training_options.json')):
            args.run_dir = pkl_dir

    # Launch processes.
    if args.verbose:
        print('Launching processes...')
    torch.multiprocessing.set_start_method('spawn', force=True)
    try:
        with tempfile.TemporaryDirectory() as temp_dir:
            if args.num_gpus == 1:
                subprocess_fn(rank=0, args=args, temp_dir=temp_dir)
            else:
                torch.multiprocessing.spawn(fn=subprocess_fn, args=(args, temp_dir), nprocs=args.num_gpus)
    except dnnlib.util.MissingWeightsError as err:
        raise click.ClickException(str(err))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    calc_metrics() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
