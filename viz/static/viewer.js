// Viewer page logic: collects the controls, asks the server for frames (one request in flight, newest wins),
// and turns mouse drags / wheel into orbit yaw, pitch and radius.
'use strict';

const $ = (id) => document.getElementById(id);
let info = null;          // /api/info of the loaded network
let serial = 0;           // id of the latest render request
let inflight = false;     // a render request is waiting for the server
let dirty = false;        // controls changed while a request was in flight

async function api(path, body) {
  const opts = body === undefined ? {} : {method: 'POST', headers: {'Content-Type': 'application/json'},
                                          body: JSON.stringify(body)};
  const res = await fetch(path, opts);
  let data;
  try { data = await res.json(); } catch (e) { data = {error: `HTTP ${res.status}`}; }
  return {status: res.status, data};
}

function showError(msg) { $('error').textContent = msg || ''; }

function numOrNull(id) { const v = $(id).value.trim(); return v === '' ? null : Number(v); }

function params() {
  return {
    seed: Number($('seed').value) || 0,
    class_idx: $('class').value === '' ? null : Number($('class').value),
    psi: Number($('psi').value),
    camera: $('camera').value,
    yaw: Number($('yaw').value) || 0,
    pitch: Number($('pitch').value) || 0,
    radius: numOrNull('radius'),
    fov: numOrNull('fov'),
    view: $('view').value,
    nrr: numOrNull('nrr'),
  };
}

function applyInfo(i) {
  info = i;
  const ready = i.status === 'ready' || (i.generator && i.status !== 'loading');
  $('network').value = (i.load && i.load.network) || i.network || $('network').value;
  if (i.status === 'error') showError(i.error);
  if (!i.generator) { $('netinfo').textContent = i.status; return false; }
  $('netinfo').textContent = `${i.kind} ${i.generator}, ${i.img_resolution}px, ${i.device}`;
  const cls = $('class');
  cls.innerHTML = '<option value="">random (per seed)</option>';
  for (let k = 0; k < i.num_classes; k++) cls.insertAdjacentHTML('beforeend', `<option value="${k}">${k}</option>`);
  $('class-row').classList.toggle('hidden', i.num_classes === 0);
  $('camera').querySelector('option[value=learned]').disabled = !i.learns_camera;
  if ($('camera').value === 'learned' && !i.learns_camera) $('camera').value = 'orbit';
  $('nrr').value = i.default_nrr;
  resetCamera(false);
  $('options').textContent = JSON.stringify(i.training_options, null, 2);
  return ready;
}

function resetCamera(render = true) {
  $('yaw').value = 0; $('pitch').value = 0;
  if (info && info.camera) { $('radius').value = info.camera.radius.toFixed(3); $('fov').value = info.camera.fov.toFixed(3); }
  if (render) requestRender();
}

async function requestRender() {
  if (!info || !info.generator) return;
  if (inflight) { dirty = true; return; }
  inflight = true;
  const id = ++serial;
  const p = params();
  $('status').textContent = 'Rendering...';
  try {
    const {status, data} = await api('/api/render', {...p, request: id});
    if (status === 200) {
      const img = $('frame');
      img.src = data.image;
      img.dataset.seed = p.seed;
      img.dataset.request = id;
      const c = data.camera || {};
      const fmt = (x) => (x === undefined ? '?' : x.toFixed(2));
      // Sampled cameras are reported in 3DGP's convention (yaw about +z, pitch = polar angle, pinhole fov).
      $('status').textContent = `seed ${p.seed}, ${data.width}x${data.height}, ${data.ms} ms` + (p.camera === 'orbit' ? '' :
        ` | ${p.camera} camera: yaw ${fmt(c.yaw)} polar ${fmt(c.pitch)} radius ${fmt(c.radius)} fov ${fmt(c.fov)}`);
      showError(data.note || '');
    } else if (status !== 409) {
      showError(data.error || `render failed (HTTP ${status})`);
      $('status').textContent = 'Render failed';
    }
  } catch (e) {
    showError(`server unreachable: ${e}`);
  } finally {
    inflight = false;
    if (dirty) { dirty = false; requestRender(); }
  }
}

async function pollInfo() {
  const {data} = await api('/api/info');
  applyInfo(data);
  if (data.status === 'loading') { $('status').textContent = 'Loading network...'; setTimeout(pollInfo, 500); return; }
  if (data.generator) requestRender(); else $('status').textContent = 'No network loaded';
}

async function loadNetwork() {
  $('status').textContent = 'Loading network...';
  showError('');
  const {status, data} = await api('/api/load', {network: $('network').value});
  if (status !== 200) { showError(data.error); $('status').textContent = 'Load failed'; return; }
  applyInfo(data);
  requestRender();
}

async function exportAction(path, extra) {
  $('export-result').textContent = 'Working...';
  const {status, data} = await api(path, {...params(), ...extra});
  $('export-result').textContent = status === 200 ? `Saved ${data.path}` : `Error: ${data.error}`;
}

function setupOrbit() {
  const img = $('frame');
  let drag = null;
  img.addEventListener('mousedown', (e) => { drag = {x: e.clientX, y: e.clientY}; img.style.cursor = 'grabbing'; });
  window.addEventListener('mouseup', () => { drag = null; img.style.cursor = 'grab'; });
  window.addEventListener('mousemove', (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag = {x: e.clientX, y: e.clientY};
    $('camera').value = 'orbit';
    $('yaw').value = (Number($('yaw').value) - dx * 0.01).toFixed(3);
    $('pitch').value = Math.max(-1.5, Math.min(1.5, Number($('pitch').value) - dy * 0.01)).toFixed(3);
    requestRender();
  });
  img.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = Number($('radius').value) || (info && info.camera ? info.camera.radius : 1);
    $('radius').value = (r * Math.exp(e.deltaY * 0.001)).toFixed(3);
    $('camera').value = 'orbit';
    requestRender();
  }, {passive: false});
}

window.addEventListener('DOMContentLoaded', () => {
  for (const id of ['seed', 'class', 'camera', 'yaw', 'pitch', 'radius', 'fov', 'view', 'nrr'])
    $(id).addEventListener('change', requestRender);
  $('psi').addEventListener('input', () => { $('psi-val').textContent = Number($('psi').value).toFixed(2); requestRender(); });
  $('seed-prev').onclick = () => { $('seed').value = Math.max(0, Number($('seed').value) - 1); requestRender(); };
  $('seed-next').onclick = () => { $('seed').value = Number($('seed').value) + 1; requestRender(); };
  $('reset-camera').onclick = () => resetCamera(true);
  $('load').onclick = loadNetwork;
  $('save-image').onclick = () => exportAction('/api/save_image', {});
  $('export-mesh').onclick = () => exportAction('/api/export_mesh', {mesh_res: Number($('mesh-res').value)});
  setupOrbit();
  pollInfo();
});
