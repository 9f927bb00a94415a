/**
 * The dashboard (/ui) and its live stream (/v1/stream).
 *
 * First its locks, through HTTP: only the login page without a session; a session cookie that is
 * not the token; CSRF on every change made with the cookie; the bearer token unchanged. Then the
 * stream's resume. Then in a real browser (Debian's chromium, driven by playwright-core): log in,
 * see the three-tier app, scale api to 3 from the page and watch the instances appear live, find
 * the decision in the events view, drain one. Screenshots of each view go to a temporary folder
 * (and to $DASHBOARD_SCREENSHOTS if set). With CI=true a missing chromium fails the test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer, type RunningController } from '../src/controller/index.js';
import { apiClient, killAll, processesWithEnv, ROOT, until } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// The page is served from dist/ui: build it from web/ (as `npm run build` does).
execFileSync(process.execPath, [join(ROOT, 'scripts/build-ui.mjs')], { stdio: 'ignore' });

async function controller(t: { after: (fn: () => Promise<void>) => void }) {
  const dir = mkdtempSync(join(tmpdir(), 'drover-ui-'));
  const server = await startServer({ dataDir: join(dir, '.drover'), port: 0, logger: pino({ level: 'silent' }), heartbeatMs: 500, ...{} });
  t.after(async () => {
    await server.close();
    killAll(processesWithEnv(dir));
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, dir };
}

async function login(server: RunningController): Promise<{ cookie: string; csrf: string }> {
  const r = await fetch(`${server.url}/ui/login`, {
    method: 'POST', redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: server.token }).toString(),
  });
  assert.equal(r.status, 303);
  const setCookie = r.headers.get('set-cookie') ?? '';
  const cookie = setCookie.split(';')[0]!;
  const page = await (await fetch(`${server.url}/ui/`, { headers: { cookie } })).text();
  const csrf = /name="csrf-token" content="([^"]+)"/.exec(page)?.[1] ?? '';
  return { cookie, csrf };
}

test('without a session only the login page is served; a session is a cookie, not the token; changes need its CSRF token', async (t) => {
  const { server } = await controller(t);
  const u = server.url;
  // No session: the login page, and nothing else.
  const loginPage = await fetch(`${u}/ui/`);
  assert.equal(loginPage.status, 200);
  assert.match(await loginPage.text(), /<form method="post" action="\/ui\/login">/);
  for (const path of ['/ui/assets/app.js', '/ui/assets/app.css', '/v1/apps', '/v1/stream', '/ui/logout']) {
    const r = await fetch(u + path, { method: path === '/ui/logout' ? 'POST' : 'GET' });
    assert.equal(r.status, 401, path);
  }
  // A wrong token: back to the form, no cookie.
  const bad = await fetch(`${u}/ui/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=nope' });
  assert.equal(bad.status, 303);
  assert.equal(bad.headers.get('location'), '/ui/?failed');
  assert.equal(bad.headers.get('set-cookie'), null);
  // A login from another site is refused.
  const foreign = await fetch(`${u}/ui/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'http://evil.example' }, body: `token=${server.token}` });
  assert.equal(foreign.status, 403);

  const ok = await fetch(`${u}/ui/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: server.token }).toString() });
  assert.equal(ok.status, 303);
  const set = ok.headers.get('set-cookie') ?? '';
  assert.match(set, /^drover_session=[A-Za-z0-9_-]{40,}; HttpOnly; SameSite=Strict; Path=\/; Max-Age=\d+$/);
  assert.ok(!set.includes(server.token), 'the cookie is not the token');
  const { cookie, csrf } = await login(server);
  assert.ok(csrf.length >= 40);
  assert.equal((await fetch(`${u}/ui/assets/app.js`, { headers: { cookie } })).status, 200);
  assert.equal((await fetch(`${u}/v1/apps`, { headers: { cookie } })).status, 200);

  const yaml = readFileSync(join(ROOT, 'examples/three-tier/drover.yaml'), 'utf8');
  const put = (headers: Record<string, string>) =>
    fetch(`${u}/v1/apps/three-tier`, { method: 'PUT', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ yaml: yaml.replace('count: 2', 'count: 0'), appDir: join(ROOT, 'examples/three-tier') }) });
  // Cookie without CSRF token, or a wrong one, or from another origin: refused, nothing applied.
  const refused: Record<string, string>[] = [{ cookie }, { cookie, 'x-csrf-token': 'x'.repeat(43) }, { cookie, 'x-csrf-token': csrf, origin: 'http://evil.example' }];
  for (const h of refused) {
    const r = await put(h);
    assert.equal(r.status, 403, JSON.stringify(h));
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'forbidden');
  }
  assert.equal(((await (await fetch(`${u}/v1/apps`, { headers: { cookie } })).json()) as { apps: unknown[] }).apps.length, 0);
  // The bearer token needs no CSRF token (the CLI is unchanged).
  const drain = await fetch(`${u}/v1/instances/i-00000000/drain`, { method: 'POST', headers: { authorization: `Bearer ${server.token}` } });
  assert.equal(drain.status, 404);
  // Signing out ends the session.
  assert.equal((await fetch(`${u}/ui/logout`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrf } })).status, 200);
  assert.equal((await fetch(`${u}/v1/apps`, { headers: { cookie } })).status, 401);
});

/** Reads SSE frames from a response until `until` is satisfied. */
async function readFrames(res: Response, enough: (frames: { event: string; id?: string; data: unknown }[]) => boolean, timeoutMs = 10_000) {
  const frames: { event: string; id?: string; data: unknown }[] = [];
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const dec = new TextDecoder();
  let buf = '';
  const deadline = Date.now() + timeoutMs;
  while (!enough(frames)) {
    if (Date.now() > deadline) throw new Error(`stream: not enough frames: ${frames.map((f) => f.event).join(' ')}`);
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let end: number;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const f: { event: string; id?: string; data: unknown } = { event: 'message', data: null };
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) f.event = line.slice(7);
        else if (line.startsWith('id: ')) f.id = line.slice(4);
        else if (line.startsWith('data: ')) f.data = JSON.parse(line.slice(6));
      }
      if (block.startsWith(':') || block.startsWith('retry')) continue;
      frames.push(f);
    }
  }
  await reader.cancel();
  return frames;
}

