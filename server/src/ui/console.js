// sluice console: views over the REST API. Every datum comes from the API with the token the
// user entered (kept in this tab's sessionStorage); text from the API is set as text, never as
// markup. The only markup inserted is what the service drew itself (/ui/mix, /ui/catalog),
// and a job's report is shown in a sandboxed frame.
'use strict';

const KEY = 'sluice-token';
const view = () => document.getElementById('view');
let timer = null;   // the current view's refresh
let generation = 0; // bumped on every navigation: late answers of a left view are ignored

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null) continue;
    e.append(kid instanceof Node ? kid : String(kid));
  }
  return e;
}

class ApiError extends Error {
  constructor(status, detail, field) {
    super(detail);
    this.status = status;
    this.field = field;
  }
}

// A call to the API with the session's token; problem bodies become ApiErrors.
async function api(path, options) {
  const opts = Object.assign({}, options || {});
  const probing = opts.probe; // the sign-in check: a refusal is answered by the form itself
  delete opts.probe;
  const headers = Object.assign({}, opts.headers || {});
  const token = sessionStorage.getItem(KEY);
  if (token) headers['Authorization'] = 'Bearer ' + token;
  opts.headers = headers;
  const resp = await fetch(path, opts);
  const type = resp.headers.get('content-type') || '';
  const body = type.includes('json') ? await resp.json().catch(() => null) : await resp.text();
  if (!resp.ok) {
    const detail = body && body.detail ? body.detail : resp.status + ' ' + resp.statusText;
    if (resp.status === 401 && token && !probing) {
      sessionStorage.removeItem(KEY);
      showLogin('The token was refused: ' + detail);
    }
    throw new ApiError(resp.status, detail, body && body.field);
  }
  return body;
}

function errorBox(err) {
  // Name the field unless the message already starts with it.
  const named = err instanceof ApiError && err.field && !err.message.startsWith(err.field);
  const text = named ? err.field + ': ' + err.message : err.message;
  return el('p', { class: 'error', role: 'alert' }, text);
}

// RFC 3339 UTC as "2026-12-04 19:16:02" (the header says UTC).
function when(s) {
  return s ? s.replace('T', ' ').replace('Z', '') : '';
}

function number(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : (n === undefined ? '' : String(n));
}

function refresh(fn, ms) {
  clearTimeout(timer);
  timer = setTimeout(fn, ms);
}

// ---- signing in ----

function showLogin(message) {
  clearTimeout(timer);
  generation++;
  document.getElementById('nav').hidden = true;
  const input = el('input', { id: 'token', type: 'password', autocomplete: 'off', placeholder: 'bearer token' });
  const msg = el('p', { id: 'login-error', class: 'error', role: 'alert' }, message || '');
  const form = el('form', { id: 'login' },
    el('h2', {}, 'sluice console'),
    el('p', { class: 'muted' }, 'Enter a token of this service (read or write). It is kept in this browser tab only, until you sign out or close the tab.'),
    input,
    el('button', { id: 'signin', type: 'submit' }, 'Sign in'),
    msg);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    msg.textContent = '';
    try {
      await api('/v1/jobs?limit=1', { probe: true });
      if (!location.hash || location.hash === '#login') location.hash = '#jobs';
      route();
    } catch (err) {
      sessionStorage.removeItem(KEY);
      msg.textContent = err.status === 401 ? 'This token is not accepted here.' : err.message;
    }
  });
  view().replaceChildren(form);
  input.focus();
}

// ---- jobs ----

function progressCell(job) {
  const p = job.progress || {};
  const percent = typeof p.percent === 'number' ? p.percent : (job.state === 'succeeded' ? 100 : 0);
  const bits = [];
  if (p.phase) bits.push(p.phase);
  if (typeof p.records === 'number') bits.push(number(p.records) + ' records');
  if (typeof p.kept === 'number') bits.push(number(p.kept) + ' kept');
  return el('td', { class: 'left nowrap' },
    el('progress', { max: 100, value: percent }), ' ',
    el('span', { class: 'progress-text' }, percent + '% ' + bits.join(' · ')));
}

