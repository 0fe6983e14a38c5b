// Logbook console. No framework and no build step: the binary embeds this file.
// Every value that comes from a record or an API is put on the page with textContent or
// as an attribute value the browser never runs; no HTML is ever built from strings.
'use strict';

const S = { who: null, csrf: '', page: '', lastColumns: [] };
const $ = (id) => document.getElementById(id);

// ---- elements -------------------------------------------------------------------------

function h(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = String(v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}
const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function clear(e) { while (e.firstChild) e.firstChild.remove(); return e; }
function status(text) { $('status').textContent = text || ''; }

// ---- the API --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// A page's latest load only: `const fresh = latest(); ... const mine = fresh();` and after
// each await `if (!mine()) return;`. An earlier, slower answer (the page's first load
// arriving after a filter was applied) is dropped instead of being drawn beside the new one.
function latest() {
  let n = 0;
  return () => { const mine = ++n; return () => mine === n; };
}

async function api(method, path, body, raw) {
  const init = { method, credentials: 'same-origin', headers: { 'x-logbook-csrf': S.csrf } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch('/console/api/' + path, init);
  const text = await r.text();
  if (r.ok && raw) return text;
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) {
    const code = (data && (data.code || data.__type)) || String(r.status);
    const message = (data && (data.message || data.Message)) || ('HTTP ' + r.status);
    if (r.status === 401 && path !== 'session') {
      showSignIn('Your session has ended. Sign in again.');
    }
    throw new ApiError(r.status, code, message);
  }
  return data;
}

function range() {
  const span = Number($('range').value) || 86400000;
  const end = Date.now();
  return { start: end - span, end, span };
}
function tz() { return $('tz').value || 'UTC'; }

async function query(q, opts) {
  const r = range();
  const body = Object.assign({ query: q, start: r.start, end: r.end }, opts || {});
  return api('POST', 'query', body);
}
async function chargeback(by, period, extra) {
  const r = range();
  return api('POST', 'chargeback', Object.assign({ by, period: period || 'day', tz: tz(), start: r.start, end: r.end }, extra || {}));
}

// ---- numbers and times ----------------------------------------------------------------

function int(x) { const n = Number(x); return Number.isFinite(n) ? n : 0; }
function fmtInt(x) { return int(x).toLocaleString('en-US'); }
function fmtMs(x) { return x === null || x === undefined || x === '' ? '–' : Math.round(Number(x)).toLocaleString('en-US') + ' ms'; }
function parseTs(v) {
  if (v === null || v === undefined) return NaN;
  if (/^\d+$/.test(v)) return Number(v);
  const t = String(v).replace(' ', 'T');
  return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(t) ? t : t + 'Z');
}
function fmtTime(ms, withDate) {
  if (!Number.isFinite(ms)) return '';
  const o = { timeZone: tz(), hour: '2-digit', minute: '2-digit', hour12: false };
  if (withDate) { o.year = 'numeric'; o.month = '2-digit'; o.day = '2-digit'; o.second = '2-digit'; }
  try { return new Intl.DateTimeFormat('en-CA', o).format(new Date(ms)); } catch (_) { return new Date(ms).toISOString(); }
}
function binFor(span) {
  if (span <= 3600000) return '1m';
  if (span <= 21600000) return '5m';
  if (span <= 86400000) return '1h';
  if (span <= 604800000) return '1h';
  if (span <= 2592000000) return '6h';
  return '1d';
}

// ---- charts ---------------------------------------------------------------------------

const COLORS = ['#1f5fbf', '#b3261e', '#1d7a3a', '#8a5a00', '#6b3fa0'];

// A line chart of series over time: points = [{t, values: [..]}], names = series names.
function lineChart(title, names, points, fmt) {
  const W = 600, H = 180, L = 48, B = 22, T = 8, R = 8;
  const fig = h('figure', { class: 'chart' });
  fig.append(h('figcaption', { text: title }));
  const ts = points.map((p) => p.t).filter(Number.isFinite);
  const all = points.flatMap((p) => p.values.map(Number).filter(Number.isFinite));
  const max = Math.max(1e-9, ...all, 0);
  const t0 = Math.min(...ts), t1 = Math.max(...ts);
  const x = (t) => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const desc = points.length
    ? `${title}: ${points.length} points from ${fmtTime(t0, true)} to ${fmtTime(t1, true)}; highest ${fmt(max)}.`
    : `${title}: no data in this period.`;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': desc });
  svg.append(s('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(s('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
  svg.append(s('text', { x: 2, y: T + 8 }, fmt(max)));
  svg.append(s('text', { x: 2, y: H - B }, '0'));
  if (ts.length) {
    svg.append(s('text', { x: L, y: H - 6 }, fmtTime(t0, false)));
    svg.append(s('text', { x: W - R - 40, y: H - 6 }, fmtTime(t1, false)));
  }
  names.forEach((name, i) => {
    const pts = points.filter((p) => Number.isFinite(Number(p.values[i])))
      .map((p) => `${x(p.t).toFixed(1)},${y(Number(p.values[i])).toFixed(1)}`);
    if (pts.length === 1) {
      const [cx, cy] = pts[0].split(',');
      svg.append(s('circle', { cx, cy, r: 3, fill: COLORS[i % COLORS.length] }));
    } else if (pts.length) {
      svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 2 }));
    }
  });
  fig.append(svg);
  fig.append(h('div', { class: 'legend' }, names.map((n, i) =>
    h('span', null, h('span', { class: 'swatch', style: null, 'data-color': i }), n))));
  // Colour the swatches through the CSSOM (inline style attributes are not used).
  fig.querySelectorAll('.swatch').forEach((sw) => { sw.style.background = COLORS[Number(sw.dataset.color) % COLORS.length]; });
  return fig;
}