test('the stream: the whole state first, events with ids, and a resume with Last-Event-ID sends only what came after', async (t) => {
  const { server } = await controller(t);
  const api = apiClient(server);
  // Every role at 0: the stream is what is tested here, not the app.
  const yaml = readFileSync(join(ROOT, 'examples/three-tier/drover.yaml'), 'utf8').replace(/count: \d/g, 'count: 0');
  await api('PUT', '/v1/apps/three-tier', { yaml, appDir: join(ROOT, 'examples/three-tier') });
  const auth = { authorization: `Bearer ${server.token}` };
  const first = await readFrames(await fetch(`${server.url}/v1/stream`, { headers: auth }), (f) => f.some((x) => x.event === 'history'));
  assert.deepEqual(first.map((f) => f.event), ['hello', 'events', 'apps', 'roles', 'instances', 'balancers', 'history']);
  const evFrame = first[1]!;
  const evs = (evFrame.data as { events: { id: number; kind: string }[] }).events;
  assert.ok(evs.some((e) => e.kind === 'app.apply'));
  const lastId = Number(evFrame.id);
  assert.equal(lastId, evs[evs.length - 1]!.id);

  // Something happens while the client is away…
  await api('PUT', '/v1/apps/three-tier/roles/api/count', { count: 0 });
  await api('PUT', '/v1/apps/three-tier/roles/db/count', { count: 0 });
  await until('the events are stored', async () => ((await api<{ events: unknown[] }>('GET', `/v1/events?after=${lastId}`)).events.length >= 2 ? true : undefined));
  // …and it resumes: exactly the events after its last id, then the state.
  const again = await readFrames(await fetch(`${server.url}/v1/stream`, { headers: { ...auth, 'last-event-id': String(lastId) } }), (f) => f.some((x) => x.event === 'history'));
  const replay = (again[1]!.data as { events: { id: number; kind: string; message: string }[] }).events;
  assert.ok(replay.length >= 2 && replay.every((e) => e.id > lastId), JSON.stringify(replay));
  assert.deepEqual(replay.filter((e) => e.kind === 'scale.manual').map((e) => e.message.split(':')[0]), ['api 0→0', 'db 0→0']);

  // Live: a change reaches a connected client within the coalescing tick, as an `events` frame.
  const live = await fetch(`${server.url}/v1/stream`, { headers: auth });
  const t0 = Date.now();
  setTimeout(() => void api('PUT', '/v1/apps/three-tier/roles/front/count', { count: 0 }), 300);
  const got = await readFrames(live, (f) => f.some((x) => x.event === 'events' && (x.data as { events: { kind: string }[] }).events.some((e) => e.kind === 'scale.manual' && Date.now() - t0 > 300)));
  assert.ok(got.length > 0);
});

