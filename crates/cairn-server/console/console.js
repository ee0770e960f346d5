// The Cairn console: a client of the v1 API in the browser. No framework,
// no build step; every piece of data is put in the page as text, never as
// HTML.

const PAGE = 50;
const LIVE_MAX = 500;
const main = document.getElementById('main');
const crumbs = document.getElementById('crumbs');
let token = sessionStorage.getItem('cairn-token') || '';
let current = new AbortController(); // the view's requests and live tail

// ---- DOM ----------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function errorBox(e) {
  return h('p', { class: 'error', role: 'alert', 'data-testid': 'error' }, e.message || String(e));
}

const enc = encodeURIComponent;
const num = (n) => Number(n).toLocaleString('en-US');

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function time(ms) {
  if (!ms) return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

function uuid4() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

// ---- the API --------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${message} (${code})`);
    this.status = status;
    this.code = code;
  }
}

async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  if (token) headers.set('Authorization', `Bearer ${token}`);
  if (!headers.has('Accept')) headers.set('Accept', 'application/json');
  const r = await fetch(`/v1${path}`, { ...opts, headers, signal: opts.signal || current.signal });
  if (r.status === 401) {
    await askToken(token ? 'That token was refused. Try another.' : 'This node asks for a bearer token.');
    return api(path, opts);
  }
  if (!r.ok) {
    let code = `http_${r.status}`;
    let message = r.statusText || 'request failed';
    try {
      const body = await r.json();
      code = body.error.code;
      message = body.error.message;
    } catch { /* not a Cairn error */ }
    throw new ApiError(r.status, code, message);
  }
  return r;
}

const getJson = async (path, opts) => (await api(path, opts)).json();

function askToken(why) {
  const dialog = document.getElementById('token-dialog');
  document.getElementById('token-why').textContent = why;
  const input = document.getElementById('token-input');
  input.value = token;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      if (dialog.returnValue === 'ok') {
        token = input.value.trim();
        sessionStorage.setItem('cairn-token', token);
      }
      resolve();
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
}

document.getElementById('token-button').addEventListener('click', () => askToken(token ? 'A token is set for this tab.' : 'No token is set: requests go without one.').then(route));
document.getElementById('token-clear').addEventListener('click', () => {
  token = '';
  sessionStorage.removeItem('cairn-token');
  document.getElementById('token-input').value = '';
});

// ---- routing --------------------------------------------------------------

function parseHash() {
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, q: new URLSearchParams(query || '') };
}

function link(parts, q) {
  const qs = q && [...Object.entries(q)].filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
  return `#/${parts.map(enc).join('/')}${qs ? `?${qs}` : ''}`;
}

function setCrumbs(items) {
  const nodes = [];
  items.forEach(([label, href], i) => {
    if (i) nodes.push(h('span', { class: 'sep' }, '/'));
    nodes.push(href ? h('a', { href }, label) : h('span', {}, label));
  });
  crumbs.replaceChildren(...nodes);
}

async function route() {
  current.abort();
  current = new AbortController();
  const { parts, q } = parseHash();
  try {
    if (parts[0] === 's' && parts[1]) await storeView(parts[1], parts[2] || 'events', q);
    else await storesView();
  } catch (e) {
    if (e.name !== 'AbortError') show(errorBox(e));
  }
}


// ---- stores -----------------------------------------------------------------

