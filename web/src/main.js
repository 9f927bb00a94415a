// The dashboard: Preact components written with htm (no JSX build step), one live stream.
import { h, render, Component } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import { state, connect, call, rerender } from './store.js';
import { makeChart } from './chart.js';

const html = htm.bind(h);

// ---------------------------------------------------------------- small helpers

/** States are shown by an icon and a word, never by colour alone. */
const STATE_ICON = {
  provisioning: '○', spare: '◇', assigned: '◔', deploying: '◔', waiting: '⏸', starting: '◑',
  serving: '●', draining: '◐', stopping: '◌', terminated: '■', unresponsive: '⚠', failed: '✗',
};

function StateBadge({ s, goal }) {
  const leaving = goal && goal !== 'run' && s !== 'draining' && s !== 'stopping';
  return html`<span class=${`badge st-${s}`}><span aria-hidden="true">${STATE_ICON[s] ?? '·'}</span> ${s}${leaving ? html` <small>(→ ${goal})</small>` : ''}</span>`;
}

function age(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}`;
  return `${Math.floor(s / 86400)}d`;
}

const time = (iso) => new Date(iso).toLocaleTimeString([], { hour12: false });
const link = (...parts) => `#/${parts.map(encodeURIComponent).join('/')}`;

/** A line that says what the last action did; read out by screen readers. */
let notice = { text: '', error: false };
function say(text, error = false) {
  notice = { text, error };
  rerender();
}

// ---------------------------------------------------------------- confirmation dialog

let pending = null;
function confirmThen(question, action) {
  pending = { question, action };
  rerender();
}

function Confirm() {
  const ref = useRef(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (pending && !d.open) d.showModal();
    if (!pending && d.open) d.close();
  });
  const close = () => {
    pending = null;
    rerender();
  };
  const go = async () => {
    const p = pending;
    pending = null;
    rerender();
    if (!p) return;
    try {
      say(await p.action());
    } catch (err) {
      say(`✗ ${err instanceof Error ? err.message : String(err)}`, true);
    }
  };
  return html`<dialog ref=${ref} aria-labelledby="confirm-q" onCancel=${close} onClose=${() => pending && close()}>
    <p id="confirm-q">${pending?.question ?? ''}</p>
    <div class="buttons">
      <button type="button" class="primary" onClick=${go}>Confirm</button>
      <button type="button" onClick=${close}>Cancel</button>
    </div>
  </dialog>`;
}

// ---------------------------------------------------------------- actions

function ScaleForm({ app, role }) {
  const [n, setN] = useState(String(role.desired));
  const id = `scale-${app}-${role.name}`;
  const submit = (e) => {
    e.preventDefault();
    const count = Number(n);
    if (!Number.isInteger(count) || count < 0) return say(`✗ ${JSON.stringify(n)} is not a count`, true);
    confirmThen(`Scale ${app}/${role.name} from ${role.desired} to ${count}? The count is pinned: its policies pause until you hand it back.`, async () => {
      await call('PUT', `/v1/apps/${app}/roles/${role.name}/count`, { count });
      return `✓ ${role.name} scaled to ${count}`;
    });
  };
  const auto = () =>
    confirmThen(`Hand ${app}/${role.name} back to its scaling policies?`, async () => {
      await call('PUT', `/v1/apps/${app}/roles/${role.name}/count`, { auto: true });
      return `✓ ${role.name} is back on its policies`;
    });
  return html`<form class="scale" onSubmit=${submit}>
    <label for=${id}>Scale ${role.name} to</label>
    <input id=${id} type="number" min=${role.min} max=${role.max} value=${n} onInput=${(e) => setN(e.currentTarget.value)} />
    <button type="submit">Scale</button>
    ${role.policies?.length ? html`<button type="button" onClick=${auto} disabled=${!role.pinned}>Back to auto</button>` : ''}
  </form>`;
}

function drain(inst) {
  confirmThen(`Drain ${inst.id} (${inst.role})? It leaves the balancer, finishes its in-flight work and stops; the role's count goes down by one, with no replacement.`, async () => {
    await call('POST', `/v1/instances/${inst.id}/drain`);
    return `✓ ${inst.id} is draining`;
  });
}