function pointsFrom(result, names) {
  const cols = result.columns || [];
  const ti = cols.findIndex((c) => /^bin\(/.test(c) || c === 't' || c === '@timestamp');
  if (ti < 0) return [];
  const idx = names.map((n) => cols.indexOf(n));
  return (result.rows || []).map((r) => ({ t: parseTs(r[ti]), values: idx.map((i) => (i < 0 ? null : r[i])) }))
    .filter((p) => Number.isFinite(p.t)).sort((a, b) => a.t - b.t);
}

// ---- tables ---------------------------------------------------------------------------

function table(caption, allColumns, allRows, opts) {
  const o = opts || {};
  // `@ptr` is a handle for GetLogRecord, not something to read.
  const keep = allColumns.map((c, i) => (c === '@ptr' ? -1 : i)).filter((i) => i >= 0);
  const columns = keep.map((i) => allColumns[i]);
  const rows = allRows.map((r) => Object.assign(keep.map((i) => r[i]), { full: r }));
  const t = h('table');
  if (caption) t.append(h('caption', { class: 'note', text: caption }));
  t.append(h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: o.num && o.num.includes(c) ? 'num' : null, text: c })), o.action ? h('th', { scope: 'col', text: 'Record' }) : null)));
  const body = h('tbody');
  for (const r of rows) {
    const tr = h('tr', null, r.map((v, i) => h('td', { class: o.num && o.num.includes(columns[i]) ? 'num' : null, text: v === null || v === undefined ? '' : v })));
    if (o.action) tr.append(h('td', null, o.action(r.full)));
    body.append(tr);
  }
  t.append(body);
  return h('div', { class: 'tablewrap' }, t);
}