async function jobsView(gen) {
  const filter = el('select', { id: 'jobs-state' },
    ['all', 'queued', 'running', 'succeeded', 'failed', 'cancelled'].map(s => el('option', { value: s }, s)));
  filter.value = sessionStorage.getItem('sluice-jobs-state') || 'all';
  const table = el('table', { id: 'jobs-table', class: 'list' });
  const status = el('p', { class: 'muted', id: 'jobs-status' });
  view().replaceChildren(el('h2', {}, 'Jobs'), el('label', {}, 'state ', filter), table, status);
  filter.addEventListener('change', () => {
    sessionStorage.setItem('sluice-jobs-state', filter.value);
    load();
  });
  async function load() {
    if (gen !== generation) return;
    const q = filter.value === 'all' ? '' : '&state=' + encodeURIComponent(filter.value);
    let jobs;
    try {
      jobs = (await api('/v1/jobs?limit=100' + q)).jobs;
    } catch (err) {
      if (gen === generation) status.replaceChildren(errorBox(err));
      return;
    }
    if (gen !== generation) return;
    table.replaceChildren(el('tr', {},
      ['job', 'state', 'progress', 'attempts', 'submitted (UTC)', 'finished (UTC)', 'error'].map(h => el('th', {}, h))));
    for (const j of jobs) {
      table.append(el('tr', { 'data-job': j.id },
        el('td', { class: 'nowrap' }, el('a', { href: '#job/' + encodeURIComponent(j.id) }, j.id)),
        el('td', { class: 'left' }, el('span', { class: 'state-' + j.state }, j.state)),
        progressCell(j),
        el('td', {}, j.attempts),
        el('td', { class: 'nowrap' }, when(j.created_at)),
        el('td', { class: 'nowrap' }, when(j.finished_at)),
        el('td', { class: 'left error' }, (j.error || '').slice(0, 160))));
    }
    const live = jobs.some(j => j.state === 'queued' || j.state === 'running');
    status.textContent = jobs.length ? (live ? 'Refreshing every second while jobs run.' : '') : 'No jobs yet: submit one.';
    refresh(load, live ? 1000 : 5000);
  }
  await load();
}

async function jobView(gen, id) {
  const head = el('h2', {}, 'Job ', el('span', { id: 'job-id' }, id));
  const facts = el('dl', { id: 'job-facts' });
  const bar = el('div', { id: 'job-progress' });
  const actions = el('p', {});
  const pipeline = el('pre', { id: 'job-pipeline' });
  const reportBox = el('div', { id: 'job-report' });
  view().replaceChildren(head, facts, bar, actions,
    el('details', {}, el('summary', {}, 'Pipeline'), pipeline),
    el('h3', {}, 'Report'), reportBox);
  let reportShown = false;
  async function load() {
    if (gen !== generation) return;
    let job;
    try {
      job = await api('/v1/jobs/' + encodeURIComponent(id));
    } catch (err) {
      if (gen === generation) facts.replaceChildren(errorBox(err));
      return;
    }
    if (gen !== generation) return;
    const row = (k, v, attrs) => [el('dt', {}, k), el('dd', attrs || {}, v)];
    facts.replaceChildren(
      ...row('state', el('span', { id: 'job-state', class: 'state-' + job.state }, job.state)),
      ...row('attempts', job.attempts),
      ...row('submitted', when(job.created_at) + ' UTC'),
      ...(job.started_at ? row('started', when(job.started_at) + ' UTC') : []),
      ...(job.finished_at ? row('finished', when(job.finished_at) + ' UTC') : []),
      ...(job.schedule ? row('schedule', job.schedule) : []),
      ...row('output', job.output + ' (under the service\'s output root)'),
      ...(job.error ? row('error', job.error, { id: 'job-error', class: 'error' }) : []));
    const p = job.progress || {};
    const table = el('table', {}, el('tr', {}, el('th', {}, 'phase'), el('th', {}, 'records'), el('th', {}, 'bytes'),
      el('th', {}, 'kept'), el('th', {}, 'dropped'), el('th', {}, 'rejected')),
      el('tr', {}, el('td', {}, p.phase || ''), el('td', {}, number(p.records)),
        el('td', {}, number(p.bytes) + (p.total_bytes ? ' of ' + number(p.total_bytes) : '')),
        el('td', {}, number(p.kept)), el('td', {}, number(p.dropped)), el('td', {}, number(p.rejected))));
    bar.replaceChildren(el('table', {}, el('tr', {}, progressCell(job))), table);
    pipeline.textContent = job.pipeline;
    actions.replaceChildren();
    if (job.state === 'queued' || job.state === 'running') {
      actions.append(el('button', {
        id: 'cancel', class: 'plain', onclick: async () => {
          try { await api('/v1/jobs/' + encodeURIComponent(id) + '/cancel', { method: 'POST' }); load(); }
          catch (err) { actions.append(errorBox(err)); }
        }
      }, job.cancel_requested ? 'cancel requested…' : 'Cancel'));
      reportBox.replaceChildren(el('p', { class: 'muted' }, 'The report appears when the job has run.'));
      refresh(load, 1000);
      return;
    }
    if (!reportShown) {
      reportShown = true;
      await showReport(gen, id, reportBox);
    }
  }
  await load();
}

