"""Headless Chromium (Debian's package, driven by Playwright) opens the viewer, changes the seed, orbits, saves a screenshot
(docs/viewer.png when missing or with UPDATE_SCREENSHOT=1)."""

import base64
import io
import os
import shutil

import numpy as np
import PIL.Image
import pytest

import dnnlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOT = os.path.join(ROOT, 'docs', 'viewer.png')
CHROMIUM = next((p for p in (os.environ.get('CHROMIUM_PATH'), shutil.which('chromium'), '/usr/bin/chromium',
                             shutil.which('chromium-browser')) if p and os.path.isfile(p)), None)
# The machine's network is closed: no background services, no QUIC, a fresh profile (user_data_dir below).
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']

#----------------------------------------------------------------------------

def frame_pixels(page) -> np.ndarray:
    src = page.get_attribute('#frame', 'src')
    assert src.startswith('data:image/png;base64,')
    return np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1]))).convert('RGB')).astype(int)

@pytest.mark.skipif(CHROMIUM is None, reason='no Chromium installed (tests/viz/install_browser.sh installs it as root)')
def test_browser_change_seed_orbit_and_screenshot(viewer, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('Chromium is installed but the Python package playwright is not: pip install -e ".[test]"')
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / 'profile'), executable_path=CHROMIUM, headless=True,
                                                    args=CHROMIUM_ARGS, viewport=dict(width=960, height=640))
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(30000)
            page.goto(viewer.url)
            page.wait_for_selector('#frame[data-request]') # the first frame arrived
            assert page.get_attribute('#frame', 'data-seed') == '0'
            assert 'EG3D' in page.text_content('#netinfo')
            assert '"training_set_kwargs"' in page.text_content('#options')
            seed0 = frame_pixels(page)
            assert seed0.shape == (128, 128, 3)

            # Change the seed with the + button: a new frame with another image.
            page.click('#seed-next')
            page.wait_for_function("document.getElementById('frame').dataset.seed === '1'")
            seed1 = frame_pixels(page)
            assert np.abs(seed0 - seed1).mean() > 0.5
            assert 'seed 1' in page.text_content('#status')

            # Orbit: dragging across the image turns the camera (yaw field) and re-renders.
            box = page.locator('#frame').bounding_box()
            x, y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
            request = page.get_attribute('#frame', 'data-request')
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x - 60, y, steps=4)
            page.mouse.up()
            assert float(page.input_value('#yaw')) == pytest.approx(0.6, abs=1e-6)
            page.wait_for_function(f"document.getElementById('frame').dataset.request !== '{request}' && "
                                   "!document.getElementById('status').textContent.startsWith('Rendering')")
            assert np.abs(frame_pixels(page) - seed1).mean() > 0.5

            # Depth view, then the screenshot for the README.
            page.select_option('#view', 'depth')
            page.wait_for_function("document.getElementById('frame').naturalWidth === 16")
            page.select_option('#view', 'rgb')
            page.wait_for_function("document.getElementById('frame').naturalWidth === 128")
            # docs/viewer.png is refreshed only when missing or asked for, so `make test` leaves the tree clean.
            shot = SCREENSHOT if os.environ.get('UPDATE_SCREENSHOT') or not os.path.isfile(SCREENSHOT) \
                else str(tmp_path / 'viewer.png')
            png = page.screenshot()
            with dnnlib.util.atomic_write(shot, 'wb') as f:
                f.write(png)
            assert PIL.Image.open(shot).size == (960, 640)

            # A bad network path shows a message in the page; the viewer keeps running.
            page.fill('#network', str(tmp_path / 'missing.pkl'))
            page.click('#load')
            page.wait_for_function("document.getElementById('error').textContent.includes('no such file')")
            assert 'missing.pkl' in page.text_content('#error')
        finally:
            ctx.close()
    viewer.load(viewer.network).done.wait(30) # leave the shared viewer as it was

#----------------------------------------------------------------------------