// ---------------------------------------------------------------- overview: apps and role graph

/** Layers by dependency: a role sits one column right of the deepest role it imports. */
function layout(roles) {
  const by = new Map(roles.map((r) => [r.name, r]));
  const depth = new Map();
  const dep = (r, seen = new Set()) => {
    if (depth.has(r.name)) return depth.get(r.name);
    if (seen.has(r.name)) return 0;
    seen.add(r.name);
    const ups = (r.imports ?? []).map((i) => i.split('.')[0]).filter((n) => by.has(n));
    const d = ups.length ? 1 + Math.max(...ups.map((n) => dep(by.get(n), seen))) : 0;
    depth.set(r.name, d);
    return d;
  };
  roles.forEach((r) => dep(r));
  const cols = [];
  for (const r of roles) (cols[depth.get(r.name)] ??= []).push(r);
  const W = 230, H = 96, GX = 70, GY = 22;
  const pos = new Map();
  cols.forEach((col, x) => col.forEach((r, y) => pos.set(r.name, { x: 10 + x * (W + GX), y: 10 + y * (H + GY) })));
  const edges = [];
  for (const r of roles) for (const i of r.imports ?? []) {
    const from = i.split('.')[0];
    if (pos.has(from) && !edges.some((e) => e.from === from && e.to === r.name)) edges.push({ from, to: r.name, optional: i.endsWith('?') });
  }
  const width = 20 + cols.length * (W + GX) - GX;
  const height = 20 + Math.max(1, ...cols.map((c) => c.length)) * (H + GY) - GY;
  return { pos, edges, W, H, width, height };
}

function RoleGraph({ app, roles }) {
  const g = layout(roles);
  return html`<svg class="graph" viewBox=${`0 0 ${g.width} ${g.height}`} width=${g.width} height=${g.height} role="group" aria-label=${`Roles of ${app} and their dependencies`}>
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#4a525c" /></marker></defs>
    ${g.edges.map((e) => {
      const a = g.pos.get(e.from), b = g.pos.get(e.to);
      const x1 = a.x + g.W, y1 = a.y + g.H / 2, x2 = b.x - 2, y2 = b.y + g.H / 2;
      return html`<path class="edge" d=${`M${x1},${y1} C${x1 + 35},${y1} ${x2 - 35},${y2} ${x2},${y2}`} stroke-dasharray=${e.optional ? '5 4' : ''} marker-end="url(#arrow)"><title>${e.to} imports ${e.from}</title></path>`;
    })}
    ${roles.map((r) => {
      const p = g.pos.get(r.name);
      const ok = r.serving >= r.desired && r.live === r.desired;
      return html`<a href=${link('role', app, r.name)} aria-label=${`${r.name}: ${r.serving} of ${r.desired} serving`}>
        <g class=${`node ${ok ? 'ok' : 'busy'}${r.degraded ? ' degraded' : ''}`} transform=${`translate(${p.x},${p.y})`}>
          <rect width=${g.W} height=${g.H} rx="6" />
          <text x="10" y="22" class="name">${ok ? '✓' : '…'} ${r.name}${r.pinned ? ' 📌' : ''}${r.degraded ? ' ⚠ degraded' : ''}</text>
          <text x="10" y="44">desired ${r.desired} · serving ${r.serving} · spare ${r.spares}</text>
          <text x="10" y="64" class="dim">${r.policies?.length ? r.policies.join(', ') : 'fixed count'}</text>
          <text x="10" y="84" class="dim">${r.lastDecision ? trim(r.lastDecision.reason, 34) : r.missingImports?.length ? `waits for ${r.missingImports.join(', ')}` : ''}</text>
        </g>
      </a>`;
    })}
  </svg>`;
}

const trim = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

