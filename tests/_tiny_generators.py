"""Tiny random-init EG3D and 3DGP generators and their pickles, shared by the generation-tool and viewer tests."""

import pickle

import torch

#----------------------------------------------------------------------------

def eg3d_rendering_kwargs(depth_resolution: int) -> dict:
    """EG3D FFHQ rendering options at 128 px (2X SR), with `depth_resolution` coarse and importance samples."""
    return dict(image_resolution=128, disparity_space_sampling=False, clamp_mode='softplus',
        superresolution_module='training.superresolution.SuperresolutionHybrid2X', c_gen_conditioning_zero=False,
        gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004,
        reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=depth_resolution,
        depth_resolution_importance=depth_resolution, ray_start=2.25, ray_end=3.3, box_warp=1, avg_camera_radius=2.7,
        avg_camera_pivot=[0, 0, 0.2])

def tiny_eg3d_G():
    """Smallest EG3D config the official layout allows: 2X SR to 128 px (w_dim 512 is fixed by the SR blocks),
    a 256^2 backbone with 4-16 channels, rendering 16^2 x (4 + 4) samples."""
    from training.triplane import TriPlaneGenerator
    rk = eg3d_rendering_kwargs(depth_resolution=4)
    torch.manual_seed(0)
    G = TriPlaneGenerator(z_dim=512, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, rendering_kwargs=rk,
        mapping_kwargs=dict(num_layers=2), channel_base=512, channel_max=16, num_fp16_res=0, sr_num_fp16_res=0)
    G.neural_rendering_resolution = 16
    return G.eval().requires_grad_(False)

def tiny_3dgp_G():
    from eg3d_ext.generator import Generator
    torch.manual_seed(0)
    return Generator(16, 3, 16, 32, patch_resolution=8, tri_plane_resolution=16, tri_plane_channels=8,
        mlp_kwargs=dict(hid_dim=16), rendering_kwargs=dict(depth_resolution=6, depth_resolution_importance=6),
        mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16, num_fp16_res=0,
        camera_generator_kwargs=dict(hid_dim=16), depth_adaptor_kwargs=dict(hid_dim=8)).eval().requires_grad_(False)

def write_pickle(G, path, training_set_kwargs=None):
    with open(path, 'wb') as f:
        pickle.dump(dict(training_set_kwargs=training_set_kwargs, G=G, D=torch.nn.Identity(), G_ema=G,
                         augment_pipe=None), f)
    return str(path)

#----------------------------------------------------------------------------
