"""Headless Chromium (Debian's package, driven by Playwright) opens the viewer, checks that the page shows the frame of
the browser's own camera, changes the seed, orbits, downloads a saved image and takes the README's screenshot
(docs/viewer.png when missing or with UPDATE_SCREENSHOT=1)."""

import io
import os
import shutil
import time

import numpy as np
import PIL.Image
import pytest

import dnnlib
from viz.server import letterbox

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOT = os.path.join(ROOT, 'docs', 'viewer.png')
CHROMIUM = next((p for p in (os.environ.get('CHROMIUM_PATH'), shutil.which('chromium'), '/usr/bin/chromium',
                             shutil.which('chromium-browser')) if p and os.path.isfile(p)), None)
# The machine's network is closed: no background services, no QUIC, a fresh profile (user_data_dir below). viser draws
# with WebGL, which headless Chromium without a GPU gets from SwiftShader.
CHROMIUM_ARGS = ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--disable-quic',
                 '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

#----------------------------------------------------------------------------

def wait_for(cond, what, timeout=60):
    t_end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t_end, f'timed out waiting for {what}'
        time.sleep(0.1)

def canvas_pixels(page) -> np.ndarray:
    """The 3D canvas as the user sees it (the frame is its background), [H,W,3] int."""
    png = page.locator('canvas').first.screenshot()
    return np.asarray(PIL.Image.open(io.BytesIO(png)).convert('RGB')).astype(int)

def as_canvas(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    """The frame as the page should draw it on a w x h canvas: letterboxed and scaled, [H,W,3] int."""
    return np.asarray(PIL.Image.fromarray(letterbox(frame, w, h)).resize((w, h), PIL.Image.BILINEAR)).astype(int)

def shows(page, frame: np.ndarray) -> float:
    """Mean abs difference between the canvas and the frame as drawn on it (small: the frame is shown)."""
    shot = canvas_pixels(page)
    return float(np.abs(shot - as_canvas(frame, shot.shape[1], shot.shape[0])).mean())

def wait_shown(page, frame, timeout=30):
    """Wait until the page displays `frame` (the image travels over the websocket and is drawn by WebGL)."""
    wait_for(lambda: shows(page, frame) < 8, 'the frame to appear in the page', timeout)

@pytest.mark.skipif(CHROMIUM is None, reason='no Chromium installed (tests/viz/install_browser.sh installs it as root)')
def test_browser_change_seed_orbit_save_and_screenshot(viewer, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('Chromium is installed but the Python package playwright is not: pip install -e ".[test]"')
    try:
        run_in_browser(sync_playwright, viewer, tmp_path)
    finally: # leave the shared viewer as it was, whatever failed
        viewer.load(viewer.network).done.wait(30)
        viewer.gui_seed.value = 0

def run_in_browser(sync_playwright, viewer, tmp_path):
    """The test's steps in one headless Chromium page; at the end the closed tab leaves viewer.frames."""
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / 'profile'), executable_path=CHROMIUM, headless=True,
                                                    args=CHROMIUM_ARGS, viewport=dict(width=1100, height=640),
                                                    accept_downloads=True)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(30000)
            page.goto(viewer.url)
            wait_for(lambda: len(viewer.viser.get_clients()) == 1, 'the page to connect')
            client = next(iter(viewer.viser.get_clients().values()))
            wait_for(lambda: client.client_id in viewer.frames, 'the first frame')
            page.get_by_text('TriPlaneGenerator').wait_for() # the network panel
            for close in page.locator('.mantine-Notification-closeButton').all(): # "software WebGL" notice
                close.click()

            # The page starts at the generator's frontal camera, and shows the frame rendered from it.
            cam = np.array(viewer.renderer.info['camera']['pose']).reshape(4, 4)
            wait_for(lambda: np.allclose(client.camera.position, cam[:3, 3], atol=1e-4), 'the frontal camera')
            assert np.allclose(client.camera.look_at, [0, 0, 0.2], atol=1e-4)
            first = viewer.frames[client.client_id]
            assert first['params'].seed == 0 and first['image'].shape == (128, 128, 3)
            wait_shown(page, first['image'])
            before = canvas_pixels(page)

            # Change the seed in the page: a new frame with another image, shown in the page.
            seed = page.get_by_label('Seed')
            seed.fill('1')
            seed.press('Enter')
            wait_for(lambda: viewer.frames[client.client_id]['params'].seed == 1, 'the frame of seed 1')
            second = viewer.frames[client.client_id]
            assert np.abs(second['image'].astype(int) - first['image']).mean() > 0.5
            wait_shown(page, second['image'])
            # The canvas changes by about as much as the two frames differ as drawn on it (wait_shown alone cannot
            # tell two close frames apart); half of it leaves room for the browser's own filtering.
            h, w = before.shape[:2]
            change = np.abs(as_canvas(second['image'], w, h) - as_canvas(first['image'], w, h)).mean()
            wait_for(lambda: np.abs(canvas_pixels(page) - before).mean() > change / 2, 'the page to show seed 1')
            assert 'seed 1' in viewer.gui_status.content

            # Orbit: dragging on the canvas turns the browser's camera, and the frame follows it.
            box = page.locator('canvas').first.bounding_box()
            x, y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x - 80, y, steps=4)
            page.mouse.up()
            wait_for(lambda: abs(client.camera.position[0]) > 0.1, 'the camera to orbit')
            wait_for(lambda: viewer.frames[client.client_id]['params'].pose[3] == pytest.approx(
                client.camera.position[0]), 'the frame of the turned camera')
            turned = viewer.frames[client.client_id]
            assert np.abs(turned['image'].astype(int) - second['image']).mean() > 0.5
            wait_shown(page, turned['image'])

            # The README's screenshot. docs/viewer.png is refreshed only when missing or asked for, so that
            # `make test` leaves the tree clean.
            shot = SCREENSHOT if os.environ.get('UPDATE_SCREENSHOT') or not os.path.isfile(SCREENSHOT) \
                else str(tmp_path / 'viewer.png')
            page.mouse.move(0, 0)
            png = page.screenshot()
            with dnnlib.util.atomic_write(shot, 'wb') as f:
                f.write(png)
            assert PIL.Image.open(shot).size == (1100, 640)

            # Save image: written to --outdir and downloaded by the browser, the same PNG.
            with page.expect_download() as download:
                page.get_by_role('button', name='Save image').click()
            saved = download.value.path()
            written = os.path.join(viewer.renderer.outdir, download.value.suggested_filename)
            with open(saved, 'rb') as a, open(written, 'rb') as b:
                assert a.read() == b.read()
            assert np.array_equal(np.asarray(PIL.Image.open(saved).convert('RGB')), turned['image'])

            # A bad network path shows a message in the page; the viewer keeps running.
            path_row = page.locator('.mantine-Flex-root').filter(has=page.get_by_text('Path', exact=True))
            path_box = path_row.locator('input') # viser labels this input by a tooltip, not a <label for>
            path_box.fill(str(tmp_path / 'missing.pkl'))
            path_box.press('Enter')
            page.get_by_role('button', name='Load').click()
            page.get_by_text('no such file').first.wait_for()
            assert 'missing.pkl' in viewer.gui_message.content and viewer.info()['status'] == 'error'
        finally:
            ctx.close()
    wait_for(lambda: not viewer.frames, 'the closed tab to leave the frames')

#----------------------------------------------------------------------------
