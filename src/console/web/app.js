'use strict';
// The console: one page, views by the URL's hash. Device text is always set
// as text, never as markup: endpoint names and values come from devices.

const $ = (sel) => document.querySelector(sel);
let csrf = null;
let leave = [];

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k !== undefined && k !== null) e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf || '';
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let j = null;
  try { j = await r.json(); } catch (_) { /* empty body */ }
  if (r.status === 401 && path !== '/api/login') {
    showLogin();
    throw new Error('login needed');
  }
  return { status: r.status, body: j };
}

function outcome(res) {
  const b = res.body || {};
  const text = b.error ? `${b.result}: ${b.error}` : `${b.result || res.status}`;
  return el('span', { class: b.error || res.status >= 400 ? 'error' : 'ok' }, text);
}

function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function showLogin() {
  csrf = null;
  cleanup();
  $('#nav').hidden = true;
  $('#view').replaceChildren();
  $('#login').hidden = false;
  $('#password').focus();
}

function cleanup() {
  for (const f of leave) f();
  leave = [];
}

$('#login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const res = await api('POST', '/api/login', { password: $('#password').value });
  $('#password').value = '';
  if (res.status === 200) {
    csrf = res.body.csrf;
    $('#login-error').textContent = '';
    start();
  } else {
    $('#login-error').textContent = (res.body && res.body.error) || `login failed (${res.status})`;
  }
});

$('#logout').addEventListener('click', async () => {
  await api('POST', '/api/logout');
  showLogin();
});

function start() {
  $('#login').hidden = true;
  $('#nav').hidden = false;
  if (!location.hash) location.hash = '#/devices';
  else show();
}

window.addEventListener('hashchange', () => { if (csrf) show(); });

function show() {
  cleanup();
  const [, view, arg] = location.hash.split('/');
  const v = $('#view');
  v.replaceChildren();
  if (view === 'device' && arg) deviceView(v, decodeURIComponent(arg));
  else if (view === 'ota') otaView(v);
  else if (view === 'health') healthView(v);
  else devicesView(v);
}

// Devices: sortable, filterable; only the first rows of a long list are
// drawn, so 10 000 devices stay quick.
const SHOWN = 500;
const COLUMNS = [
  ['endpoint', 'Endpoint'], ['profile', 'Profile'], ['state', 'State'],
  ['lastSeen', 'Last seen'], ['security', 'Security'], ['lwm2mVersion', 'LwM2M'],
];

async function devicesView(v) {
  const filter = el('input', { type: 'search', placeholder: 'filter', id: 'filter' });
  const count = el('span', { class: 'muted', id: 'count' });
  const body = el('tbody');
  const head = el('tr');
  let sort = 'endpoint';
  let up = true;
  let rows = [];
  v.append(el('h1', {}, 'Devices'), el('p', {}, filter, ' ', count),
    el('table', { id: 'devices' }, el('thead', {}, head), body));
  const draw = () => {
    const f = filter.value.toLowerCase();
    const list = rows.filter((d) => !f || COLUMNS.some(([k]) => String(d[k] ?? '').toLowerCase().includes(f)));
    list.sort((a, b) => {
      const x = a[sort] ?? '';
      const y = b[sort] ?? '';
      const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
      return up ? c : -c;
    });
    head.replaceChildren(...COLUMNS.map(([k, name]) => el('th', {
      class: k === sort ? (up ? 'sorted up' : 'sorted') : undefined,
      onclick: () => { if (sort === k) up = !up; else { sort = k; up = true; } draw(); },
    }, name)));
    body.replaceChildren(...list.slice(0, SHOWN).map((d) => el('tr', {},
      el('td', {}, el('a', { href: `#/device/${encodeURIComponent(d.endpoint)}` }, d.endpoint)),
      el('td', {}, d.profile || ''), el('td', {}, d.state),
      el('td', { title: d.lastSeen ? new Date(d.lastSeen).toISOString() : '' }, ago(d.lastSeen)),
      el('td', {}, d.security || ''), el('td', {}, d.lwm2mVersion || ''))));
    count.textContent = list.length > SHOWN
      ? `${SHOWN} of ${list.length} shown (of ${rows.length}); filter to narrow`
      : `${list.length} of ${rows.length}`;
  };
  filter.addEventListener('input', draw);
  const res = await api('GET', '/api/devices');
  rows = ((res.body && res.body.value) || []).map((d) => ({
    ...d, state: d.queueMode ? 'registered (queue mode)' : 'registered',
  }));
  draw();
}

