"""Tri-plane volume rendering: ray sampling, importance sampling and ray marching (EG3D-compatible, non-persistent)."""
