// The dashboard's state, fed by one EventSource on /v1/stream (src/controller/stream.ts says
// what each frame carries). Frames only mutate this object; the view re-renders at most once per
// animation frame, however many frames arrived.

const MAX_EVENTS = 2000;
const MAX_POINTS = 1000;

/**
 * @typedef {{ id: number, at: string, atMs: number, app: string|null, role: string|null, instance: string|null, kind: string, message: string, data: Record<string, unknown>|null }} DroverEvent
 * @typedef {{ t: number, desired: number, live: number, serving: number, metric: number|null }} Sample
 */

export const state = {
  /** @type {'connecting'|'live'|'reconnecting'|'signed-out'} */
  conn: 'connecting',
  /** @type {{ version: string, startedAt: number, serverTime: number, clockSkew: number } | null} */
  hello: null,
  /** @type {Record<string, unknown>[]} */
  apps: [],
  /** @type {Map<string, any[]>} roles by app */
  roles: new Map(),
  /** @type {Map<string, any>} instances by id; an object is replaced, never changed, when its instance changes */
  instances: new Map(),
  /** @type {any[]} */
  balancers: [],
  /** @type {DroverEvent[]} oldest first */
  events: [],
  lastEventId: 0,
  /** @type {Map<string, Sample[]>} by `app/role` */
  samples: new Map(),
  /** @type {DroverEvent[]} scaling decisions of the last hour */
  decisions: [],
  historyMs: 3600000,
  /** bumped on every change, so views can tell */
  version: 0,
  frames: 0,
};

/** @type {(() => void) | undefined} */
let onChange;
let scheduled = false;
function changed() {
  state.version++;
  if (scheduled || !onChange) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    onChange?.();
  });
}

const SCALING = new Set(['scale.policy', 'scale.manual', 'scale.auto']);

/** @param {DroverEvent[]} evs */
function addEvents(evs) {
  if (evs.length === 0) return;
  const last = state.events[state.events.length - 1];
  const fresh = last ? evs.filter((e) => e.id > last.id) : evs;
  if (fresh.length === 0) return;
  state.events = state.events.concat(fresh);
  if (state.events.length > MAX_EVENTS) state.events = state.events.slice(-MAX_EVENTS);
  state.lastEventId = state.events[state.events.length - 1].id;
  const since = Date.now() - state.historyMs;
  const dec = fresh.filter((e) => SCALING.has(e.kind));
  if (dec.length) state.decisions = state.decisions.concat(dec).filter((e) => e.atMs >= since);
}

const handlers = {
  /** @param {any} d */
  hello(d) {
    state.hello = { ...d, clockSkew: Date.now() - d.serverTime };
  },
  /** @param {any} d */
  events(d) {
    if (d.initial || d.truncated) state.events = [];
    addEvents(d.events);
  },
  /** @param {any} d */
  apps(d) {
    state.apps = d.apps;
  },
  /** @param {any} d */
  roles(d) {
    if (d.roles.length === 0) state.roles.delete(d.app);
    else state.roles.set(d.app, d.roles);
  },
  /** @param {any} d */
  instances(d) {
    if (d.reset) state.instances = new Map();
    for (const i of d.upsert) state.instances.set(i.id, i);
    for (const id of d.remove) state.instances.delete(id);
  },
  /** @param {any} d */
  balancers(d) {
    state.balancers = d.balancers;
  },
  /** @param {any} d */
  history(d) {
    state.historyMs = d.historyMs;
    state.samples = new Map(Object.entries(d.samples));
    const known = new Set(state.events.map((e) => e.id));
    state.decisions = d.decisions.concat(state.events.filter((e) => SCALING.has(e.kind) && !d.decisions.some((x) => x.id === e.id)));
    void known;
  },
  /** @param {any} d */
  samples(d) {
    for (const [key, s] of Object.entries(d.roles)) {
      let list = state.samples.get(key);
      if (!list) state.samples.set(key, (list = []));
      list.push(/** @type {Sample} */ (s));
      if (list.length > MAX_POINTS) list.splice(0, list.length - MAX_POINTS);
    }
  },
};

/** Opens the stream; the browser reconnects by itself, sending Last-Event-ID. */
export function connect(/** @type {() => void} */ render) {
  onChange = render;
  const es = new EventSource('/v1/stream');
  for (const [type, fn] of Object.entries(handlers)) {
    es.addEventListener(type, (/** @type {MessageEvent} */ m) => {
      state.frames++;
      fn(JSON.parse(m.data));
      if (state.conn !== 'live') state.conn = 'live';
      changed();
    });
  }
  es.onopen = () => {
    state.conn = 'live';
    changed();
  };
  es.onerror = () => {
    // CLOSED: the server refused (the session expired, most likely); CONNECTING: a drop, retried.
    if (es.readyState === EventSource.CLOSED) {
      void fetch('/v1/health').then(async () => {
        const r = await fetch('/v1/apps');
        if (r.status === 401) {
          state.conn = 'signed-out';
          location.assign('/ui/');
        } else setTimeout(() => connect(render), 2000);
      }).catch(() => setTimeout(() => connect(render), 2000));
    }
    state.conn = 'reconnecting';
    changed();
  };
  return es;
}

export function rerender() {
  changed();
}

/** @returns {string} */
export function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? '';
}

/**
 * A change through the API, with the session's CSRF token.
 * @param {string} method @param {string} path @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function call(method, path, body) {
  const r = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: { 'x-csrf-token': csrfToken(), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data?.error?.message ?? `${method} ${path}: HTTP ${r.status}`);
  return data;
}