async function showReport(gen, id, box) {
  let html;
  try {
    html = await api('/v1/jobs/' + encodeURIComponent(id) + '/report.html');
  } catch (err) {
    if (gen === generation) box.replaceChildren(errorBox(err));
    return;
  }
  if (gen !== generation) return;
  // A frame with every sandbox restriction: the report has no script and may run none.
  const frame = el('iframe', { id: 'report', sandbox: '', title: 'run report of ' + id });
  frame.srcdoc = html;
  const download = el('button', {
    class: 'plain', onclick: async () => {
      try {
        const json = await api('/v1/jobs/' + encodeURIComponent(id) + '/report');
        const url = URL.createObjectURL(new Blob([JSON.stringify(json, null, 2)], { type: 'application/json' }));
        const a = el('a', { href: url, download: id + '-report.json' });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (err) { box.append(errorBox(err)); }
    }
  }, 'Download report.json');
  box.replaceChildren(el('p', {}, download), frame);
}

// ---- submitting ----

const EXAMPLE = `# Paths are relative to a data root of this service.
[[inputs]]
paths = ["medicalgpt/medical_sft_200.jsonl.gz"]
domain = "medical"

[[stages]]
type = "exact_dedup"

[output]
dir = "x"             # the service writes to the job's own folder
formats = ["jsonl"]
`;

function submitView() {
  const text = el('textarea', { id: 'pipeline', rows: 18, spellcheck: 'false' });
  text.value = sessionStorage.getItem('sluice-draft') || EXAMPLE;
  text.addEventListener('input', () => sessionStorage.setItem('sluice-draft', text.value));
  const key = el('input', { id: 'idempotency-key', size: 32, placeholder: 'optional' });
  const out = el('div', { id: 'submit-result' });
  const form = el('form', { id: 'submit-form' },
    el('p', { class: 'muted' }, 'A pipeline in TOML, as for ', el('code', {}, 'sluice run'), '. It is checked before it is queued: paths must lie in the data roots.'),
    text,
    el('p', {}, el('label', {}, 'idempotency key ', key), el('button', { id: 'submit', type: 'submit' }, 'Submit job')),
    out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    out.replaceChildren(el('p', { class: 'muted' }, 'checking…'));
    const headers = { 'Content-Type': 'application/json' };
    if (key.value.trim()) headers['Idempotency-Key'] = key.value.trim();
    try {
      const job = await api('/v1/jobs', { method: 'POST', headers, body: JSON.stringify({ pipeline: text.value }) });
      location.hash = '#job/' + encodeURIComponent(job.id);
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  });
  view().replaceChildren(el('h2', {}, 'Submit a job'), form);
}

// ---- schedules ----

async function schedulesView(gen) {
  const table = el('table', { id: 'schedules-table', class: 'list' });
  const status = el('div', {});
  const cron = el('input', { id: 'schedule-cron', value: '0 2 * * *', size: 16 });
  const prefix = el('input', { id: 'schedule-prefix', placeholder: 'incoming', size: 24 });
  const text = el('textarea', { id: 'schedule-pipeline', rows: 10, spellcheck: 'false' });
  text.value = '[[inputs]]\npaths = []            # each tick: the new files under the prefix\ndomain = "finance"\n\n[[stages]]\ntype = "minhash"      # near duplicates, also against what earlier ticks kept\n\n[output]\ndir = "x"\n';
  const out = el('div', { id: 'schedule-result' });
  const form = el('form', { id: 'schedule-form' },
    el('p', { class: 'muted' }, 'Each tick queues a job over the files under the prefix (a folder of the first data root) that no earlier run of the schedule took; a folder that does not exist yet is waited for. Times are UTC; cron runs in the service\'s time zone.'),
    el('p', {}, el('label', {}, 'cron ', cron), el('label', {}, 'input prefix ', prefix)), text,
    el('p', {}, el('button', { type: 'submit' }, 'Add schedule')), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('/v1/schedules', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ cron: cron.value, input_prefix: prefix.value, pipeline: text.value })
      });
      out.replaceChildren();
      load();
    } catch (err) { out.replaceChildren(errorBox(err)); }
  });
  view().replaceChildren(el('h2', {}, 'Schedules'), table, status, el('h3', {}, 'New schedule'), form);
  async function load() {
    if (gen !== generation) return;
    let list;
    try { list = (await api('/v1/schedules')).schedules; }
    catch (err) { status.replaceChildren(errorBox(err)); return; }
    if (gen !== generation) return;
    table.replaceChildren(el('tr', {}, ['schedule', 'cron', 'input prefix', 'created', 'last tick', 'last success', 'failed runs', ''].map(h => el('th', {}, h))));
    for (const s of list) {
      // Deleting takes a second click on the same button (no modal dialog).
      const del = el('button', { class: 'plain', 'data-schedule': s.id }, 'Delete');
      del.addEventListener('click', async () => {
        if (!del.classList.contains('danger')) {
          del.classList.add('danger');
          del.textContent = 'Delete with its dedup state?';
          setTimeout(() => { del.classList.remove('danger'); del.textContent = 'Delete'; }, 5000);
          return;
        }
        try { await api('/v1/schedules/' + encodeURIComponent(s.id), { method: 'DELETE' }); load(); }
        catch (err) { status.replaceChildren(errorBox(err)); }
      });
      const failed = s.failures > 0
        ? el('span', { class: 'error' }, s.failures + (s.retry_at ? ' · next try ' + when(s.retry_at) : ''))
        : '0';
      table.append(el('tr', {},
        el('td', {}, s.id), el('td', {}, el('code', {}, s.cron)), el('td', {}, s.input_prefix),
        el('td', { class: 'nowrap' }, when(s.created_at)), el('td', { class: 'nowrap' }, when(s.last_tick)),
        el('td', { class: 'nowrap' }, when(s.last_success)), el('td', {}, failed), el('td', {}, del)));
    }
    status.replaceChildren(list.length ? '' : el('p', { class: 'muted' }, 'No schedules.'));
    refresh(load, 10000);
  }
  await load();
}