function csvCell(v, heading) {
  let x = v === null || v === undefined ? '' : String(v);
  // A cell a spreadsheet would run as a formula is kept as text.
  if (!heading && /^[=+\-@\t\r]/.test(x) && !/^-?\d+(\.\d+)?$/.test(x)) x = "'" + x;
  return /[",\r\n]/.test(x) ? '"' + x.replace(/"/g, '""') + '"' : x;
}
function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function failure(where, e) {
  clear(where);
  const denied = e instanceof ApiError && e.status === 403;
  where.append(h('p', { class: 'error', role: 'alert', text: (denied ? 'Not allowed: ' : 'Failed: ') + e.message }));
}

// ---- pages ----------------------------------------------------------------------------

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const LIST_FIELDS = 'fields @timestamp, requestId, modelId, operation, identity.arn, inputTokenCount, outputTokenCount, logbook.latencyMs, logbook.cost, errorCode';

function openButton(id) {
  if (!id || !REQUEST_ID.test(id)) return null;
  return h('a', { href: '#/record/' + encodeURIComponent(id), 'aria-label': 'Open record ' + id, text: 'Open' });
}

async function overview(main) {
  const r = range();
  const bin = binFor(r.span);
  main.append(h('h1', { text: 'Overview' }));
  main.append(h('p', { class: 'note', text: `Days are cut in ${tz()}. Charts in ${bin} intervals. Latency percentiles are approximate (within 1%); every count and cost is exact.` }));
  const cards = h('div', { class: 'cards', id: 'cards' });
  const charts = h('div', { class: 'charts' });
  const tops = h('div', { class: 'grid3' });
  const recent = h('section', { id: 'recent', 'aria-labelledby': 'recent-h' });
  main.append(cards, h('h2', { text: 'Over time' }), charts, h('h2', { text: 'Top' }), tops, recent);
  const card = (label, value, id) => h('div', { class: 'card' }, h('div', { class: 'label', text: label }), h('div', { class: 'value', id, text: value }));
  // One request for the cards, charts and top lists: the server answers it from the
  // store files' pre-computed rollups and scans only what they do not cover.
  const [ov] = await Promise.allSettled([
    api('POST', 'overview', { start: r.start, end: r.end, bin, tz: tz(), top: 10 }),
  ]);
  if (ov.status === 'fulfilled') {
    const o = ov.value, t = o.total;
    cards.append(card('Calls', fmtInt(t.calls), 'card-calls'), card('Input tokens', fmtInt(t.inputTokens), 'card-input'),
      card('Output tokens', fmtInt(t.outputTokens), 'card-output'), card('Cost (' + o.currency + ')', t.cost, 'card-cost'),
      card('Errors', fmtInt(t.errors), 'card-errors'), card('p50 latency (≈)', fmtMs(t.p50LatencyMs), 'card-p50'),
      card('p99 latency (≈)', fmtMs(t.p99LatencyMs), 'card-p99'));
    const pts = (names) => o.series.map((p) => ({ t: p.t, values: names.map((n) => p[n]) }));
    charts.append(lineChart('Calls and errors', ['calls', 'errors'], pts(['calls', 'errors']), fmtInt));
    charts.append(lineChart('Tokens', ['inputTokens', 'outputTokens'], pts(['inputTokens', 'outputTokens']), fmtInt));
    charts.append(lineChart('Latency (ms, ≈)', ['p50', 'p99'], pts(['p50LatencyMs', 'p99LatencyMs']), fmtInt));
    const days = o.days.map((d) => ({ t: parseTs(d.day + 'T00:00:00Z'), values: [Number(d.cost)] }));
    charts.append(lineChart(`Cost per day (${o.timeZone})`, ['cost'], days, (v) => Number(v).toFixed(4)));
    const top = (title, dim) => {
      const sec = h('section', null, h('h2', { text: title }));
      const rows = (o.top[dim] || []).map((x) => [x.value, fmtInt(x.calls), fmtInt(int(x.inputTokens) + int(x.outputTokens)), x.cost]);
      sec.append(table(null, ['Name', 'Calls', 'Tokens', 'Cost'], rows, { num: ['Calls', 'Tokens', 'Cost'] }));
      return sec;
    };
    tops.append(top('Models', 'model'), top('Teams', 'team'), top('Principals', 'principal'));
  } else {
    failure(cards, ov.reason);
  }
  if (!main.isConnected) return; // navigated away (or re-rendered) meanwhile
  // The latest errors: the series says which intervals hold them, so the query reads only
  // the newest intervals that hold twenty, not the whole period.
  const opts = {};
  if (ov.status === 'fulfilled') {
    let seen = 0;
    for (const p of [...ov.value.series].reverse()) {
      seen += int(p.errors);
      if (seen >= 20) { opts.start = Math.max(r.start, p.t); break; }
    }
  }
  const [errors] = await Promise.allSettled([
    query(`filter ispresent(errorCode) | ${LIST_FIELDS} | sort @timestamp desc | limit 20`, opts),
  ]);
  recent.append(h('h2', { id: 'recent-h', text: 'Latest errors' }));
  if (errors.status === 'fulfilled') {
    const res = errors.value;
    const ri = res.columns.indexOf('requestId');
    recent.append(res.rows.length ? table(null, res.columns, res.rows, { action: (row) => openButton(row[ri]) }) : h('p', { class: 'note', text: 'No errors in this period.' }));
  } else failure(recent, errors.reason);
  recent.setAttribute('data-loaded', 'true');
}

const FIELDS = ['@timestamp', '@message', '@logStream', '@log', 'requestId', 'modelId', 'operation', 'region', 'accountId',
  'identity.arn', 'timestamp', 'schemaType', 'schemaVersion', 'errorCode', 'inputTokenCount', 'outputTokenCount',
  'input.inputTokenCount', 'input.inputContentType', 'input.inputBodyJson', 'input.cacheReadInputTokenCount',
  'input.cacheWriteInputTokenCount', 'output.outputTokenCount', 'output.outputContentType', 'output.outputBodyJson',
  'requestMetadata', 'logbook.cost', 'logbook.latencyMs', 'logbook.timeToFirstTokenMs', 'logbook.provider',
  'logbook.upstreamModel', 'logbook.stream', 'logbook.httpStatus', 'logbook.errorMessage', 'logbook.clientIp',
  'logbook.userAgent', 'logbook.api', 'logbook.auth', 'logbook.sequence', 'logbook.nodeId', 'logbook.unpriced',
  'fields', 'filter', 'stats', 'sort', 'limit', 'parse', 'display', 'dedup', 'count(*)', 'count_distinct(',
  'sum(', 'avg(', 'min(', 'max(', 'pct(', 'bin(', 'ispresent(', 'desc', 'asc', 'like', 'by', 'as'];

function history() {
  try { return JSON.parse(localStorage.getItem('logbook.history') || '[]').filter((x) => typeof x === 'string'); } catch (_) { return []; }
}
function remember(q) {
  const list = [q, ...history().filter((x) => x !== q)].slice(0, 20);
  try { localStorage.setItem('logbook.history', JSON.stringify(list)); } catch (_) { /* full or off */ }
}

function explorer(main, params) {
  main.append(h('h1', { text: 'Explorer' }));
  const ta = h('textarea', { id: 'q', 'aria-label': 'Query', spellcheck: 'false', role: 'combobox', 'aria-autocomplete': 'list', 'aria-expanded': 'false', 'aria-controls': 'suggest' });
  ta.value = params.get('q') || history()[0] || `${LIST_FIELDS} | sort @timestamp desc | limit 100`;
  const lang = h('select', { id: 'lang' }, h('option', { value: 'insights', text: 'Logs Insights' }), h('option', { value: 'sql', text: 'SQL' }));
  const run = h('button', { type: 'button', id: 'run', text: 'Run query' });
  const view = h('select', { id: 'view' }, h('option', { value: 'table', text: 'Table' }), h('option', { value: 'chart', text: 'Chart' }));
  const csv = h('button', { type: 'button', class: 'secondary', id: 'csv', disabled: true, text: 'Download CSV' });
  const js = h('button', { type: 'button', class: 'secondary', id: 'json', disabled: true, text: 'Download JSON' });
  const list = h('ul', { class: 'suggest', id: 'suggest', role: 'listbox', 'aria-label': 'Field names', hidden: true });
  const out = h('section', { id: 'results', 'aria-live': 'polite' });
  const hist = h('ul', { class: 'history', id: 'history' });
  main.append(h('div', { class: 'query' },
    h('label', { for: 'q', text: 'Query (Ctrl+Enter runs it; field names are offered as you type)' }), ta, list,
    h('div', { class: 'row' }, h('label', { for: 'lang', text: 'Language' }), lang, run,
      h('label', { for: 'view', text: 'Show as' }), view, csv, js)),
  out, h('details', null, h('summary', { text: 'History' }), hist));
  const drawHistory = () => {
    clear(hist);
    for (const q of history()) hist.append(h('li', null, h('button', { type: 'button', text: q, onclick: () => { ta.value = q; ta.focus(); } })));
  };
  drawHistory();
  let last = null;
  const draw = () => {
    clear(out);
    if (!last) return;
    const st = last.statistics || {};
    out.append(h('p', { class: 'note', id: 'result-count', text: `${last.rows.length} rows · ${fmtInt(st.recordsMatched)} records matched · ${fmtInt(st.recordsScanned)} scanned` }));
    const bin = last.columns.some((c) => /^bin\(/.test(c));
    if (view.value === 'chart' && bin) {
      const names = last.columns.filter((c) => !/^bin\(/.test(c));
      out.append(lineChart('Result', names, pointsFrom(last, names), (v) => Number(v).toLocaleString('en-US')));
    } else {
      if (view.value === 'chart') out.append(h('p', { class: 'note', text: 'A chart needs a stats … by bin() query; showing the table.' }));
      const ri = last.columns.indexOf('requestId');
      out.append(table(null, last.columns, last.rows, ri >= 0 ? { action: (row) => openButton(row[ri]) } : {}));
    }
  };
  view.addEventListener('change', draw);
  const fresh = latest();
  const go = async () => {
    const q = ta.value.trim();
    if (!q) return;
    // Ctrl+Enter can start a query while one runs: only the newest one's answer is drawn.
    const mine = fresh();
    run.disabled = true;
    status('Running…');
    clear(out);
    try {
      const res = await query(q, { language: lang.value, limit: 10000 });
      if (!mine()) return;
      last = res;
      remember(q); drawHistory();
      S.lastColumns = last.columns;
      csv.disabled = js.disabled = false;
      draw();
      status('');
    } catch (e) {
      if (!mine()) return;
      last = null; csv.disabled = js.disabled = true; clear(out); failure(out, e); status('');
    }
    run.disabled = false;
  };
  run.addEventListener('click', go);
  csv.addEventListener('click', () => {
    if (!last) return;
    const keep = last.columns.map((c, i) => (c === '@ptr' ? -1 : i)).filter((i) => i >= 0);
    // Column names are the query's own; only cells get the formula guard.
    const head = keep.map((i) => csvCell(last.columns[i], true)).join(',');
    const lines = [head, ...last.rows.map((r) => keep.map((i) => csvCell(r[i])).join(','))];
    download('logbook-query.csv', 'text/csv', lines.join('\r\n') + '\r\n');
  });
  js.addEventListener('click', () => {
    if (!last) return;
    const objs = last.rows.map((r) => Object.fromEntries(last.columns.map((c, i) => [c, r[i]]).filter(([c]) => c !== '@ptr')));
    download('logbook-query.json', 'application/json', JSON.stringify(objs, null, 2));
  });
  // Field names as you type.
  let sel = -1;
  const word = () => {
    const upto = ta.value.slice(0, ta.selectionStart);
    const m = /[@A-Za-z_][\w.@]*$/.exec(upto);
    return m ? m[0] : '';
  };
  const close = () => { list.hidden = true; ta.setAttribute('aria-expanded', 'false'); ta.removeAttribute('aria-activedescendant'); sel = -1; };
  const pick = (text) => {
    const w = word();
    const at = ta.selectionStart - w.length;
    ta.value = ta.value.slice(0, at) + text + ta.value.slice(ta.selectionStart);
    ta.selectionStart = ta.selectionEnd = at + text.length;
    close();
    ta.focus();
  };
  const mark = () => {
    [...list.children].forEach((li, i) => li.setAttribute('aria-selected', i === sel ? 'true' : 'false'));
    if (sel >= 0) ta.setAttribute('aria-activedescendant', 'sg-' + sel);
  };
  ta.addEventListener('input', () => {
    const w = word();
    clear(list);
    if (!w) return close();
    const names = [...new Set([...FIELDS, ...S.lastColumns])];
    const hits = names.filter((f) => f.toLowerCase().startsWith(w.toLowerCase()) && f !== w).slice(0, 8);
    if (!hits.length) return close();
    hits.forEach((f, i) => list.append(h('li', { id: 'sg-' + i, role: 'option', 'aria-selected': 'false', text: f, onmousedown: (ev) => { ev.preventDefault(); pick(f); } })));
    list.hidden = false;
    ta.setAttribute('aria-expanded', 'true');
    sel = -1;
  });
  ta.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); close(); go(); return; }
    if (list.hidden) return;
    const n = list.children.length;
    if (ev.key === 'ArrowDown') { ev.preventDefault(); sel = (sel + 1) % n; mark(); }
    else if (ev.key === 'ArrowUp') { ev.preventDefault(); sel = (sel - 1 + n) % n; mark(); }
    else if ((ev.key === 'Enter' || ev.key === 'Tab') && sel >= 0) { ev.preventDefault(); pick(list.children[sel].textContent); }
    else if (ev.key === 'Escape') { ev.preventDefault(); close(); }
  });
  ta.addEventListener('blur', () => setTimeout(close, 100));
  if (params.get('run') === '1') go();
}