function Overview() {
  if (state.apps.length === 0) return html`<section><h2>Apps</h2><p>No app yet. Apply one: <code>drover apply drover.yaml</code>.</p></section>`;
  return html`${state.apps.map((a) => {
    const roles = state.roles.get(a.name) ?? [];
    return html`<section class="app" aria-labelledby=${`app-${a.name}`}>
      <h2 id=${`app-${a.name}`}>${a.name} <span class=${`badge ${a.converged ? 'st-serving' : 'st-starting'}`}>${a.converged ? '✓ converged' : '… converging'}</span>${a.deleting ? html` <span class="badge st-failed">✗ deleting</span>` : ''}
        <small class="dim"> generation ${a.generation}</small></h2>
      <div class="graph-wrap"><${RoleGraph} app=${a.name} roles=${roles} /></div>
      <table class="roles">
        <caption class="sr-only">Roles of ${a.name}</caption>
        <thead><tr><th scope="col">role</th><th scope="col">desired</th><th scope="col">serving</th><th scope="col">live</th><th scope="col">spare</th><th scope="col">policy</th><th scope="col">last decision</th><th scope="col">scale</th></tr></thead>
        <tbody>${roles.map((r) => html`<tr key=${r.name}>
          <th scope="row"><a href=${link('role', a.name, r.name)}>${r.name}</a></th>
          <td>${r.desired}${r.pinned ? html` <span title="pinned by hand">📌<span class="sr-only"> pinned</span></span>` : ''}</td><td>${r.serving}</td><td>${r.live}</td><td>${r.spares}</td>
          <td>${r.policies?.length ? r.policies.join(', ') : html`<span class="dim">fixed</span>`}${r.pinned && r.policies?.length ? html`<br /><small>paused (pinned)</small>` : ''}</td>
          <td class="reason">${r.lastDecision ? html`${r.lastDecision.reason} <small class="dim">${time(r.lastDecision.at)}</small>` : html`<span class="dim">—</span>`}</td>
          <td><${ScaleForm} key=${`${r.name}-${r.desired}`} app=${a.name} role=${r} /></td>
        </tr>`)}</tbody>
      </table>
    </section>`;
  })}`;
}

// ---------------------------------------------------------------- role: instances and chart

class InstanceRow extends Component {
  shouldComponentUpdate(next) {
    return next.i !== this.props.i || next.bucket !== this.props.bucket;
  }
  render({ i, now }) {
    const since = i.startedAt ?? i.createdAt;
    const canDrain = i.state === 'serving' && i.goal === 'run';
    return html`<tr>
      <th scope="row"><code>${i.id}</code></th>
      <td><${StateBadge} s=${i.state} goal=${i.goal} />${i.connected ? '' : html` <small title="agent not connected">⚡̸ offline</small>`}</td>
      <td>${i.host || '—'}</td><td>${i.address ?? '—'}</td>
      <td>${age(now - since)}</td>
      <td class="num">${i.cpu === null ? '—' : i.cpu.toFixed(2)}</td>
      <td class="num">${i.connections ?? '—'}</td>
      <td class="num">${i.restarts}</td>
      <td>${canDrain ? html`<button type="button" onClick=${() => drain(i)} aria-label=${`Drain ${i.id}`}>Drain</button>` : ''}</td>
    </tr>`;
  }
}

function Chart({ app, role }) {
  const el = useRef(null);
  const chart = useRef(null);
  const key = `${app}/${role.name}`;
  const metric = role.metric ?? 'cpu';
  useEffect(() => {
    const marks = () =>
      state.decisions.filter((d) => d.app === app && d.role === role.name).map((d) => ({ t: d.atMs / 1000, label: String(d.data?.to ?? '') }));
    chart.current = makeChart(el.current, metric, marks);
    const onResize = () => chart.current?.resize();
    addEventListener('resize', onResize);
    return () => {
      removeEventListener('resize', onResize);
      chart.current?.destroy();
      chart.current = null;
    };
  }, [key, metric]);
  const samples = state.samples.get(key) ?? [];
  // The line reaches now: the role's current counts after the last 5-second sample.
  const last = samples[samples.length - 1];
  const live = { t: Date.now() - (state.hello?.clockSkew ?? 0), desired: role.desired, live: role.live, serving: role.serving, metric: last?.metric ?? null };
  useEffect(() => chart.current?.update(last && live.t > last.t ? [...samples, live] : samples));
  const decisions = state.decisions.filter((d) => d.app === app && d.role === role.name).slice(-5).reverse();
  return html`<figure class="chart">
    <div ref=${el} class="chart-box" role="img" aria-label=${`desired and serving instances of ${role.name}, and its ${metric}, over the last hour; ${samples.length} samples`}></div>
    <figcaption>Desired (dashed), serving (solid) and ${metric} (dotted) over the last hour; ▼ marks a scaling decision.
      ${decisions.length ? html`<ul class="decisions">${decisions.map((d) => html`<li key=${d.id}><time>${time(d.at)}</time> ${d.message}</li>`)}</ul>` : ''}
    </figcaption>
  </figure>`;
}