test('in a browser: log in, see the app, scale api to 3 and watch it live, see the decision, drain one', { timeout: 240_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    if (process.env.CI === 'true') assert.fail(`chromium is missing at ${CHROMIUM} (.ci/run installs it)`);
    t.skip(`no chromium at ${CHROMIUM}`);
    return;
  }
  const { chromium } = await import('playwright-core');
  const { server } = await controller(t);
  const api = apiClient(server);
  const shots = mkdtempSync(join(tmpdir(), 'drover-ui-shots-'));
  const profile = mkdtempSync(join(tmpdir(), 'drover-ui-profile-'));
  const browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 860 } });
  t.after(async () => {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
    const keep = process.env.DASHBOARD_SCREENSHOTS;
    if (keep) {
      mkdirSync(keep, { recursive: true });
      for (const f of readdirSync(shots)) copyFileSync(join(shots, f), join(keep, f));
    }
    rmSync(shots, { recursive: true, force: true });
  });
  const page = browser.pages()[0] ?? (await browser.newPage());
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  const shot = (name: string, fullPage = true) => page.screenshot({ path: join(shots, `${name}.png`), fullPage });

  await api('PUT', '/v1/apps/three-tier', { yaml: readFileSync(join(ROOT, 'examples/three-tier/drover.yaml'), 'utf8'), appDir: join(ROOT, 'examples/three-tier') });

  // Log in: the page asks for the token once.
  await page.goto(`${server.url}/ui/`);
  await page.getByLabel('Controller token').fill('wrong');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  await page.getByLabel('Controller token').fill(server.token);
  await shot('login');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Views' }).waitFor();
  const cookies = await browser.cookies();
  const session = cookies.find((c) => c.name === 'drover_session');
  assert.ok(session && session.httpOnly && session.sameSite === 'Strict' && session.value !== server.token);

  // Overview: the app, its roles as a graph, converged, live.
  await page.getByRole('heading', { name: /three-tier/ }).waitFor();
  await page.getByText('✓ converged').waitFor({ timeout: 60_000 });
  await page.locator('svg.graph').getByText(/desired 2 · serving 2/).waitFor();
  await shot('overview');

  // Role view: scale api to 3 from the page, confirmed, and three instances serve, without a reload.
  await page.getByRole('row', { name: /^api/ }).getByRole('link', { name: 'api' }).click();
  await page.getByRole('heading', { name: /^api/ }).waitFor();
  const rows = page.locator('table.instances tbody tr');
  await until('two api rows', async () => ((await rows.count()) === 2 ? true : undefined), 10_000);
  await page.getByLabel('Scale api to').fill('3');
  await page.getByRole('button', { name: 'Scale', exact: true }).click();
  await page.getByRole('dialog').getByText('from 2 to 3').waitFor();
  await page.getByRole('button', { name: 'Confirm' }).click();
  await page.getByText('✓ api scaled to 3').waitFor();
  await until('three api instances serving, live', async () => ((await rows.filter({ hasText: '● serving' }).count()) === 3 ? true : undefined), 60_000);
  await shot('role');

  // Events: the decision, with its reason.
  await page.getByRole('link', { name: 'Events' }).click();
  await page.getByRole('cell', { name: /api 2→3: set by hand/ }).waitFor();
  await page.getByLabel('Kind').selectOption('scale.manual');
  assert.equal(await page.locator('table.events tbody tr').count(), 1);
  await page.getByLabel('Kind').selectOption('');
  await shot('events', false);

  // Drain one instance from the role view, by keyboard.
  await page.goBack();
  await page.getByRole('heading', { name: /^api/ }).waitFor();
  const victim = (await rows.first().locator('th code').textContent())!;
  await page.getByRole('button', { name: `Drain ${victim}` }).focus();
  await page.keyboard.press('Enter');
  await page.getByRole('dialog').getByText(`Drain ${victim}`).waitFor();
  await page.getByRole('button', { name: 'Confirm' }).focus();
  await page.keyboard.press('Enter');
  await page.getByText(`✓ ${victim} is draining`).waitFor();
  await until(`${victim} leaves the page`, async () => ((await rows.filter({ hasText: victim }).count()) === 0 ? true : undefined), 60_000);
  await until('two api rows serving', async () => ((await rows.filter({ hasText: '● serving' }).count()) === 2 ? true : undefined), 30_000);
  type Role = { desired: number; pinned: boolean; instances: { id: string }[] };
  const role = await api<Role>('GET', '/v1/apps/three-tier/roles/api');
  assert.equal(role.desired, 2);
  assert.ok(!role.instances.some((i) => i.id === victim));
  await page.getByRole('link', { name: 'Events' }).click();
  await page.getByRole('cell', { name: new RegExp(`${victim} \\(api\\): drained by hand`) }).waitFor();

  await page.getByRole('link', { name: 'Balancer' }).click();
  await page.getByRole('heading', { name: 'Load balancers' }).waitFor();
  await shot('balancer');
  await page.getByRole('link', { name: 'Tenants' }).click();
  await page.getByRole('heading', { name: 'Tenants' }).waitFor();
  await page.getByText('No tenants.').waitFor();
  await page.getByRole('link', { name: 'Controller' }).click();
  await page.getByText('up for').waitFor();
  await shot('controller');

  assert.deepEqual(errors, [], 'no error in the page');
  await api('DELETE', '/v1/apps/three-tier');
  await until('app deleted', async () => ((await api<{ apps: unknown[] }>('GET', '/v1/apps')).apps.length === 0 ? true : undefined), 60_000);
});