async function storesView() {
  setCrumbs([['Stores']]);
  document.title = 'Stores · Cairn';
  const body = h('tbody');
  const form = h('form', { class: 'row', onsubmit: createStore },
    h('input', { name: 'name', placeholder: 'new store name', pattern: '[a-z0-9][a-z0-9-]{0,62}', required: true, 'aria-label': 'new store name', 'data-testid': 'new-store' }),
    h('button', { type: 'submit' }, 'Create store'));
  const msg = h('div');
  show(
    h('div', { class: 'head' }, h('h1', {}, 'Stores'), h('div', { class: 'grow' }), form),
    msg,
    h('div', { class: 'panel' },
      h('table', {},
        h('thead', {}, h('tr', {},
          h('th', {}, 'Store'), h('th', { class: 'num w-num' }, 'Events'), h('th', { class: 'num w-num' }, 'Size'),
          h('th', { class: 'num w-num hide-s' }, 'Segments'), h('th', { class: 'w-time hide-s' }, 'Last event (UTC)'))),
        body)));
  const { stores } = await getJson('/stores');
  if (!stores.length) {
    body.append(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No stores yet. Create one above, or PUT /v1/stores/NAME.')));
    return;
  }
  const infos = await Promise.all(stores.map((s) => getJson(`/stores/${enc(s.name)}`).catch((e) => ({ name: s.name, error: e }))));
  body.replaceChildren(...infos.map((i) => h('tr', { 'data-testid': `store-${i.name}`, onclick: () => { location.hash = link(['s', i.name]); } },
    h('td', {}, h('a', { href: link(['s', i.name]) }, i.name)),
    i.error ? h('td', { colspan: 4, class: 'error' }, i.error.message) : [
      h('td', { class: 'num', 'data-testid': 'events' }, num(i.next_seq)),
      h('td', { class: 'num' }, bytes(i.bytes || 0)),
      h('td', { class: 'num hide-s' }, num(i.segments + i.index_objects)),
      h('td', { class: 'mono hide-s' }, time(i.last_ts)),
    ])));

  async function createStore(ev) {
    ev.preventDefault();
    const name = new FormData(form).get('name');
    try {
      await api(`/stores/${enc(name)}`, { method: 'PUT' });
      location.hash = link(['s', name]);
    } catch (e) {
      msg.replaceChildren(errorBox(e));
    }
  }
}

// ---- one store ----------------------------------------------------------------

const TABS = [['events', 'Events'], ['stream', 'Streams'], ['live', 'Live tail'], ['docs', 'Docs'], ['append', 'Append']];

async function storeView(store, tab, q) {
  setCrumbs([['Stores', '#/'], [store, link(['s', store])], [TABS.find(([t]) => t === tab)?.[1] || tab]]);
  document.title = `${store} · Cairn`;
  const info = await getJson(`/stores/${enc(store)}`);
  const stats = h('div', { class: 'stats', 'data-testid': 'store-stats' },
    h('span', {}, h('b', { 'data-testid': 'store-events' }, num(info.next_seq)), ' events'),
    h('span', {}, h('b', {}, bytes(info.bytes || 0))),
    h('span', {}, 'version ', h('b', {}, num(info.version))),
    h('span', { class: 'hide-s' }, 'last event ', h('b', { class: 'mono' }, time(info.last_ts))));
  const tabs = h('nav', { class: 'tabs' }, TABS.map(([t, label]) => h('a', { href: link(['s', store, t]), class: t === tab ? 'on' : '', 'data-testid': `tab-${t}` }, label)));
  const content = h('div');
  show(h('div', { class: 'head' }, h('h1', { 'data-testid': 'store-name' }, store), stats), tabs, content);
  const views = { events: eventsTab, stream: streamTab, live: liveTab, docs: docsTab, append: appendTab };
  await (views[tab] || eventsTab)(store, info, q, content);
}

/// A table of events beside the selected event's detail.
function eventTable(store, events, { live = false } = {}) {
  const detail = h('div', { class: 'panel pad detail', 'data-testid': 'detail' }, h('p', { class: 'empty' }, 'Select an event to see its data.'));
  const body = h('tbody', { 'data-testid': 'events' });
  const select = (tr, e) => {
    body.querySelectorAll('tr.sel').forEach((r) => r.classList.remove('sel'));
    tr.classList.add('sel');
    detail.replaceChildren(...eventDetail(store, e));
  };
  const row = (e) => {
    const tr = h('tr', { 'data-testid': `event-${e.seq}`, onclick: () => select(tr, e) },
      h('td', { class: 'num w-seq mono' }, e.seq),
      h('td', {}, e.stream),
      h('td', { class: 'num w-rev mono' }, e.revision),
      h('td', { class: 'w-type' }, e.type),
      h('td', { class: 'w-time mono hide-s' }, time(e.timestamp)));
    return tr;
  };
  body.append(...events.map(row));
  const table = h('table', {},
    h('thead', {}, h('tr', {},
      h('th', { class: 'num w-seq' }, 'Seq'), h('th', {}, 'Stream'), h('th', { class: 'num w-rev' }, 'Rev'),
      h('th', { class: 'w-type' }, 'Type'), h('th', { class: 'w-time hide-s' }, 'Time (UTC)'))),
    body);
  const add = (e) => {
    const tr = row(e);
    tr.classList.add('fresh');
    body.prepend(tr);
    while (body.children.length > LIVE_MAX) body.lastChild.remove();
  };
  if (!events.length && !live) body.append(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No events here.')));
  return { table, detail, add, body };
}

function eventDetail(store, e) {
  const isBinary = e.data_b64 !== undefined;
  const tags = Object.entries(e.tags || {});
  const data = h('pre', { class: 'data', 'data-testid': 'event-data' });
  if (isBinary) data.append(hexDump(e.data_b64));
  else data.append(...prettyJson(e.data));
  return [
    h('h2', {}, `Event ${num(e.seq)}`),
    h('dl', {},
      h('dt', {}, 'Stream'), h('dd', {}, h('a', { href: link(['s', store, 'stream'], { name: e.stream }) }, e.stream)),
      h('dt', {}, 'Revision'), h('dd', { class: 'mono' }, e.revision),
      h('dt', {}, 'Type'), h('dd', {}, e.type),
      h('dt', {}, 'Time (UTC)'), h('dd', { class: 'mono' }, time(e.timestamp)),
      h('dt', {}, 'Id'), h('dd', { class: 'mono' }, e.id || '—'),
      h('dt', {}, 'Tags'), h('dd', {}, tags.length ? tags.map(([k, v]) => h('span', { class: 'tag mono' }, `${k}:${v}`)) : '—'),
      h('dt', {}, 'Data'), h('dd', {}, isBinary ? `binary, ${num(atob(e.data_b64).length)} bytes` : 'JSON')),
    data,
  ];
}

/// JSON, indented, as coloured text nodes (never HTML).
function prettyJson(value) {
  const text = JSON.stringify(value, null, 2) ?? 'null';
  const out = [];
  const re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    const cls = m[1] ? (m[2] ? 'k' : 's') : m[3] ? 'b' : 'n';
    out.push(h('span', { class: cls }, m[1] || m[0]));
    if (m[2]) out.push(m[2]);
    last = m.index + m[0].length;
  }
  out.push(text.slice(last));
  return out;
}

function hexDump(b64) {
  const raw = atob(b64);
  const lines = [];
  for (let off = 0; off < raw.length; off += 16) {
    const chunk = [...raw.slice(off, off + 16)].map((c) => c.charCodeAt(0));
    const hex = chunk.map((b) => b.toString(16).padStart(2, '0')).join(' ').padEnd(47);
    const ascii = chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${off.toString(16).padStart(8, '0')}  ${hex}  ${ascii}`);
  }
  return lines.join('\n') || '(empty)';
}

function pager(prev, next, label) {
  return h('div', { class: 'pager' },
    h('button', { class: 'ghost', disabled: !prev, onclick: () => { if (prev) location.hash = prev; }, 'data-testid': 'page-prev' }, '← ', label[0]),
    h('span', { class: 'hint' }, label[2]),
    h('button', { class: 'ghost', disabled: !next, onclick: () => { if (next) location.hash = next; }, 'data-testid': 'page-next' }, label[1], ' →'));
}

// Browse the store by seq, oldest or newest first.
async function eventsTab(store, info, q, content) {
  const newest = q.get('order') !== 'oldest';
  const end = info.next_seq;
  // Seqs before the first seq were truncated by retention.
  const start = info.first_seq || 0;
  const at = Math.min(Math.max(start, Number(q.get('at') ?? (newest ? end : start)) || 0), end);
  const from = newest ? Math.max(start, at - PAGE) : at;
  const limit = newest ? at - from : PAGE;
  const form = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const order = f.get('order');
    const seq = f.get('seq');
    const pos = seq === '' ? undefined : order === 'newest' ? Number(seq) + 1 : Number(seq);
    location.hash = link(['s', store, 'events'], { order, at: pos });
  } },
  h('label', {}, 'From seq', h('input', { name: 'seq', type: 'number', min: 0, value: q.get('at') === null ? '' : (newest ? at - 1 : at), placeholder: newest ? 'the newest' : '0', 'data-testid': 'from-seq' })),
  h('label', {}, 'Order', h('select', { name: 'order' }, h('option', { value: 'newest', selected: newest }, 'Newest first'), h('option', { value: 'oldest', selected: !newest }, 'Oldest first'))),
  h('button', { type: 'submit', class: 'self-end' }, 'Go'));
  let events = [];
  if (limit > 0 && from < end) events = (await getJson(`/stores/${enc(store)}/events?from=${from}&limit=${limit}`)).events;
  if (newest) events.reverse();
  const t = eventTable(store, events);
  const older = newest ? (from > start ? link(['s', store, 'events'], { order: 'newest', at: from }) : null) : (from > start ? link(['s', store, 'events'], { order: 'oldest', at: Math.max(start, from - PAGE) }) : null);
  const newer = newest ? (at < end ? link(['s', store, 'events'], { order: 'newest', at: Math.min(end, at + PAGE) }) : null) : (from + PAGE < end ? link(['s', store, 'events'], { order: 'oldest', at: from + PAGE }) : null);
  const range = events.length ? `seqs ${num(Math.min(...events.map((e) => e.seq)))}–${num(Math.max(...events.map((e) => e.seq)))} of ${num(end)}` : `${num(end)} events`;
  content.replaceChildren(
    h('div', { class: 'panel pad mb' }, form),
    h('div', { class: 'split' },
      h('div', { class: 'panel' }, t.table, pager(older, newer, ['Older', 'Newer', range])),
      t.detail));
}

// Find a stream by name; browse it by revision.
async function streamTab(store, info, q, content) {
  const name = q.get('name') || '';
  const newest = q.get('order') !== 'oldest';
  const form = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    location.hash = link(['s', store, 'stream'], { name: f.get('name').trim(), order: f.get('order') });
  } },
  h('label', { class: 'grow' }, 'Stream name (exact)', h('input', { name: 'name', value: name, required: true, placeholder: 'order-1', autocomplete: 'off', 'data-testid': 'stream-name' })),
  h('label', {}, 'Order', h('select', { name: 'order' }, h('option', { value: 'newest', selected: newest }, 'Newest first'), h('option', { value: 'oldest', selected: !newest }, 'Oldest first'))),
  h('button', { type: 'submit', class: 'self-end', 'data-testid': 'stream-open' }, 'Open'));
  const top = h('div', { class: 'panel pad mb' }, form);
  if (!name) {
    content.replaceChildren(top, h('div', { class: 'panel' }, h('p', { class: 'empty' }, 'Streams are found by their exact name; any stream name in an event links here.')));
    return;
  }
  const { revision: head } = await getJson(`/stores/${enc(store)}/streams/${enc(name)}`);
  if (head === null) {
    content.replaceChildren(top, h('div', { class: 'panel' }, h('p', { class: 'empty', 'data-testid': 'stream-empty' }, `Stream “${name}” has no events.`)));
    return;
  }
  const at = Math.min(Math.max(0, Number(q.get('at') ?? (newest ? head : 0)) || 0), head);
  const dir = newest ? 'backward' : 'forward';
  const { events } = await getJson(`/stores/${enc(store)}/streams/${enc(name)}/events?from=${at}&limit=${PAGE}&direction=${dir}`);
  const t = eventTable(store, events);
  const revs = events.map((e) => e.revision);
  const lo = Math.min(...revs);
  const hi = Math.max(...revs);
  const go = (pos) => link(['s', store, 'stream'], { name, order: newest ? 'newest' : 'oldest', at: pos });
  const older = lo > 0 ? go(newest ? lo - 1 : Math.max(0, lo - PAGE)) : null;
  const newer = hi < head ? go(newest ? Math.min(head, hi + PAGE) : hi + 1) : null;
  content.replaceChildren(top,
    h('div', { class: 'head' }, h('h2', { 'data-testid': 'stream-title' }, name), h('div', { class: 'stats' }, h('span', {}, 'head revision ', h('b', { 'data-testid': 'stream-head' }, num(head))))),
    h('div', { class: 'split' }, h('div', { class: 'panel' }, t.table, pager(older, newer, ['Older', 'Newer', `revisions ${num(lo)}–${num(hi)} of ${num(head + 1)}`])), t.detail));
}

// A live tail over SSE, read with fetch so the token goes in a header.
async function liveTab(store, info, q, content) {
  const stream = q.get('stream') || '';
  const status = h('span', { 'data-testid': 'live-status' }, h('span', { class: 'live-dot' }), 'connecting…');
  const form = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = link(['s', store, 'live'], { stream: new FormData(form).get('stream').trim() });
  } },
  h('label', { class: 'grow' }, 'Only this stream (optional)', h('input', { name: 'stream', value: stream, placeholder: 'every stream', autocomplete: 'off' })),
  h('button', { type: 'submit', class: 'self-end' }, 'Tail'));
  const t = eventTable(store, [], { live: true });
  const waiting = h('p', { class: 'empty', 'data-testid': 'live-waiting' }, 'Waiting for new events…');
  content.replaceChildren(
    h('div', { class: 'panel pad mb' }, form),
    h('div', { class: 'split' }, h('div', { class: 'panel' }, h('div', { class: 'pager' }, status, h('span', { class: 'hint' }, `newest first, at most ${LIVE_MAX}`)), t.table, waiting), t.detail));
  let from = info.next_seq;
  let head = null;
  if (stream) {
    head = (await getJson(`/stores/${enc(store)}/streams/${enc(stream)}`)).revision;
    from = head === null ? 0 : head + 1;
  }
  const signal = current.signal;
  let lastId = null;
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      const path = stream ? `/stores/${enc(store)}/streams/${enc(stream)}/events?from=${from}` : `/stores/${enc(store)}/events?from=${from}`;
      const headers = { Accept: 'text/event-stream' };
      if (lastId !== null) headers['Last-Event-ID'] = lastId;
      const r = await api(path, { headers, signal });
      status.replaceChildren(h('span', { class: 'live-dot on' }), 'live');
      attempt = 0;
      for await (const ev of sse(r.body, signal)) {
        if (ev.event === 'error') throw new Error(JSON.parse(ev.data).error.message);
        const e = JSON.parse(ev.data);
        lastId = ev.id;
        waiting.remove();
        t.add(e);
        const count = document.querySelector('[data-testid=store-events]');
        if (count && !stream) count.textContent = num(e.seq + 1);
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status < 500 && e.status !== 429) {
        status.replaceChildren(h('span', { class: 'live-dot' }), e.message);
        return;
      }
    }
    if (signal.aborted) return;
    status.replaceChildren(h('span', { class: 'live-dot' }), 'reconnecting…');
    await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** attempt)));
  }
}

/// Server-sent events from a fetch body: {id, event, data} each.
async function* sse(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const ev = { id: null, event: 'message', data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue; // heartbeat
        const [k, ...rest] = line.split(':');
        const v = rest.join(':').replace(/^ /, '');
        if (k === 'id') ev.id = v;
        else if (k === 'event') ev.event = v;
        else if (k === 'data') ev.data += (ev.data ? '\n' : '') + v;
      }
      if (ev.data) yield ev;
    }
  }
}

// View and edit one doc (compare-and-swap).
async function docsTab(store, info, q, content) {
  const key = q.get('key') || '';
  const form = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = link(['s', store, 'docs'], { key: new FormData(form).get('key').trim() });
  } },
  h('label', { class: 'grow' }, 'Doc key', h('input', { name: 'key', value: key, required: true, pattern: '[A-Za-z0-9._\\-]{1,200}', placeholder: 'checkpoint', 'data-testid': 'doc-key' })),
  h('button', { type: 'submit', class: 'self-end', 'data-testid': 'doc-open' }, 'Open'));
  const top = h('div', { class: 'panel pad mb' }, form);
  if (!key) {
    content.replaceChildren(top, h('div', { class: 'panel' }, h('p', { class: 'empty' }, 'Docs are opened by key (projections keep their views and checkpoints in them).')));
    return;
  }
  let etag = null;
  let text = '';
  let contentType = 'application/json';
  try {
    const r = await api(`/stores/${enc(store)}/docs/${enc(key)}`);
    etag = (r.headers.get('ETag') || '').replace(/"/g, '');
    contentType = r.headers.get('Content-Type') || contentType;
    text = await r.text();
    try { text = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: as it is */ }
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
  const area = h('textarea', { spellcheck: 'false', 'data-testid': 'doc-body', 'aria-label': 'doc body' }, text);
  const msg = h('div', { class: 'hint', 'data-testid': 'doc-status' }, etag ? `ETag ${etag}` : 'No such doc yet: saving creates it.');
  const save = async () => {
    const headers = { 'Content-Type': contentType };
    if (etag) headers['If-Match'] = `"${etag}"`;
    else headers['If-None-Match'] = '*';
    try {
      const r = await api(`/stores/${enc(store)}/docs/${enc(key)}`, { method: 'PUT', headers, body: area.value });
      etag = (r.headers.get('ETag') || '').replace(/"/g, '');
      msg.replaceChildren(h('span', { class: 'ok' }, `Saved. ETag ${etag}`));
    } catch (e) {
      msg.replaceChildren(h('span', { class: 'error' }, e.status === 412 ? 'Someone changed this doc since you opened it; reopen it to see their version.' : e.message));
    }
  };
  const del = async () => {
    if (!etag || !confirm(`Delete doc ${key}?`)) return;
    try {
      await api(`/stores/${enc(store)}/docs/${enc(key)}`, { method: 'DELETE', headers: { 'If-Match': `"${etag}"` } });
      location.hash = link(['s', store, 'docs']);
    } catch (e) {
      msg.replaceChildren(h('span', { class: 'error' }, e.message));
    }
  };
  content.replaceChildren(top, h('div', { class: 'panel pad' },
    h('h2', {}, key), area,
    h('div', { class: 'row mt' }, msg, h('div', { class: 'grow' }),
      h('button', { class: 'danger', disabled: !etag, onclick: del }, 'Delete'),
      h('button', { onclick: save, 'data-testid': 'doc-save' }, etag ? 'Save' : 'Create'))));
}

// Append a test event.
async function appendTab(store, info, q, content) {
  const msg = h('div', { 'data-testid': 'append-status' });
  const form = h('form', { onsubmit: submit },
    h('div', { class: 'row' },
      h('label', { class: 'grow' }, 'Stream', h('input', { name: 'stream', required: true, value: q.get('stream') || 'test', 'data-testid': 'append-stream' })),
      h('label', { class: 'grow' }, 'Type', h('input', { name: 'type', required: true, value: 'TestEvent', 'data-testid': 'append-type' })),
      h('label', {}, 'Expected revision', h('input', { name: 'expected', value: 'any', size: 12 }))),
    h('label', { class: 'mt' }, 'Data (JSON)', h('textarea', { name: 'data', spellcheck: 'false', 'data-testid': 'append-data' }, '{\n  "hello": "world"\n}')),
    h('div', { class: 'row end mt' }, msg, h('div', { class: 'grow' }), h('button', { type: 'submit', 'data-testid': 'append-submit' }, 'Append')));
  content.replaceChildren(h('div', { class: 'panel pad' }, form));

  async function submit(ev) {
    ev.preventDefault();
    const f = new FormData(form);
    let data;
    try {
      data = JSON.parse(f.get('data'));
    } catch (e) {
      msg.replaceChildren(h('span', { class: 'error' }, `Data is not JSON: ${e.message}`));
      return;
    }
    const stream = f.get('stream').trim();
    try {
      const r = await getJson(`/stores/${enc(store)}/streams/${enc(stream)}/events`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Expected-Revision': f.get('expected').trim() || 'any' },
        body: JSON.stringify([{ type: f.get('type').trim(), data, id: uuid4() }]),
      });
      msg.replaceChildren(h('span', { class: 'ok' }, `Appended at seq ${num(r.first_seq)}, revision ${num(r.first_revision)} of `),
        h('a', { href: link(['s', store, 'stream'], { name: stream }) }, stream));
    } catch (e) {
      msg.replaceChildren(h('span', { class: 'error' }, e.message));
    }
  }
}

// Last: everything above is defined by now.
window.addEventListener('hashchange', route);
route();