function RoleView({ app, role: name }) {
  const roles = state.roles.get(app) ?? [];
  const role = roles.find((r) => r.name === name);
  if (!role) return html`<section><h2>${app}/${name}</h2><p>No such role (yet).</p></section>`;
  const now = Date.now() - (state.hello?.clockSkew ?? 0);
  const bucket = Math.floor(now / 5000);
  const list = [...state.instances.values()].filter((i) => i.app === app && i.role === name).sort((a, b) => a.createdAt - b.createdAt);
  return html`<section aria-labelledby="role-h">
    <p class="crumbs"><a href="#/">Overview</a> › ${app}</p>
    <h2 id="role-h">${name} <small class="dim">desired ${role.desired} · serving ${role.serving} · live ${role.live} · draining ${role.draining} · spare ${role.spares}</small></h2>
    <p>${role.policies?.length ? `Policies: ${role.policies.join(', ')}${role.pinned ? ' — paused: the count is pinned by hand' : ''}.` : 'A fixed count.'}
      ${role.lastDecision ? html` Last decision: <span class="reason">${role.lastDecision.reason}</span>` : ''}</p>
    <${ScaleForm} key=${`${name}-${role.desired}`} app=${app} role=${role} />
    <${Chart} app=${app} role=${role} />
    <h3>Instances <small class="dim">(${list.length})</small></h3>
    <table class="instances">
      <thead><tr><th scope="col">instance</th><th scope="col">state</th><th scope="col">host</th><th scope="col">address</th><th scope="col">age</th><th scope="col">CPU (cores)</th><th scope="col">in flight</th><th scope="col">restarts</th><th scope="col"><span class="sr-only">actions</span></th></tr></thead>
      <tbody>${list.map((i) => html`<${InstanceRow} key=${i.id} i=${i} now=${now} bucket=${bucket} />`)}</tbody>
    </table>
  </section>`;
}

// ---------------------------------------------------------------- events

const RENDERED_EVENTS = 300;

function Events() {
  const [app, setApp] = useState('');
  const [kind, setKind] = useState('');
  const [text, setText] = useState('');
  const kinds = [...new Set(state.events.map((e) => e.kind))].sort();
  const q = text.toLowerCase();
  const matching = [];
  for (let k = state.events.length - 1; k >= 0 && matching.length < RENDERED_EVENTS; k--) {
    const e = state.events[k];
    if (app && e.app !== app) continue;
    if (kind && e.kind !== kind) continue;
    if (q && !`${e.message} ${e.instance ?? ''} ${e.role ?? ''}`.toLowerCase().includes(q)) continue;
    matching.push(e);
  }
  return html`<section aria-labelledby="events-h">
    <h2 id="events-h">Events <small class="dim">newest first; every decision with the reason Drover gave</small></h2>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label>App <select value=${app} onChange=${(e) => setApp(e.currentTarget.value)}><option value="">all</option>${state.apps.map((a) => html`<option>${a.name}</option>`)}</select></label>
      <label>Kind <select value=${kind} onChange=${(e) => setKind(e.currentTarget.value)}><option value="">all</option>${kinds.map((k) => html`<option>${k}</option>`)}</select></label>
      <label>Text <input type="search" value=${text} onInput=${(e) => setText(e.currentTarget.value)} placeholder="reason, instance, role" /></label>
    </form>
    <table class="events">
      <thead><tr><th scope="col">time</th><th scope="col">kind</th><th scope="col">app/role</th><th scope="col">instance</th><th scope="col">reason</th></tr></thead>
      <tbody>${matching.map((e) => html`<${EventRow} key=${e.id} e=${e} />`)}</tbody>
    </table>
    ${matching.length === RENDERED_EVENTS ? html`<p class="dim">Showing the newest ${RENDERED_EVENTS}; narrow the filter for more.</p>` : ''}
  </section>`;
}