// ---- the record view ------------------------------------------------------------------

const IMAGE_TYPES = { png: 'image/png', jpeg: 'image/jpeg', jpg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp' };
function image(format, b64) {
  const type = IMAGE_TYPES[String(format || '').toLowerCase().replace('image/', '')];
  if (!type || typeof b64 !== 'string' || b64.length > 8_000_000 || !/^[A-Za-z0-9+/]+=*$/.test(b64)) {
    return h('p', { class: 'note', text: `[image: ${String(format || 'unknown format')}, not shown]` });
  }
  return h('img', { src: `data:${type};base64,${b64}`, alt: 'Image in the prompt' });
}
function textBlock(t) { return h('div', { class: 'text', text: t }); }
function jsonBlock(v) { return h('pre', { text: typeof v === 'string' ? v : JSON.stringify(v, null, 2) }); }

// One content block of any of the APIs Logbook records (Converse, Anthropic, OpenAI).
function block(b) {
  if (b === null || b === undefined) return null;
  if (typeof b === 'string') return textBlock(b);
  if (typeof b.text === 'string') return textBlock(b.text);
  if (b.type === 'input_text' || b.type === 'output_text') return textBlock(String(b.text || ''));
  if (b.image) return image(b.image.format, b.image.source && b.image.source.bytes);
  if (b.type === 'image' && b.source) return image(b.source.media_type, b.source.data);
  if (b.type === 'image_url' || b.type === 'input_image') {
    const url = String((b.image_url && b.image_url.url) || b.image_url || '');
    const m = /^data:(image\/[a-z]+);base64,(.*)$/.exec(url);
    return m ? image(m[1], m[2]) : h('p', { class: 'note', text: '[image at ' + url.slice(0, 200) + ', not loaded]' });
  }
  if (b.toolUse) return h('div', null, h('strong', { text: 'Tool call: ' + String(b.toolUse.name) }), jsonBlock(b.toolUse.input));
  if (b.type === 'tool_use') return h('div', null, h('strong', { text: 'Tool call: ' + String(b.name) }), jsonBlock(b.input));
  if (b.toolResult) return h('div', null, h('strong', { text: 'Tool result' }), (b.toolResult.content || []).map(block));
  if (b.type === 'tool_result') return h('div', null, h('strong', { text: 'Tool result' }), Array.isArray(b.content) ? b.content.map(block) : block(b.content));
  if (b.reasoningContent) return h('details', null, h('summary', { text: 'Reasoning' }), jsonBlock(b.reasoningContent));
  return jsonBlock(b);
}
function message(role, content, extra) {
  const r = String(role || 'message').toLowerCase();
  const cls = ['assistant', 'system', 'tool'].includes(r) ? r : 'user';
  const parts = Array.isArray(content) ? content.map(block) : [block(content)];
  return h('div', { class: 'msg ' + cls }, h('div', { class: 'role', text: r }), parts, extra || null);
}
function openaiToolCalls(calls) {
  return (calls || []).map((c) => h('div', null, h('strong', { text: 'Tool call: ' + String(c.function && c.function.name) }), jsonBlock(c.function && c.function.arguments)));
}

function conversation(rec) {
  const out = [];
  const input = (rec.input && rec.input.inputBodyJson) || null;
  const output = (rec.output && rec.output.outputBodyJson) || null;
  if (input && typeof input === 'object') {
    const sys = input.system;
    if (Array.isArray(sys)) sys.forEach((x) => out.push(message('system', x.text !== undefined ? x.text : x)));
    else if (typeof sys === 'string') out.push(message('system', sys));
    if (typeof input.instructions === 'string') out.push(message('system', input.instructions));
    const msgs = Array.isArray(input.messages) ? input.messages : Array.isArray(input.input) ? input.input : null;
    if (msgs) {
      for (const m of msgs) out.push(message(m.role || m.type, m.content !== undefined ? m.content : m.output, openaiToolCalls(m.tool_calls)));
    } else if (typeof input.input === 'string') out.push(message('user', input.input));
    else if (typeof input.prompt === 'string') out.push(message('user', input.prompt));
    else if (typeof input.inputText === 'string') out.push(message('user', input.inputText));
    else out.push(message('input', [input]));
  } else if (rec.input && rec.input.inputBodyS3Path) {
    out.push(h('p', { class: 'note', text: 'Input body offloaded to ' + rec.input.inputBodyS3Path }));
  }
  if (output && typeof output === 'object' && !Array.isArray(output)) {
    if (output.output && output.output.message) out.push(message('assistant', output.output.message.content));
    else if (Array.isArray(output.choices)) output.choices.forEach((c) => out.push(message('assistant', c.message ? c.message.content : c.text, openaiToolCalls(c.message && c.message.tool_calls))));
    else if (Array.isArray(output.content)) out.push(message('assistant', output.content));
    else if (Array.isArray(output.output)) output.output.forEach((it) => out.push(message(it.role || it.type || 'assistant', it.content !== undefined ? it.content : [it])));
    else out.push(message('assistant', [output]));
  } else if (Array.isArray(output)) {
    out.push(message('assistant (stream chunks)', [jsonBlock(output)]));
  } else if (rec.output && rec.output.outputBodyS3Path) {
    out.push(h('p', { class: 'note', text: 'Output body offloaded to ' + rec.output.outputBodyS3Path }));
  }
  return out;
}

async function record(main, id) {
  main.append(h('h1', { text: 'Record' }));
  if (!REQUEST_ID.test(id)) { main.append(h('p', { class: 'error', role: 'alert', text: 'That is not a request id.' })); return; }
  let res;
  try {
    res = await api('POST', 'query', { query: `filter requestId = "${id}" | fields @timestamp, @message | limit 1`, start: 0, end: Date.now() + 86400000 });
  } catch (e) { failure(main, e); return; }
  const mi = res.columns.indexOf('@message');
  if (!res.rows.length || mi < 0) { main.append(h('p', { class: 'error', role: 'alert', text: 'No record with this request id.' })); return; }
  let rec;
  try { rec = JSON.parse(res.rows[0][mi]); } catch (_) { main.append(jsonBlock(res.rows[0][mi])); return; }
  const lb = rec.logbook || {};
  const facts = [['Time', rec.timestamp], ['Request id', rec.requestId], ['Operation', rec.operation], ['Model', rec.modelId],
    ['Principal', rec.identity && rec.identity.arn], ['Region', rec.region],
    ['Input tokens', rec.input && rec.input.inputTokenCount], ['Output tokens', rec.output && rec.output.outputTokenCount],
    ['Latency', lb.latencyMs !== undefined ? fmtMs(lb.latencyMs) : null], ['Cost (USD)', lb.cost], ['Error', rec.errorCode],
    ['Error message', lb.errorMessage]].filter((f) => f[1] !== undefined && f[1] !== null && f[1] !== '');
  main.append(h('dl', { class: 'facts', id: 'facts' }, facts.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: String(v) })])));
  main.append(h('h2', { text: 'Conversation' }), h('div', { class: 'conversation', id: 'conversation' }, conversation(rec)));
  main.append(h('details', null, h('summary', { text: 'The record as stored (JSON)' }), jsonBlock(rec)));
}

