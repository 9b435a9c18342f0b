"""Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN radii on VGG16 features, as in EG3D/StyleGAN."""

from typing import Optional, Tuple

import torch

from . import metric_utils

#----------------------------------------------------------------------------

def compute_distances(row_features: torch.Tensor, col_features: torch.Tensor, num_gpus: int = 1, rank: int = 0,
                      col_batch_size: int = 10000) -> Optional[torch.Tensor]:
    """Euclidean distances [rows, cols]; column batches are split over ranks and gathered on rank 0."""
    assert 0 <= rank < num_gpus
    num_cols = col_features.shape[0]
    num_batches = ((num_cols - 1) // col_batch_size // num_gpus + 1) * num_gpus
    col_batches = torch.nn.functional.pad(col_features, [0, 0, 0, -num_cols % num_batches]).chunk(num_batches)
    dist_batches = []
    for col_batch in col_batches[rank::num_gpus]:
        if row_features.device.type == 'cuda':
            dist_batch = torch.cdist(row_features.unsqueeze(0), col_batch.unsqueeze(0))[0]
        else: # CPU cdist has no float16 kernel: compute in float32 on the float16 values, round like the GPU result.
            dist_batch = torch.cdist(row_features.float().unsqueeze(0), col_batch.float().unsqueeze(0))[0].to(row_features.dtype)
        for src in range(num_gpus):
            dist_broadcast = dist_batch.clone()
            if num_gpus > 1:
                torch.distributed.broadcast(dist_broadcast, src=src)
            dist_batches.append(dist_broadcast.cpu() if rank == 0 else None)
    return torch.cat(dist_batches, dim=1)[:, :num_cols] if rank == 0 else None

def precision_recall(real_features: torch.Tensor, gen_features: torch.Tensor, nhood_size: int = 3,
                     row_batch_size: int = 10000, col_batch_size: int = 10000, num_gpus: int = 1,
                     rank: int = 0) -> Tuple[float, float]:
    """Precision = share of fakes inside the real manifold (union of balls reaching each real's k-th neighbour);
    recall = the same with the roles swapped. Features are rounded to float16 as in EG3D."""
    real_features = real_features.to(torch.float16)
    gen_features = gen_features.to(torch.float16)
    results = dict()
    for name, manifold, probes in [('precision', real_features, gen_features), ('recall', gen_features, real_features)]:
        if manifold.shape[0] <= nhood_size:
            raise ValueError(f'{name} needs more than nhood_size={nhood_size} samples, got {manifold.shape[0]}')
        kth = []
        for manifold_batch in manifold.split(row_batch_size):
            dist = compute_distances(manifold_batch, manifold, num_gpus, rank, col_batch_size)
            kth.append(dist.to(torch.float32).kthvalue(nhood_size + 1).values.to(torch.float16) if rank == 0 else None)
        kth = torch.cat(kth) if rank == 0 else None
        pred = []
        for probes_batch in probes.split(row_batch_size):
            dist = compute_distances(probes_batch, manifold, num_gpus, rank, col_batch_size)
            pred.append((dist <= kth).any(dim=1) if rank == 0 else None)
        results[name] = float(torch.cat(pred).to(torch.float32).mean()) if rank == 0 else float('nan')
    return results['precision'], results['recall']

#----------------------------------------------------------------------------

def compute_pr(opts: metric_utils.MetricOptions, max_real: Optional[int], num_gen: int, nhood_size: int,
               row_batch_size: int, col_batch_size: int) -> Tuple[float, float]:
    """(precision, recall) of `num_gen` fakes against up to `max_real` reals in VGG16 feature space, with k =
    `nhood_size` neighbourhoods; distances are computed in row x column batches split over ranks. NaNs off rank 0."""
    detector_url = metric_utils.DETECTOR_URLS.vgg16
    detector_kwargs = dict(return_features=True)

    real_features = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=0, capture_all=True, max_items=max_real).get_all_torch().to(opts.device)
    gen_features = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=1, capture_all=True, max_items=num_gen).get_all_torch().to(opts.device)
    return precision_recall(real_features, gen_features, nhood_size, row_batch_size, col_batch_size,
                            opts.num_gpus, opts.rank)

#----------------------------------------------------------------------------
