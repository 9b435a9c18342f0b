"""Tiny 3DGP networks shared by the eg3d_ext tests (CPU, seconds)."""


def tiny_G(c_dim: int = 3, **kwargs):
    from eg3d_ext.generator import Generator
    kw = dict(patch_resolution=8, tri_plane_resolution=16, tri_plane_channels=8, mlp_kwargs=dict(hid_dim=16),
              rendering_kwargs=dict(depth_resolution=6, depth_resolution_importance=6), mapping_kwargs=dict(num_layers=2),
              channel_base=256, channel_max=16, num_fp16_res=0, camera_generator_kwargs=dict(hid_dim=16),
              depth_adaptor_kwargs=dict(hid_dim=8))
    kw.update(kwargs)
    return Generator(16, c_dim, 16, 16, **kw)

def tiny_D(c_dim: int = 3, **kwargs):
    from eg3d_ext.discriminator import Discriminator
    kw = dict(patch_resolution=8, channel_base=128, channel_max=16, kd_dim=12, mbstd_group_size=2)
    kw.update(kwargs)
    return Discriminator(c_dim, 16, **kw)