// ---- cost -----------------------------------------------------------------------------

async function cost(main) {
  main.append(h('h1', { text: 'Cost' }));
  const by = h('input', { id: 'by', type: 'text', value: 'team', 'aria-describedby': 'by-help' });
  const period = h('select', { id: 'period' }, ['day', 'week', 'month'].map((p) => h('option', { value: p, text: p, selected: p === 'month' })));
  const run = h('button', { type: 'button', id: 'run-report', text: 'Show report' });
  const csv = h('button', { type: 'button', class: 'secondary', id: 'report-csv', text: 'Download CSV' });
  const out = h('section', { id: 'report', 'aria-live': 'polite' });
  main.append(h('div', { class: 'row' }, h('label', { for: 'by', text: 'By' }), by, h('label', { for: 'period', text: 'Period' }), period, run, csv),
    h('p', { class: 'note', id: 'by-help', text: 'Dimensions, comma-separated: team, model, principal, region, account, api, operation, tag:KEY, meta:KEY. Days are cut in ' + tz() + '.' }), out);
  const dims = () => by.value.split(',').map((x) => x.trim()).filter(Boolean);
  const fresh = latest();
  const go = async () => {
    const mine = fresh();
    clear(out);
    try {
      const r = await chargeback(dims(), period.value);
      if (!mine()) return;
      clear(out);
      const cols = ['Period', ...r.by, 'Calls', 'Unpriced', 'Input', 'Output', 'Cache read', 'Cache write', 'Cost (' + r.currency + ')'];
      const row = (x) => [x.period, ...x.values, fmtInt(x.calls), fmtInt(x.unpricedCalls), fmtInt(x.inputTokens), fmtInt(x.outputTokens), fmtInt(x.cacheReadTokens), fmtInt(x.cacheWriteTokens), x.cost];
      const total = row(r.total);
      total[0] = 'Total';
      out.append(table(`Chargeback by ${r.by.join(', ') || 'period'}, per ${r.period}, in ${r.timeZone}`, cols, [...r.rows.map(row), total],
        { num: ['Calls', 'Unpriced', 'Input', 'Output', 'Cache read', 'Cache write', cols[cols.length - 1]] }));
      out.append(h('p', { class: 'note', id: 'report-total', text: `Total: ${r.total.cost} ${r.currency} over ${fmtInt(r.total.calls)} calls.` }));
    } catch (e) { if (mine()) { clear(out); failure(out, e); } }
  };
  run.addEventListener('click', go);
  csv.addEventListener('click', async () => {
    try { download('chargeback.csv', 'text/csv', await chargebackCsv(dims(), period.value)); } catch (e) { failure(out, e); }
  });
  const budgets = h('section', { id: 'budgets' }, h('h2', { text: 'Budgets' }));
  main.append(budgets);
  await go();
  try {
    const b = await api('GET', 'budgets');
    if (!b.budgets.length) budgets.append(h('p', { class: 'note', text: 'No budgets are declared.' }));
    else budgets.append(table(null, ['Budget', 'Period', 'Since', 'Limit', 'Spent', 'Reserved', 'Burn'],
      b.budgets.map((x) => [x.name, x.period, fmtTime(x.periodStart, true), x.limit, x.spent, x.reserved, x.percent + '%']), { num: ['Limit', 'Spent', 'Reserved', 'Burn'] }));
    budgets.querySelectorAll('tbody tr').forEach((tr, i) => {
      const x = b.budgets[i];
      tr.lastChild.append(' ', h('progress', { max: 100, value: Math.min(100, x.percent), 'aria-label': `${x.name}: ${x.percent}% of the limit spent` }));
    });
  } catch (e) { failure(budgets, e); }
}
async function chargebackCsv(by, period) {
  const r = range();
  return api('POST', 'chargeback', { by, period, tz: tz(), start: r.start, end: r.end, format: 'csv' }, true);
}

