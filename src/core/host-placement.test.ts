import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseHost, missingLabels, type HostCandidate } from './placement.js';
import { parseAppFile, SpecError } from './spec.js';

const node = (id: string, host: string, labels: Record<string, string> = {}, unavailable?: string): HostCandidate => ({
  id, host, labels, ...(unavailable !== undefined ? { unavailable } : {}),
});
const local = node('local', 'ctl', { host: 'ctl', local: 'true' });

test('labels: a host fits only with every label asked for, with the same value', () => {
  assert.deepEqual(missingLabels({ disk: 'ssd' }, { disk: 'ssd', zone: 'a' }), []);
  assert.deepEqual(missingLabels({ disk: 'ssd', zone: 'b' }, { disk: 'hdd' }), ['disk=ssd (has disk=hdd)', 'zone=b']);
  const c = chooseHost({
    role: 'db', constraints: { labels: { disk: 'ssd' }, strict: false },
    candidates: [node('n-1', 'a', { disk: 'hdd' }), node('n-2', 'b', { disk: 'ssd' }), local], membersOn: new Map(),
  });
  assert.ok(c.ok);
  assert.equal(c.host.id, 'n-2');
});

test('without constraints the first available host is taken (joined nodes before this machine)', () => {
  const c = chooseHost({ role: 'api', candidates: [node('n-1', 'a', {}, 'busy'), node('n-2', 'b'), local], membersOn: new Map() });
  assert.ok(c.ok && c.host.id === 'n-2');
  const l = chooseHost({ role: 'api', candidates: [node('n-1', 'a', {}, 'busy'), local], membersOn: new Map() });
  assert.ok(l.ok && l.host.id === 'local');
});

test('a node labelled role=x takes only x', () => {
  const c = chooseHost({ role: 'api', candidates: [node('n-1', 'a', { role: 'db' }), local], membersOn: new Map() });
  assert.ok(c.ok && c.host.id === 'local');
});

test('this machine is chosen by its own labels (host, local) and refused when they do not fit', () => {
  const yes = chooseHost({ role: 'api', constraints: { labels: { local: 'true' }, strict: false }, candidates: [node('n-1', 'a'), local], membersOn: new Map() });
  assert.ok(yes.ok && yes.host.id === 'local');
  const no = chooseHost({ role: 'api', constraints: { labels: { disk: 'ssd' }, strict: false }, candidates: [node('n-1', 'a', { disk: 'hdd' }), node('n-2', 'b', { disk: 'ssd' }, 'busy'), local], membersOn: new Map() });
  assert.equal(no.ok, false);
  // The reason names what was asked and each host seen with why it did not fit.
  assert.match(no.reason, /no host fits api \(wants labels disk=ssd\)/);
  assert.match(no.reason, /node n-1 \(a\): lacks disk=ssd \(has disk=hdd\)/);
  assert.match(no.reason, /node n-2 \(b\): busy/);
  assert.match(no.reason, /this machine \(ctl\): lacks disk=ssd/);
});

test('spread: host prefers the host with the fewest members; soft spread stacks when it must, strict refuses', () => {
  const candidates = [local, node('n-1', 'a')];
  const soft = chooseHost({ role: 'api', constraints: { labels: {}, spread: 'host', strict: false }, candidates, membersOn: new Map([['ctl', 1]]) });
  assert.ok(soft.ok && soft.host.id === 'n-1', 'the host without a member wins over the earlier candidate');
  const stacked = chooseHost({ role: 'api', constraints: { labels: {}, spread: 'host', strict: false }, candidates: [local], membersOn: new Map([['ctl', 1]]) });
  assert.ok(stacked.ok && stacked.host.id === 'local');
  const strict = chooseHost({ role: 'api', constraints: { labels: {}, spread: 'host', strict: true }, candidates: [local], membersOn: new Map([['ctl', 1]]) });
  assert.equal(strict.ok, false);
  assert.match(strict.reason, /runs 1 member\(s\) of api already \(strict spread\)/);
  const none = chooseHost({ role: 'api', candidates: [], membersOn: new Map() });
  assert.match(none.ok ? '' : none.reason, /hosts seen: none/);
});

test('the reason lists at most 10 hosts, then a count', () => {
  const many = Array.from({ length: 14 }, (_, i) => node(`n-${i}`, `h${i}`, {}, 'busy'));
  const c = chooseHost({ role: 'api', candidates: many, membersOn: new Map() });
  assert.match(c.ok ? '' : c.reason, /and 4 more$/);
});

test('the app file: placement compiles, and bad placement is refused naming the field', () => {
  const spec = parseAppFile('app: a\nroles:\n  db:\n    start: x\n    placement: { labels: { disk: ssd, gen: 3 }, spread: host, strict: true }\n');
  assert.deepEqual(spec.roles.db!.placement, { labels: { disk: 'ssd', gen: '3' }, spread: 'host', strict: true });
  assert.equal(parseAppFile('app: a\nroles:\n  db:\n    start: x\n').roles.db!.placement, undefined);
  const refused = (yaml: string) => {
    try {
      parseAppFile(yaml);
    } catch (e) {
      assert.ok(e instanceof SpecError);
      return e.message;
    }
    return assert.fail('accepted');
  };
  assert.match(refused('app: a\nroles:\n  db:\n    start: x\n    placement: { strict: true }\n'), /roles\.db\.placement\.strict: needs spread: host/);
  assert.match(refused('app: a\nroles:\n  db:\n    start: x\n    placement: { spread: zone }\n'), /roles\.db\.placement\.spread/);
  assert.match(refused('app: a\nroles:\n  db:\n    start: x\n    placement: { labels: { "a b": x } }\n'), /roles\.db\.placement\.labels/);
  assert.match(refused('app: a\nroles:\n  db:\n    start: x\n    placement: { labels: { disk: "s s" } }\n'), /roles\.db\.placement\.labels\.disk/);
  assert.match(refused('app: a\nroles:\n  db:\n    start: x\n    placement: { zone: a }\n'), /roles\.db\.placement/);
});

test('a role with placement takes no warm spares: spares on it are refused, the app-wide pool is not claimed', async () => {
  assert.throws(() => parseAppFile('app: a\nroles:\n  db:\n    start: x\n    spares: 1\n    placement: { labels: { disk: ssd } }\n'), /roles\.db\.spares: a role with placement takes no warm spares/);
  const { plan, DEFAULT_PLANNER_OPTIONS } = await import('./planner.js');
  const spec = parseAppFile('app: a\nspares: 1\nroles:\n  db:\n    start: x\n    placement: { labels: { disk: ssd } }\n');
  const spare = {
    id: 'i-s', role: null, pool: '*', state: 'spare' as const, goal: 'run' as const, roleHash: '', createdAt: 0, stateSince: 0, exports: null,
    importsSent: null, importsApplied: null, assignOrderId: null, stopOrderId: null, drainOrderId: null, startedAt: null, stopRequestedAt: null,
    drainRequestedAt: null, destroyedAt: null, lastSeenAt: 900,
  };
  const p = plan({ app: { name: 'a', spec, deleting: false }, desired: { db: 1 }, instances: [spare], now: 1000, controllerStartedAt: 0, options: DEFAULT_PLANNER_OPTIONS });
  assert.ok(p.actions.some((a) => a.kind === 'create' && a.role === 'db'), JSON.stringify(p.actions));
  assert.ok(!p.actions.some((a) => a.kind === 'assign'));
});
