"""3DGP extension of the EG3D codebase: learned cameras, depth adaptor, distillation head and RGB-D datasets."""