// ---- alarms, configuration, trail -----------------------------------------------------

async function alarms(main) {
  main.append(h('h1', { text: 'Alarms' }));
  let a;
  try { a = await api('GET', 'alarms'); } catch (e) { failure(main, e); return; }
  if (!a.alarms.length) main.append(h('p', { class: 'note', text: 'No alarms. Create them with aws cloudwatch put-metric-alarm or [[alarms]] in the configuration.' }));
  else {
    // Definitions are in PutMetricAlarm's member names.
    const t = table(null, ['Alarm', 'Metric', 'Condition', 'State', 'Reason', 'Since'], a.alarms.map((x) => [x.def.AlarmName,
      `${x.def.Namespace} ${x.def.MetricName}${x.def.ModelId ? ' (' + x.def.ModelId + ')' : ''}`,
      `${x.def.Statistic} ${x.def.ComparisonOperator} ${x.def.Threshold} for ${x.def.DatapointsToAlarm}/${x.def.EvaluationPeriods} × ${x.def.Period}s`,
      x.state, x.reason, fmtTime(x.stateUpdatedMs, true)]));
    t.querySelectorAll('tbody tr').forEach((tr) => { const c = tr.children[3]; c.className = 'state-' + c.textContent; });
    t.id = 'alarm-list';
    main.append(t);
  }
  main.append(h('h2', { text: 'History' }));
  main.append(a.history.length ? table(null, ['Time', 'Alarm', 'Kind', 'Summary'], a.history.map((x) => [fmtTime(x.timestampMs, true), x.alarmName, x.kind, x.summary]))
    : h('p', { class: 'note', text: 'No history yet.' }));
}