class EventRow extends Component {
  shouldComponentUpdate(next) {
    return next.e !== this.props.e;
  }
  render({ e }) {
    const k = e.kind.split('.')[0];
    return html`<tr class=${`ev-${k}`}>
      <td><time datetime=${e.at}>${time(e.at)}</time></td><td><code>${e.kind}</code></td>
      <td>${e.app ?? ''}${e.role ? `/${e.role}` : ''}</td><td>${e.instance ? html`<code>${e.instance}</code>` : ''}</td><td class="reason">${e.message}</td>
    </tr>`;
  }
}

// ---------------------------------------------------------------- balancer

const MEMBER = { ready: ['✓', 'ready'], drain: ['◐', 'draining'], maint: ['✗', 'down'], down: ['✗', 'down'] };

function Balancers() {
  if (state.balancers.length === 0) {
    return html`<section><h2>Load balancers</h2><p>No load-balancer role is serving. A role with <code>loadBalancer:</code> shows its members here.</p></section>`;
  }
  return html`<section><h2>Load balancers</h2>${state.balancers.map((b) => html`<div class="lb" key=${b.instance}>
    <h3>${b.app}/${b.role} <small class="dim">${b.driver} on ${b.listen} · <code>${b.instance}</code></small></h3>
    <table><thead><tr><th scope="col">member</th><th scope="col">address</th><th scope="col">state</th><th scope="col">active connections</th><th scope="col">requests</th></tr></thead>
    <tbody>${b.members.map((m) => {
      const [icon, word] = m.removing ? ['◌', 'removing'] : (MEMBER[m.state] ?? ['·', m.state]);
      return html`<tr key=${m.id}><th scope="row"><code>${m.id}</code></th><td>${m.address}</td><td><span class=${`badge mb-${word}`}><span aria-hidden="true">${icon}</span> ${word}</span></td><td class="num">${m.activeConnections}</td><td class="num">${m.totalRequests}</td></tr>`;
    })}</tbody></table></div>`)}
    </section>`;
}

// ---------------------------------------------------------------- tenants

const TENANT = { pending: ['◌', 'pending'], placing: ['◐', 'placing'], ready: ['✓', 'ready'], failed: ['✗', 'failed'], removing: ['◌', 'removing'], moving: ['⇄', 'moving'], removed: ['·', 'removed'] };

function Tenants() {
  const [list, setList] = useState(/** @type {any[] | null} */ (null));
  const [open, setOpen] = useState(/** @type {any} */ (null));
  useEffect(() => {
    let stop = false;
    const load = () => fetch('/v1/tenants', { credentials: 'same-origin' }).then((r) => r.json()).then((d) => { if (!stop) setList(d.tenants ?? []); }).catch(() => undefined);
    void load();
    const t = setInterval(load, 2000);
    return () => { stop = true; clearInterval(t); };
  }, []);
  const show = (id) => fetch(`/v1/tenants/${id}`, { credentials: 'same-origin' }).then((r) => r.json()).then(setOpen).catch(() => undefined);
  if (list === null) return html`<section><h2>Tenants</h2><p>Loading…</p></section>`;
  const live = list.filter((t) => t.state !== 'removed');
  if (live.length === 0) return html`<section><h2>Tenants</h2><p>No tenants. A role with <code>tenants:</code> takes sign-ups at <code>POST /v1/apps/{app}/roles/{role}/tenants</code> or <code>drover tenants add</code>.</p></section>`;
  const pending = live.filter((t) => t.state === 'pending').length;
  return html`<section><h2>Tenants</h2>
    <p>${live.length} tenant(s)${pending ? html`, <strong>${pending} waiting for a seat</strong>` : ''}.</p>
    <table><thead><tr><th scope="col">name</th><th scope="col">role</th><th scope="col">state</th><th scope="col">instance</th><th scope="col">host</th><th scope="col">why</th></tr></thead>
    <tbody>${live.map((t) => {
      const [icon, word] = TENANT[t.state] ?? ['·', t.state];
      return html`<tr key=${t.id}><th scope="row"><button type="button" class="link" onClick=${() => void show(t.id)}>${t.name}</button></th><td>${t.app}/${t.role}</td>
        <td><span class=${`badge tn-${word}`}><span aria-hidden="true">${icon}</span> ${word}</span></td><td>${t.instance ? html`<code>${t.instance}</code>` : '-'}</td><td>${t.host ?? '-'}</td><td class="reason">${t.reason ?? ''}</td></tr>`;
    })}</tbody></table>
    ${open ? html`<div class="lb"><h3>${open.name} <small class="dim"><code>${open.id}</code></small></h3>
      ${open.lastOutput?.length ? html`<pre>${open.lastOutput.join('\n')}</pre>` : ''}
      <h4>Notification attempts</h4>
      ${open.notifications?.length ? html`<table><thead><tr><th scope="col">when</th><th scope="col">channel</th><th scope="col">event</th><th scope="col">attempt</th><th scope="col">status</th><th scope="col">answer</th></tr></thead>
        <tbody>${open.notifications.map((n) => html`<tr><td><time datetime=${n.at}>${time(n.at)}</time></td><td>${n.kind}</td><td><code>${n.event}</code></td><td class="num">${n.attempt}</td><td>${n.status}</td><td>${n.response ?? ''}</td></tr>`)}</tbody></table>` : html`<p class="dim">None (no callbackUrl or email, or nothing to tell yet).</p>`}
    </div>` : ''}
  </section>`;
}

