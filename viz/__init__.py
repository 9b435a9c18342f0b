"""Browser viewer for EG3D and 3DGP generators: a render back end (renderer.py) behind a viser web app (server.py)."""

#----------------------------------------------------------------------------