async function config(main) {
  main.append(h('h1', { text: 'Configuration' }));
  main.append(h('h2', { text: `Logging configuration (${S.who.region})` }));
  try {
    const c = await api('GET', 'logging');
    main.append(c.loggingConfig ? jsonBlock(c.loggingConfig) : h('p', { class: 'note', text: 'Logging is off in this region: no configuration is set.' }));
  } catch (e) { const p = h('p'); main.append(p); failure(p, e); }
  main.append(h('h2', { text: 'Destinations and delivery' }));
  try {
    const r = await fetch('/healthz', { credentials: 'same-origin' });
    const hz = await r.json();
    main.append(h('p', { id: 'health', text: 'Status: ' + hz.status }));
    const rows = Object.entries(hz.destinations || {}).map(([name, d]) => [name, d.kind, fmtInt(d.records), fmtInt(d.objects),
      fmtInt(d.backlog && d.backlog.entries), d.backlog && d.backlog.oldestAgeSeconds !== null && d.backlog.oldestAgeSeconds !== undefined ? d.backlog.oldestAgeSeconds + ' s' : '–',
      fmtInt(d.failures), d.lastError || '']);
    main.append(table(null, ['Destination', 'Kind', 'Records', 'Objects', 'Backlog', 'Oldest pending', 'Failures', 'Last error'], rows,
      { num: ['Records', 'Objects', 'Backlog', 'Failures'] }));
    main.append(h('h2', { text: 'Drift' }));
    const drift = hz.drift || [];
    main.append(drift.length ? h('ul', null, drift.map((d) => h('li', { text: `${d.accountId} ${d.region}: the configuration differs from the file (logbook config diff shows how)` })))
      : h('p', { class: 'note', text: 'No drift: every region runs the configuration the file declares.' }));
  } catch (e) { const p = h('p'); main.append(p); failure(p, e); }
}

async function trail(main, params) {
  main.append(h('h1', { text: 'Trail' }));
  const name = h('input', { id: 'ev-name', type: 'text', value: params.get('name') || '' });
  const who = h('input', { id: 'ev-principal', type: 'text', value: params.get('principal') || '' });
  const cat = h('select', { id: 'ev-category' }, ['', 'Management', 'Data'].map((c) => h('option', { value: c, text: c || 'Any', selected: c === (params.get('category') || '') })));
  const apply = h('button', { type: 'button', id: 'ev-apply', text: 'Apply' });
  const out = h('section', { id: 'trail', 'aria-live': 'polite' });
  main.append(h('div', { class: 'row' }, h('label', { for: 'ev-name', text: 'Event name' }), name, h('label', { for: 'ev-principal', text: 'Principal (ARN, * at the end for a prefix)' }), who,
    h('label', { for: 'ev-category', text: 'Category' }), cat, apply), out);
  let page = Number(params.get('page')) || 0;
  const fresh = latest();
  const load = async () => {
    const mine = fresh();
    clear(out);
    const r = range();
    const q = new URLSearchParams({ start: r.start, end: r.end, page, name: name.value.trim(), principal: who.value.trim(), category: cat.value });
    let t;
    try { t = await api('GET', 'trail?' + q.toString()); } catch (e) { if (mine()) { clear(out); failure(out, e); } return; }
    if (!mine()) return;
    clear(out);
    const pages = Math.max(1, Math.ceil(t.total / t.pageSize));
    out.append(h('p', { class: 'note', id: 'trail-count', text: `${fmtInt(t.total)} events · page ${t.page + 1} of ${pages} · newest first` }));
    const tb = h('tbody');
    for (const e of t.events) {
      const id = e.userIdentity || {};
      tb.append(h('tr', null, h('td', { text: fmtTime(Date.parse(e.eventTime), true) }), h('td', { text: e.eventName }), h('td', { text: e.eventSource }),
        h('td', { text: id.arn || id.type || '' }), h('td', { text: e.sourceIPAddress || '' }), h('td', { text: e.errorCode || '' }),
        h('td', null, h('details', null, h('summary', { text: 'Event' }), jsonBlock(e)))));
    }
    out.append(h('div', { class: 'tablewrap' }, h('table', null, h('thead', null, h('tr', null,
      ['Time', 'Event', 'Source', 'Principal', 'Source IP', 'Error', 'Details'].map((c) => h('th', { scope: 'col', text: c })))), tb)));
    const prev = h('button', { type: 'button', class: 'secondary', text: 'Newer', disabled: page === 0, onclick: () => { page -= 1; load(); } });
    const next = h('button', { type: 'button', class: 'secondary', text: 'Older', disabled: page + 1 >= pages, onclick: () => { page += 1; load(); } });
    out.append(h('div', { class: 'row' }, prev, next));
  };
  apply.addEventListener('click', () => { page = 0; load(); });
  await load();
}

