/**
 * End to end, as a user runs it: the built CLI, a real controller in the background, real agent
 * processes and the three-tier example. Nothing of drover's is mocked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { drover, killAll, processesWithEnv, ROOT, until } from './helpers.js';

interface Status {
  apps: { name: string; converged: boolean; roles: { name: string; desired: number; serving: number; instances: { id: string; state: string; address: string; exports: Record<string, string>; agent: { pid: number | null; host: string } }[] }[] }[];
}

test('three-tier: up --detach, request through the chain, replace a killed agent, scale, down', { timeout: 240_000 }, async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'drover-e2e-'));
  t.after(() => {
    killAll(processesWithEnv(cwd));
    rmSync(cwd, { recursive: true, force: true });
  });
  const example = join(ROOT, 'examples/three-tier/drover.yaml');

  const up = await drover(['up', example, '--detach', '--port', '0'], { cwd });
  assert.equal(up.code, 0, up.stderr + up.stdout);
  assert.match(up.stdout, /three-tier is up/);

  const status = async (): Promise<Status> => {
    const r = await drover(['status', '--json'], { cwd });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Status;
  };
  const role = (s: Status, name: string) => s.apps[0]!.roles.find((r) => r.name === name)!;

  let s = await status();
  assert.equal(s.apps[0]?.converged, true);
  for (const [name, n] of [['db', 1], ['api', 2], ['front', 1]] as const) {
    assert.equal(role(s, name).instances.filter((i) => i.state === 'serving').length, n, name);
  }
  const front = role(s, 'front').instances[0]!.exports.url!;
  const dbUrl = role(s, 'db').instances[0]!.exports.url!;

  // A request through front reaches db through api.
  const hello = async () => {
    const res = await fetch(`${front}/hello`);
    assert.equal(res.status, 200);
    return { by: res.headers.get('x-served-by'), body: (await res.json()) as { api: string; hits: number; db: string } };
  };
  const h1 = await hello();
  const h2 = await hello();
  assert.equal(h1.body.db, dbUrl);
  assert.equal(h2.body.hits, h1.body.hits + 1);
  assert.notEqual(h1.by, h2.by, 'front round-robins over the api members');

  // kill -9 one api agent: a replacement comes up and serves.
  const victim = role(s, 'api').instances[0]!;
  // The README's way: the pid `drover status` gives is the agent's.
  const agentPid = victim.agent.pid;
  assert.ok(agentPid, 'status --json gives the agent pid');
  assert.equal(victim.agent.host, hostname());
  assert.deepEqual(processesWithEnv(`DROVER_INSTANCE_ID=${victim.id}`).filter((p) => p === agentPid), [agentPid], 'it is the instance\'s agent process');
  const text = await drover(['status'], { cwd });
  assert.match(text.stdout, new RegExp(`${victim.id}\\s+serving\\s+\\S+\\s+${agentPid}\\s`), 'the text status shows it too');
  process.kill(agentPid, 'SIGKILL');
  s = await until('a replacement api serving', async () => {
    const st = await status();
    const api = role(st, 'api').instances.filter((i) => i.state === 'serving');
    return api.length === 2 && !api.some((i) => i.id === victim.id) && st.apps[0]!.converged ? st : undefined;
  }, 60_000, 500);
  const replacement = role(s, 'api').instances.find((i) => i.id !== victim.id && i.state === 'serving')!;
  await until('front to use the replacement', async () => {
    const seen = new Set<string | null>();
    for (let k = 0; k < 4; k++) seen.add((await hello()).by);
    return seen.has(replacement.exports.endpoint!) ? true : undefined;
  }, 20_000, 300);
  assert.deepEqual(processesWithEnv(`DROVER_INSTANCE=${victim.id}\0`), [], 'the killed instance left no process');

  // Scale api to 3: front balances over three members without restarting.
  const frontPid = processesWithEnv(`DROVER_INSTANCE=${role(s, 'front').instances[0]!.id}\0`).sort((a, b) => a - b);
  const sc = await drover(['scale', 'api=3'], { cwd });
  assert.equal(sc.code, 0, sc.stderr);
  await until('front to balance over 3 api members', async () => {
    const seen = new Set<string | null>();
    for (let k = 0; k < 6; k++) seen.add((await hello()).by);
    return seen.size === 3 ? true : undefined;
  }, 30_000, 300);
  assert.deepEqual(processesWithEnv(`DROVER_INSTANCE=${role(s, 'front').instances[0]!.id}\0`).sort((a, b) => a - b), frontPid, 'front was not restarted');

  // Events explain what happened.
  const ev = await drover(['events', '--json', '--limit', '200'], { cwd });
  const kinds = ev.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { kind: string; message: string }));
  assert.ok(kinds.some((e) => e.kind === 'instance.failed' && e.message.includes(victim.id)));
  assert.ok(kinds.some((e) => e.kind === 'scale.manual' && e.message === 'api 2→3: set by hand'));

  const down = await drover(['down'], { cwd });
  assert.equal(down.code, 0, down.stderr);
  await until('no process left', async () => (processesWithEnv(cwd).length === 0 ? true : undefined), 10_000);
});

test('up --detach on a broken role fails with the reason', { timeout: 120_000 }, async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'drover-e2e-'));
  t.after(() => {
    killAll(processesWithEnv(cwd));
    rmSync(cwd, { recursive: true, force: true });
  });
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(cwd, 'drover.yaml'), 'app: broken\nroles:\n  web:\n    count: 1\n    start: echo "cannot open config" >&2; exit 3\n');
  const up = await drover(['up', '--detach', '--port', '0', '--timeout', '90'], {
    cwd,
    env: { DROVER_AGENT_RESTART_BACKOFF_MS: '100', DROVER_AGENT_MAX_RESTARTS: '1' },
  });
  assert.equal(up.code, 1);
  assert.match(up.stderr, /role web keeps failing/);
  assert.match(up.stderr, /exit code 3/);
  assert.match(up.stderr, /cannot open config/);
  assert.match(up.stderr, /its output: `drover logs i-[0-9a-f]+`; once fixed, `drover retry web`/);
  const down = await drover(['down'], { cwd });
  assert.equal(down.code, 0, down.stderr);
});

test('bad input: an invalid file is refused before anything starts; usage errors exit 2', async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'drover-e2e-'));
  t.after(() => rmSync(cwd, { recursive: true, force: true }));
  const { writeFileSync, existsSync } = await import('node:fs');
  writeFileSync(join(cwd, 'drover.yaml'), 'app: x\nroles:\n  api:\n    imports: [db.url]\n');
  const up = await drover(['up', '--detach'], { cwd });
  assert.equal(up.code, 1);
  assert.match(up.stderr, /roles\.api\.imports\[0\]: no role "db"/);
  assert.equal(existsSync(join(cwd, '.drover')), false, 'no controller was started');
  assert.equal((await drover(['scale', 'api'], { cwd })).code, 2);
  assert.equal((await drover(['frobnicate'], { cwd })).code, 2);
  assert.equal((await drover(['--help'], { cwd })).code, 0);
  const st = await drover(['status'], { cwd });
  assert.equal(st.code, 1);
  assert.match(st.stderr, /no controller found/);
});