// ---------------------------------------------------------------- controller

function ControllerView() {
  const h0 = state.hello;
  const now = Date.now() - (h0?.clockSkew ?? 0);
  return html`<section><h2>Controller</h2>${h0 ? html`<dl class="facts">
    <dt>version</dt><dd>${h0.version}</dd>
    <dt>up for</dt><dd>${age(now - h0.startedAt)} <small class="dim">(since ${new Date(h0.startedAt).toLocaleString()})</small></dd>
    <dt>stream</dt><dd>${state.conn} · ${state.frames} frames · last event #${state.lastEventId}</dd>
    <dt>apps</dt><dd>${state.apps.length}</dd><dt>instances</dt><dd>${state.instances.size}</dd>
  </dl>` : html`<p>Connecting…</p>`}
  <form method="post" action="/ui/logout" onSubmit=${(e) => { e.preventDefault(); void call('POST', '/ui/logout').finally(() => location.assign('/ui/')); }}><button type="submit">Sign out</button></form>
  </section>`;
}

// ---------------------------------------------------------------- shell

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  return parts;
}

const CONN = { connecting: ['◌', 'connecting'], live: ['●', 'live'], reconnecting: ['◐', 'reconnecting…'], 'signed-out': ['✗', 'signed out'] };

function App() {
  const [where] = [route()];
  const view = where[0] ?? '';
  let body;
  if (view === 'role' && where[1] && where[2]) body = html`<${RoleView} app=${where[1]} role=${where[2]} />`;
  else if (view === 'events') body = html`<${Events} />`;
  else if (view === 'balancer') body = html`<${Balancers} />`;
  else if (view === 'tenants') body = html`<${Tenants} />`;
  else if (view === 'controller') body = html`<${ControllerView} />`;
  else body = html`<${Overview} />`;
  const nav = [['', 'Overview'], ['events', 'Events'], ['balancer', 'Balancer'], ['tenants', 'Tenants'], ['controller', 'Controller']];
  const [icon, word] = CONN[state.conn];
  return html`<header>
      <h1><a href="#/">Drover</a></h1>
      <nav aria-label="Views"><ul>${nav.map(([k, label]) => html`<li><a href=${`#/${k}`} aria-current=${(view === k || (k === '' && view === 'role')) ? 'page' : undefined}>${label}</a></li>`)}</ul></nav>
      <p class=${`conn conn-${state.conn}`} role="status"><span aria-hidden="true">${icon}</span> ${word}</p>
    </header>
    <p class=${`notice${notice.error ? ' error' : ''}`} role="status" aria-live="polite">${notice.text}</p>
    <main>${body}</main>
    <${Confirm} />`;
}

const root = document.getElementById('root');
const draw = () => render(html`<${App} />`, root);
root.textContent = '';
addEventListener('hashchange', draw);
// Ages tick even when nothing streams.
setInterval(draw, 5000);
connect(draw);
draw();
