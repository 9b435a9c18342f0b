"""Interactive browser viewer for EG3D and 3DGP generators, built on viser: `python viewer.py --network=net.pkl`, then
open the URL."""

import logging
import os
import sys
import time
from typing import Optional

import click

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network', help='Network pickle (EG3D or 3DGP) or .safetensors file; can also be loaded from the page', metavar='PATH')
@click.option('--host', default='127.0.0.1', show_default=True, help='Address to bind; anything but loopback exposes the viewer to the network')
@click.option('--port', type=click.IntRange(0, 65535), default=8080, show_default=True, help='Port to listen on (0 = any free port; a taken port moves on to the next)')
@click.option('--device', type=click.Choice(['auto', 'cuda', 'cpu']), default='auto', show_default=True, help='Where the generator runs')
@click.option('--outdir', default='viewer_out', show_default=True, help='Where "save image" and "export mesh" write files', metavar='DIR')
@click.option('--verbose', is_flag=True, help='Log browser connections and debug messages')
def main(network: Optional[str], host: str, port: int, device: str, outdir: str, verbose: bool):
    """Serve a web page (viser) for exploring a trained generator in 3D: orbit/zoom camera, seed, class and
    truncation, 3DGP learned cameras, RGB / depth / adapted-depth views, image and mesh export (written to --outdir
    and offered as downloads), and the training options.

    \b
    Examples:

    \b
    # On the training machine, then on your laptop: ssh -L 8080:127.0.0.1:8080 server, and open http://127.0.0.1:8080/
    python viewer.py --network=training-runs/00000-ffhq/network-snapshot-000400.pkl

    \b
    # CPU only (lower the neural rendering resolution in the page for speed)
    python viewer.py --network=ffhq512-128.pkl --device=cpu --port=8081
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                        datefmt='%H:%M:%S')
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__))) # viz/, gen_utils, legacy from this checkout
    import torch
    from viz.server import ViewerServer, is_loopback

    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    elif device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device=cuda, but no CUDA device is available here')
    if not is_loopback(host):
        logging.warning('Binding to %s: anyone who can reach this port can use the viewer, load pickles from this '
                        'machine (unpickling runs code) and write into --outdir. Prefer the default 127.0.0.1 with an '
                        'SSH tunnel.', host)

    server = ViewerServer(network=network, host=host, port=port, device=device, outdir=outdir, verbose=verbose)
    try:
        url = server.start()
    except IOError as err:
        raise click.ClickException(str(err)) from err
    print(f'Viewer running at {url}  (device {device}; Ctrl+C to stop)', flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print('Stopping.')
    finally:
        server.close()

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
