"""The 3DGP D accepts EG3D's G-output dict (the shared training loop's network summary calls D(G(z, c), c))."""

import torch
import torch.nn.functional as F

from tests.eg3d_ext._tiny import tiny_D, tiny_G

def test_dict_input_is_the_whole_image_as_one_patch():
    torch.manual_seed(0)
    G, D = tiny_G().eval(), tiny_D()
    c = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        out = G(torch.randn(4, 16), c)
        x = F.interpolate(torch.cat([out['image'], out['image_depth_adapted']], dim=1), size=(8, 8), mode='bilinear',
                          align_corners=False, antialias=True)
        ref = D(x, c, torch.tensor([[1.0, 0.0, 0.0]]).repeat(4, 1))
        torch.testing.assert_close(D(out, c), ref)
        assert D(out, c).shape == (4, 1)
