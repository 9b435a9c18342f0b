"""RGB-D dataset tooling: zip writing, conversion, depth estimators, teacher embeddings, synthetic set, checks.

Depth value convention (shared by every writer and by `eg3d_ext.dataset_rgbd.RGBDDataset`):
  * a depth map is a 16-bit grayscale PNG `<stem>_depth.png` beside the image `<stem>.png`, same H x W;
  * values v in [0, 65535], **larger = farther** (3DGP); the loader returns v / 65536 * 2 - 1 in [-1, 1);
  * estimator output (relative or metric) is min-max normalised per image: v = (d - lo) / (hi - lo) * 65535,
    where d is depth-like (for disparity estimators d = -disparity, i.e. order-flipped, linear in disparity);
    `dataset.json["depth"]["ranges"]` stores (lo, hi) per image so metric depth can be recovered;
  * the synthetic set stores true ray distance t (along unit rays, EG3D/3DGP convention) with one global range:
    v = (t - near) / (far - near) * 65535, clipped, background = far; `dataset.json["depth"]` holds near/far.
"""