// ---- routing and sign-in --------------------------------------------------------------

const PAGES = { overview, explorer, cost, alarms, config, trail };

async function route() {
  if (!S.who) return;
  // A newer navigation makes this one stale: it must not take the focus when it ends.
  const nav = (S.nav = (S.nav || 0) + 1);
  const hash = location.hash.replace(/^#\/?/, '') || 'overview';
  const [path, qs] = hash.split('?');
  const [name, arg] = path.split('/');
  const params = new URLSearchParams(qs || '');
  // Each navigation renders into its own element: a slower, stale one renders into an
  // element no longer on the page.
  const root = clear($('main'));
  const main = h('div', { class: 'page' });
  root.append(main);
  document.querySelectorAll('#nav a').forEach((a) => {
    if (a.dataset.page === name || (name === 'record' && a.dataset.page === 'explorer')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  S.page = name;
  try {
    if (name === 'record') { document.title = 'Record · Logbook'; await record(main, decodeURIComponent(arg || '')); }
    else if (PAGES[name]) {
      const label = (document.querySelector(`#nav a[data-page="${name}"]`) || {}).textContent || name;
      document.title = label + ' · Logbook';
      await PAGES[name](main, params);
    } else main.append(h('p', { class: 'error', text: 'No such page.' }));
  } catch (e) { if (!(e instanceof ApiError && e.status === 401) && nav === S.nav) failure(main, e); }
  if (nav === S.nav && !root.contains(document.activeElement)) root.focus({ preventScroll: true });
}

function showSignIn(message) {
  S.who = null; S.csrf = '';
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  ($('apiKey').offsetParent ? $('apiKey') : $('accessKeyId')).focus();
}
function showApp(who) {
  S.who = who; S.csrf = who.csrf;
  $('signin').hidden = true;
  $('app').hidden = false;
  $('who').textContent = who.arn + (who.permissions.content !== 'full' ? ` (bodies: ${who.permissions.content})` : '');
  document.querySelectorAll('#nav a[data-needs]').forEach((a) => { a.parentElement.hidden = !who.permissions[a.dataset.needs]; });
  route();
}

function zones() {
  const sel = $('tz');
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const list = ['UTC', local, 'America/Los_Angeles', 'America/New_York', 'America/Sao_Paulo', 'Europe/London', 'Europe/Berlin',
    'Asia/Kolkata', 'Asia/Singapore', 'Asia/Tokyo', 'Australia/Sydney'];
  const saved = localStorage.getItem('logbook.tz');
  for (const z of [...new Set(list)]) sel.append(h('option', { value: z, text: z + (z === local && z !== 'UTC' ? ' (this browser)' : '') }));
  sel.value = saved && list.includes(saved) ? saved : 'UTC';
}

function init() {
  zones();
  const saved = localStorage.getItem('logbook.range');
  if (saved && [...$('range').options].some((o) => o.value === saved)) $('range').value = saved;
  $('range').addEventListener('change', () => { localStorage.setItem('logbook.range', $('range').value); route(); });
  $('tz').addEventListener('change', () => { localStorage.setItem('logbook.tz', $('tz').value); route(); });
  window.addEventListener('hashchange', route);
  document.querySelectorAll('input[name=kind]').forEach((r) => r.addEventListener('change', () => {
    const pair = document.querySelector('input[name=kind]:checked').value === 'keyPair';
    $('apikey-fields').hidden = pair; $('keypair-fields').hidden = !pair;
  }));
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const pair = document.querySelector('input[name=kind]:checked').value === 'keyPair';
    const body = pair ? { accessKeyId: $('accessKeyId').value, secretAccessKey: $('secretAccessKey').value } : { apiKey: $('apiKey').value };
    $('signin-button').disabled = true;
    $('signin-error').textContent = '';
    try {
      const who = await api('POST', 'session', body);
      $('apiKey').value = $('secretAccessKey').value = '';
      showApp(who);
    } catch (e) { $('signin-error').textContent = e.message; }
    $('signin-button').disabled = false;
  });
  $('signout').addEventListener('click', async () => {
    try { await api('DELETE', 'session'); } catch (_) { /* ended already */ }
    showSignIn('You are signed out.');
  });
  api('GET', 'session').then(showApp, () => showSignIn(''));
}

document.addEventListener('DOMContentLoaded', init);
