"""Browser viewer for EG3D and 3DGP generators: a render worker (renderer.py) behind a local HTTP app (server.py)."""

#----------------------------------------------------------------------------