// ---- catalog ----

async function catalogView(gen) {
  const by = el('input', { id: 'catalog-by', value: sessionStorage.getItem('sluice-by') || 'domain,task', size: 30 });
  const where = el('input', { id: 'catalog-where', size: 40, placeholder: "e.g. lang = 'cmn' AND split = 'train'" });
  const out = el('div', { id: 'catalog-result' });
  const runs = el('div', { id: 'catalog-runs' });
  const form = el('form', { id: 'catalog-form' },
    el('label', {}, 'group by ', by), el('label', {}, 'where ', where),
    el('button', { type: 'submit' }, 'Show'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
  view().replaceChildren(el('h2', {}, 'Catalog'),
    el('p', { class: 'muted' }, 'Everything the service\'s jobs curated, grouped by any catalog columns (domain, task, source, kind, lang, split and the tags runs set).'),
    form, out, el('h3', {}, 'Runs'), runs);
  async function load() {
    sessionStorage.setItem('sluice-by', by.value);
    const q = new URLSearchParams({ by: by.value });
    if (where.value.trim()) q.set('where', where.value.trim());
    try {
      const html = await api('/ui/catalog?' + q);
      if (gen !== generation) return;
      out.innerHTML = html; // drawn and escaped by the service
    } catch (err) { if (gen === generation) out.replaceChildren(errorBox(err)); }
  }
  await load();
  try {
    const d = await api('/v1/datasets?by=');
    if (gen !== generation) return;
    const t = el('table', {}, el('tr', {}, ['run', 'folder', 'files'].map(h => el('th', {}, h))));
    for (const r of d.runs) t.append(el('tr', {}, el('td', {}, r.run), el('td', { class: 'left' }, r.path), el('td', { class: 'left' }, r.files)));
    runs.replaceChildren(d.runs.length ? t : el('p', { class: 'muted' }, 'No runs yet.'));
  } catch (err) { runs.replaceChildren(errorBox(err)); }
}

// ---- mix preview ----

async function mixView(gen) {
  const saved = JSON.parse(sessionStorage.getItem('sluice-mix') || '{}');
  const field = (name, attrs) => {
    const input = el('input', Object.assign({ id: 'mix-' + name, name }, attrs || {}));
    if (saved[name] !== undefined) input.value = saved[name];
    return input;
  };
  const select = (name, options) => {
    const s = el('select', { id: 'mix-' + name, name }, options.map(([v, t]) => el('option', { value: v }, t)));
    if (saved[name] !== undefined) s.value = saved[name];
    return s;
  };
  const domains = el('datalist', { id: 'mix-domains' });
  const inputs = {
    domain: field('domain', { list: 'mix-domains', size: 14, placeholder: 'medical' }),
    ratio: field('ratio', { size: 8, value: saved.ratio || '1:5' }),
    mode: select('mode', [['sft', 'sft (domain : general)'], ['cpt', 'cpt (domain token share)']]),
    unit: select('unit', [['', 'default unit'], ['samples', 'samples'], ['tokens', 'tokens']]),
    where: field('where', { size: 36, placeholder: "e.g. region = 'east'" }),
    target: field('target', { size: 10, placeholder: 'total' }),
    task_cap: field('task_cap', { size: 8 }),
    max_repeats: field('max_repeats', { size: 6 }),
    temperature: field('temperature', { size: 6 }),
  };
  const out = el('div', { id: 'mix-result' });
  const err = el('div', { id: 'mix-error' });
  const hint = el('p', { class: 'muted', id: 'mix-hint' });
  const curl = el('pre', { id: 'mix-curl' });
  const form = el('form', { id: 'mix-form' },
    el('p', {}, ...['domain', 'ratio', 'mode', 'unit'].map(k => el('label', {}, k + ' ', inputs[k]))),
    el('p', {}, ...['where', 'target', 'task_cap', 'max_repeats', 'temperature'].map(k => el('label', {}, k + ' ', inputs[k]))),
    domains);
  view().replaceChildren(el('h2', {}, 'Mix preview'),
    el('p', { class: 'muted' }, 'Planned from the catalog; nothing is written. The chart follows the form as you type.'),
    form, hint, err, out, el('h3', {}, 'The same preview from a shell'), curl);
  let pending = null;
  let asked = 0;
  async function load() {
    const q = new URLSearchParams();
    const keep = {};
    for (const [k, input] of Object.entries(inputs)) {
      input.classList.remove('field-bad');
      const v = input.value.trim();
      keep[k] = input.value;
      if (v) q.set(k, v);
    }
    sessionStorage.setItem('sluice-mix', JSON.stringify(keep));
    curl.textContent = "curl -H \"Authorization: Bearer $T\" '" + location.origin + '/mix?' + q + "'";
    if (!q.get('domain')) {
      err.replaceChildren(el('p', { class: 'muted' }, 'Name the domain pool to see its plan.'));
      out.replaceChildren();
      return;
    }
    const mode = q.get('mode');
    hint.textContent = mode === 'cpt'
      ? 'cpt: ratio is the largest share of tokens the domain may take (e.g. 0.15); the general pool is the pretraining documents (kind pretrain) of domain general, i.e. read without a domain.'
      : 'sft: ratio is domain : general in samples (e.g. 1:5); the general pool is the SFT samples of domain general, i.e. read without a domain.';
    const mine = ++asked;
    try {
      const html = await api('/ui/mix?' + q);
      if (gen !== generation || mine !== asked) return;
      err.replaceChildren();
      out.classList.remove('stale');
      out.innerHTML = html; // drawn and escaped by the service
    } catch (e) {
      if (gen !== generation || mine !== asked) return;
      if (e.field && inputs[e.field]) inputs[e.field].classList.add('field-bad');
      // The last good plan stays, greyed, so the form can be fixed while looking at it.
      out.classList.add('stale');
      err.replaceChildren(errorBox(e), el('p', { class: 'muted' }, 'Below: the last plan that could be computed, for other values.'));
    }
  }
  form.addEventListener('input', () => { clearTimeout(pending); pending = setTimeout(load, 250); });
  form.addEventListener('change', () => { clearTimeout(pending); pending = setTimeout(load, 50); });
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
  try {
    const d = await api('/v1/datasets?by=domain');
    const names = [...new Set(d.groups.map(g => g.domain).filter(x => x))];
    domains.replaceChildren(...names.map(n => el('option', { value: n })));
    // The largest domain that is not the general pool itself.
    const first = names.find(n => n !== 'general');
    if (!inputs.domain.value && first) inputs.domain.value = first;
  } catch (e) { /* the preview says what is wrong */ }
  if (gen === generation) await load();
}

// ---- routing ----

async function route() {
  clearTimeout(timer);
  const gen = ++generation;
  if (!sessionStorage.getItem(KEY) && sessionStorage.getItem(KEY) !== '') {
    showLogin();
    return;
  }
  document.getElementById('nav').hidden = false;
  const who = document.getElementById('who');
  if (!who.textContent) {
    api('/v1/whoami').then(
      (w) => { who.textContent = w.name ? 'signed in as ' + w.name + ' (' + w.scope + ')' : 'anonymous (read)'; },
      () => { who.textContent = 'signed in'; });
  }
  const hash = decodeURIComponent(location.hash.slice(1)) || 'jobs';
  const [name, arg] = hash.split(/\/(.*)/s);
  for (const a of document.querySelectorAll('#nav a[data-view]')) {
    a.classList.toggle('on', a.dataset.view === name || (name === 'job' && a.dataset.view === 'jobs'));
  }
  try {
    if (name === 'job' && arg) await jobView(gen, arg);
    else if (name === 'submit') submitView();
    else if (name === 'schedules') await schedulesView(gen);
    else if (name === 'catalog') await catalogView(gen);
    else if (name === 'mix') await mixView(gen);
    else await jobsView(gen);
  } catch (err) {
    if (gen === generation) view().replaceChildren(errorBox(err));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('signout').addEventListener('click', (ev) => {
    ev.preventDefault();
    sessionStorage.clear();
    document.getElementById('who').textContent = '';
    showLogin('Signed out.');
  });
  const token = sessionStorage.getItem(KEY);
  window.addEventListener('hashchange', route);
  if (token === null) showLogin();
  else route();
});