// One device: registration, latest values, live values with plots,
// actions and their results.
async function deviceView(v, ep) {
  const res = await api('GET', `/api/devices/${encodeURIComponent(ep)}`);
  v.append(el('h1', {}, ep));
  if (res.status !== 200) {
    v.append(el('p', {}, outcome(res)));
    return;
  }
  const d = res.body.value;
  const cred = d.credential || {};
  // Names from the gateway's model library for what the device announced.
  const models = d.models || {};
  const named = (key) => {
    const m = /^\/(\d+)(?:\/(\d+))?(?:\/(\d+))?/.exec(key);
    const o = m && models[m[1]];
    if (!o) return '';
    if (m[3] === undefined) return o.name;
    return `${o.name}: ${o.resources[m[3]] || `resource ${m[3]}`}`;
  };
  v.append(el('p', { class: 'muted' },
    d.registered ? `registered from ${d.address}, LwM2M ${d.lwm2mVersion}, binding ${d.binding}, lifetime ${d.lifetime} s, last seen ${ago(d.lastSeen)}` : 'not registered',
    cred.mode ? `; security ${cred.mode}` : '', cred.profile ? `; profile ${cred.profile}` : ''));
  if (d.objects) {
    v.append(el('p', { class: 'muted', id: 'objects' }, 'objects: ',
      d.objects.map((o) => `${o}${named(o) ? ` (${named(o)})` : ''}`).join(', ')));
  }
  // Every resource of every announced instance, offered as paths.
  const paths = el('datalist', { id: 'paths' });
  for (const o of d.objects || []) {
    const m = /^\/(\d+)\/(\d+)$/.exec(o);
    const model = m && models[m[1]];
    if (!model) continue;
    for (const [rid, rname] of Object.entries(model.resources)) {
      paths.append(el('option', { value: `${o}/${rid}` }, `${model.name}: ${rname}`));
    }
  }
  v.append(paths);

  const result = el('pre', { id: 'result' });
  const method = el('select', { name: 'method' },
    ['Read', 'Observe', 'ObserveCancel', 'WriteReplace', 'WriteUpdate', 'Execute', 'Discover', 'Delete']
      .map((m) => el('option', {}, m)));
  const path = el('input', { name: 'path', value: '/3/0', placeholder: '/3/0/9', list: 'paths' });
  const value = el('input', { name: 'value', placeholder: 'value (Write) or arguments (Execute)' });
  const run = async (ev) => {
    ev.preventDefault();
    const params = { id: path.value };
    if (method.value.startsWith('Write') && value.value !== '') {
      let x = value.value;
      try { x = JSON.parse(x); } catch (_) { /* a string */ }
      params.value = x;
    }
    if (method.value === 'Execute' && value.value !== '') params.value = value.value;
    result.textContent = `${method.value} ${path.value} ...`;
    const r = await api('POST', `/api/devices/${encodeURIComponent(ep)}/rpc`, { method: method.value, params });
    result.replaceChildren(outcome(r), '\n', JSON.stringify(r.body && r.body.value, null, 1) ?? '');
    refreshLog();
  };
  const remove = async () => {
    if (!confirm(`Remove ${ep}: its credential and registration?`)) return;
    const r = await api('DELETE', `/api/devices/${encodeURIComponent(ep)}`);
    result.replaceChildren(outcome(r));
  };
  v.append(el('form', { class: 'actions', id: 'actions', onsubmit: run },
    method, ' ', path, ' ', value, ' ', el('button', { type: 'submit' }, 'Run'), ' ',
    el('button', { type: 'button', onclick: remove }, 'Remove device'), result));

  const latest = el('tbody', { id: 'values' });
  const cells = new Map();
  const put = (key, val, ts) => {
    let row = cells.get(key);
    if (!row) {
      row = { v: el('td', {}), t: el('td', { class: 'muted' }) };
      cells.set(key, row);
      latest.append(el('tr', { 'data-key': key }, el('td', {}, key), el('td', { class: 'muted' }, named(key)), row.v, row.t));
    }
    row.v.textContent = typeof val === 'object' ? JSON.stringify(val) : String(val);
    row.t.textContent = ts ? new Date(ts).toLocaleTimeString() : '';
  };
  for (const kind of ['telemetry', 'attributes']) {
    for (const [k, x] of Object.entries(d[kind] || {})) put(k, x.value, x.ts);
  }
  v.append(el('h2', {}, 'Values'), el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Key or path'), el('th', {}, 'Name'), el('th', {}, 'Value'), el('th', {}, 'Time'))), latest));

  // The transport log: registrations and command outcomes, for devices
  // whose profile has transport_log = true.
  const log = el('tbody', { id: 'transport-log' });
  const drawLog = (lines) => {
    log.replaceChildren(...(lines || []).slice().reverse().map((l) => el('tr', {},
      el('td', { class: 'muted' }, new Date(l.ts).toLocaleTimeString()), el('td', {}, l.line))));
    if (!log.children.length) {
      log.append(el('tr', {}, el('td', { class: 'muted', colspan: 2 }, 'no lines (a profile with transport_log = true keeps them)')));
    }
  };
  const refreshLog = async () => {
    const r = await api('GET', `/api/devices/${encodeURIComponent(ep)}`);
    if (r.status === 200) drawLog(r.body.value.transportLog);
  };
  drawLog(d.transportLog);
  const logTimer = setInterval(refreshLog, 5000);
  leave.push(() => clearInterval(logTimer));

  const canvas = el('canvas', { id: 'plot', width: 800, height: 220 });
  const legend = el('p', { class: 'muted' }, 'Numeric values plot here as they arrive.');
  v.append(el('h2', {}, 'Live'), canvas, legend,
    el('h2', {}, 'Transport log'), el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Time'), el('th', {}, 'Line'))), log));
  const series = new Map();
  const plot = () => plotSeries(canvas, series, legend);
  const es = new EventSource(`/api/events?endpoint=${encodeURIComponent(ep)}`);
  es.onmessage = (m) => {
    let r;
    try { r = JSON.parse(m.data); } catch (_) { return; }
    if (!r.values) return;
    for (const x of r.values) {
      put(x.path, x.value, x.ts);
      if (typeof x.value === 'number') {
        const s = series.get(x.path) || [];
        s.push([x.ts || Date.now(), x.value]);
        if (s.length > 600) s.shift();
        series.set(x.path, s);
      }
    }
    plot();
  };
  leave.push(() => es.close());
}

const COLORS = ['#2f7bd0', '#d0542f', '#2fa04a', '#8e44ad', '#c49a00', '#16a2b8'];

function plotSeries(canvas, series, legend) {
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  const all = [...series.values()].flat();
  if (!all.length) return;
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  let lo = Math.min(...all.map((p) => p[1]));
  let hi = Math.max(...all.map((p) => p[1]));
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (t) => 40 + (t - t0) / (t1 - t0) * (canvas.width - 50);
  const y = (v) => canvas.height - 15 - (v - lo) / (hi - lo) * (canvas.height - 30);
  g.fillStyle = '#6a737d';
  g.fillText(String(hi), 2, 12);
  g.fillText(String(lo), 2, canvas.height - 4);
  legend.replaceChildren();
  [...series.entries()].forEach(([path, pts], i) => {
    g.strokeStyle = COLORS[i % COLORS.length];
    g.beginPath();
    pts.forEach(([t, v], j) => (j ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    g.stroke();
    legend.append(el('span', { style: `color:${COLORS[i % COLORS.length]}` }, `${path} `));
  });
}

// OTA: images, running updates with progress, start and cancel.
async function otaView(v) {
  const images = el('tbody', { id: 'images' });
  const updates = el('tbody', { id: 'updates' });
  const msg = el('p', { id: 'ota-result' });
  const ep = el('input', { name: 'endpoint', placeholder: 'endpoint' });
  const image = el('select', { name: 'image' });
  const start = async (ev) => {
    ev.preventDefault();
    const r = await api('POST', '/api/ota/updates', { endpoint: ep.value, image: image.value });
    msg.replaceChildren(outcome(r));
    refresh();
  };
  v.append(el('h1', {}, 'OTA'),
    el('h2', {}, 'Images'), el('table', {}, el('thead', {}, el('tr', {}, ...['Title', 'Version', 'Kind', 'Size', 'Id'].map((h) => el('th', {}, h)))), images),
    el('h2', {}, 'Updates'),
    el('form', { class: 'actions', onsubmit: start }, ep, ' ', image, ' ', el('button', { type: 'submit' }, 'Start update')), msg,
    el('table', {}, el('thead', {}, el('tr', {}, ...['Device', 'Image', 'State', 'Progress', ''].map((h) => el('th', {}, h)))), updates));
  const refresh = async () => {
    const [imgs, ups] = await Promise.all([api('GET', '/api/ota/images'), api('GET', '/api/ota/updates')]);
    const il = (imgs.body && imgs.body.value) || [];
    if (image.options.length !== il.length) {
      image.replaceChildren(...il.map((i) => el('option', { value: i.id }, `${i.title} ${i.version}`)));
    }
    images.replaceChildren(...il.map((i) => el('tr', {}, el('td', {}, i.title), el('td', {}, i.version), el('td', {}, i.kind), el('td', {}, i.size), el('td', { class: 'muted' }, i.id.slice(0, 12)))));
    const ul = (ups.body && ups.body.value) || [];
    updates.replaceChildren(...ul.map((u) => el('tr', { 'data-endpoint': u.endpoint },
      el('td', {}, u.endpoint), el('td', {}, `${u.title} ${u.version}`),
      el('td', {}, u.state, u.error ? el('span', { class: 'error' }, ` ${u.error}`) : '',
        u.versionMismatch ? el('span', { class: 'muted' }, ` (version unverified: ${u.versionMismatch})`) : ''),
      el('td', {}, el('span', { class: 'bar', role: 'progressbar', 'aria-valuenow': u.progress, 'aria-valuemin': 0, 'aria-valuemax': 100 }, el('div', { style: `width:${u.progress}%` })), ` ${u.progress}%`),
      el('td', {}, u.finished ? '' : el('button', {
        type: 'button',
        onclick: async () => { msg.replaceChildren(outcome(await api('DELETE', `/api/ota/updates/${encodeURIComponent(u.endpoint)}`))); refresh(); },
      }, 'Cancel')))));
  };
  await refresh();
  const t = setInterval(refresh, 1000);
  leave.push(() => clearInterval(t));
}

function bytes(n) {
  if (n === undefined || n === null) return '-';
  return n < 1048576 ? `${Math.round(n / 1024)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;
}

// Gateway health: counters from stats, refreshed.
async function healthView(v) {
  const cards = el('div', { class: 'cards', id: 'health' });
  const raw = el('pre', {});
  v.append(el('h1', {}, 'Gateway health'), cards, el('details', {}, el('summary', {}, 'All counters'), raw));
  const refresh = async () => {
    const res = await api('GET', '/api/stats');
    const s = (res.body && res.body.value) || {};
    const mqtt = s.mqtt || {};
    const dtls = s.dtls || {};
    const store = s.store || {};
    const card = (name, val) => el('div', { class: 'card' }, el('b', {}, val ?? '-'), name);
    cards.replaceChildren(
      card('uptime', s.uptimeS !== undefined ? `${Math.floor(s.uptimeS / 3600)} h ${Math.floor(s.uptimeS % 3600 / 60)} min` : '-'),
      card('registrations', s.registrations), card('observations', s.observations),
      card('memory (RSS)', bytes(s.rssKb === undefined ? undefined : s.rssKb * 1024)),
      card('store', bytes(store.bytes)),
      card('northbound', mqtt.connected === undefined ? 'off' : (mqtt.connected ? 'connected' : 'down')),
      card('uplink backlog', mqtt.queuedMessages === undefined ? '-' : `${mqtt.queuedMessages} messages, ${bytes(mqtt.queuedBytes)}`),
      card('DTLS sessions', dtls.sessions), card('DTLS handshakes failed', dtls.failed));
    raw.textContent = JSON.stringify(s, null, 1);
  };
  await refresh();
  const t = setInterval(refresh, 5000);
  leave.push(() => clearInterval(t));
}

(async () => {
  const r = await fetch('/api/session', { credentials: 'same-origin' });
  if (r.status === 200) {
    csrf = (await r.json()).csrf;
    start();
  } else {
    showLogin();
  }
})();
