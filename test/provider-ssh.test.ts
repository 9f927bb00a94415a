/**
 * The ssh provider against real sshd: two hosts made with network namespaces (test/netns.ts),
 * each running a private sshd (its own config, generated host key, authorized key and port,
 * nothing of the system's sshd used). The provider conformance suite runs against it, then a
 * host whose key is not the pinned one is refused with both fingerprints named.
 *
 * Needs root, iproute2 and openssh-server (/usr/sbin/sshd): under CI=true a machine without
 * them fails with the reason; elsewhere the suite is skipped with it.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSshHosts, SshConfigError, SshProvider, type SshHost } from '../src/adapters/providers/index.js';
import { providerConformance } from './provider-conformance.js';
import { makeNetwork, netnsUnavailable, type Host } from './netns.js';
import { apiClient, drover, killAll, processesWithEnv, ROOT, until } from './helpers.js';
import { pino } from 'pino';
import { freePort, processesOfInstance } from '../src/adapters/providers/index.js';
import { startServer, type RunningController } from '../src/controller/index.js';

const SSHD = '/usr/sbin/sshd';
const unavailable = netnsUnavailable() ?? (existsSync(SSHD) ? undefined : `openssh-server is not installed (${SSHD})`);
if (unavailable && process.env.CI === 'true') {
  test('the ssh provider suite needs root, network namespaces and sshd', () => assert.fail(unavailable));
}
const skip = unavailable ? `the ssh provider suite: ${unavailable}` : undefined;
const BUNDLE = join(ROOT, 'dist/ssh-bundle');

const work = mkdtempSync(join(tmpdir(), 'drover-ssh-'));
const cleanups: (() => void)[] = [];
const hosts: SshHost[] = [];
let sshHosts: { host: Host; fingerprint: string }[] = [];
let bridgeIp = '';

/** An ed25519 key pair made by ssh-keygen; answers its SHA256 fingerprint. */
function keygen(file: string): string {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'drover-test', '-f', file]);
  return execFileSync('ssh-keygen', ['-l', '-f', `${file}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
}

before(async () => {
  if (skip) return;
  if (!existsSync(join(BUNDLE, 'agent/main.js'))) execFileSync(process.execPath, [join(ROOT, 'scripts/build-ssh-bundle.mjs')]);
  const net = makeNetwork({ after: (fn: () => void) => cleanups.push(fn) } as unknown as TestContext, 2);
  bridgeIp = net.bridgeIp;
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege separation folder
  const clientKey = join(work, 'client_key');
  keygen(clientKey);
  writeFileSync(join(work, 'authorized_keys'), readFileSync(`${clientKey}.pub`), { mode: 0o600 });
  const daemons: ChildProcess[] = [];
  cleanups.push(() => {
    for (const d of daemons) if (d.pid) killAll([d.pid]);
  });
  sshHosts = net.hosts.map((host, k) => {
    const hostKey = join(work, `host${k}_key`);
    const fingerprint = keygen(hostKey);
    const config = join(work, `sshd${k}.conf`);
    writeFileSync(config, [
      'Port 2222', `ListenAddress ${host.ip}`, `HostKey ${hostKey}`, `PidFile ${join(work, `sshd${k}.pid`)}`,
      `AuthorizedKeysFile ${join(work, 'authorized_keys')}`, 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
      'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no', 'Subsystem sftp internal-sftp', 'LogLevel ERROR', '',
    ].join('\n'), { mode: 0o600 });
    const d = host.spawn([SSHD, '-D', '-e', '-f', config]);
    daemons.push(d);
    return { host, fingerprint };
  });
  // Both answer (a banner on the port) before anything connects.
  const { connect } = await import('node:net');
  for (const { host } of sshHosts) {
    await until(`sshd on ${host.ip}`, () => new Promise<true | undefined>((resolve) => {
      const s = connect(2222, host.ip, () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(undefined));
    }), 10_000, 100);
  }
  writeFileSync(join(work, 'hosts.yaml'), `hosts:\n${sshHosts.map(({ host, fingerprint }, k) => [
    `  - name: h${k}`, `    address: ${host.ip}`, '    port: 2222', '    user: root', `    keyFile: ${clientKey}`, `    hostKey: "${fingerprint}"`,
    `    node: ${process.execPath}`, '    slots: 2', `    dir: ${join(work, `h${k}`)}`, '',
  ].join('\n')).join('')}`);
  hosts.push(...loadSshHosts(join(work, 'hosts.yaml')));
});

after(() => {
  killAll(processesWithEnv(work));
  for (const c of cleanups.reverse()) c();
  rmSync(work, { recursive: true, force: true });
});

providerConformance('ssh', {
  // Each host keeps its instances in its own folder (the namespaces share this machine's disk).
  make: (dir) => new SshProvider({ hosts: hosts.map((h, k) => ({ ...h, dir: join(dir, `remote-${k}`) })), bundleDir: BUNDLE }),
  addressOk: (ip) => sshHosts.some(({ host }) => host.ip === ip),
  reportsExit: () => false,
  ...(skip ? { skip } : {}),
});

test('ssh: a host whose key is not the pinned one is refused, both fingerprints named; a bad hosts file is refused naming the field', { timeout: 60_000, ...(skip ? { skip } : {}) }, async () => {
  const [h0] = hosts;
  const wrong = `SHA256:${'A'.repeat(43)}`;
  const dir = join(work, 'mismatch');
  const provider = new SshProvider({ hosts: [{ ...h0!, hostKey: wrong, dir }], bundleDir: BUNDLE });
  const asked = await provider.request({ instanceId: 'i-5ec0ffee', epoch: 1, key: 'k'.repeat(43), controllerUrl: 'http://127.0.0.1:9', app: 'a', role: null });
  assert.equal(asked.state, 'pending');
  const gone = await until('refused', async () => {
    const [m] = await provider.describe([{ id: 'i-5ec0ffee', providerRef: asked.providerRef }]);
    return m?.state === 'gone' ? m : undefined;
  }, 20_000, 100);
  assert.match(gone.message ?? '', new RegExp(`presented host key ${sshHosts[0]!.fingerprint.replace(/[+/]/g, '\\$&')}, not the pinned ${wrong}`));
  assert.ok(!existsSync(dir), 'nothing was installed on it');
  await assert.rejects(provider.list(), /presented host key/);

  const bad = join(work, 'bad.yaml');
  writeFileSync(bad, `hosts:\n  - address: 10.0.0.1\n    user: root\n    keyFile: ${join(work, 'client_key')}\n    hostKey: "md5:aa"\n`);
  assert.throws(() => loadSshHosts(bad), (err: Error) => err instanceof SshConfigError && /hosts\[0\]\.hostKey: the host key's SHA256 fingerprint/.test(err.message));
  writeFileSync(join(work, 'open_key'), readFileSync(join(work, 'client_key')), { mode: 0o644 });
  writeFileSync(bad, `hosts:\n  - address: 10.0.0.1\n    user: root\n    keyFile: ${join(work, 'open_key')}\n    hostKey: "${wrong}"\n`);
  assert.throws(() => loadSshHosts(bad), /hosts\[0\]\.keyFile: .* is readable by others than its owner/);
});

test('ssh: the agent bundle is installed into a private folder, and replaced when it changes', { timeout: 60_000, ...(skip ? { skip } : {}) }, async () => {
  const bundleDir = join(work, 'bundle-copy');
  cpSync(BUNDLE, bundleDir, { recursive: true });
  const dir = join(work, 'installs');
  const once = async () => {
    const provider = new SshProvider({ hosts: [{ ...hosts[0]!, dir }], bundleDir });
    const m = await provider.request({ instanceId: 'i-b0b0b0b0', epoch: 1, key: 'k'.repeat(43), controllerUrl: 'http://127.0.0.1:9', app: 'a', role: null });
    await until('running', async () => ((await provider.describe([{ id: m.id, providerRef: m.providerRef }]))[0]?.state === 'running' ? true : undefined), 20_000, 100);
    await provider.destroy({ id: m.id, providerRef: m.providerRef });
    return readdirSync(dir).filter((f) => f.startsWith('agent-'));
  };
  const [first] = await once();
  assert.ok(first);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.equal(statSync(join(dir, first)).mode & 0o777, 0o700);
  assert.equal(statSync(join(dir, first, 'agent/main.js')).mode & 0o777, 0o600);
  appendFileSync(join(bundleDir, 'adapters/providers/ssh-remote.js'), '\n// a new version\n');
  const after = await once();
  assert.equal(after.length, 1, `one bundle kept: ${after.join(', ')}`);
  assert.notEqual(after[0], first, 'the new version replaced the old');

  // The host loses the bundle (re-imaged, cleaned): the call that finds it missing fails, the next installs it again.
  const provider = new SshProvider({ hosts: [{ ...hosts[0]!, dir }], bundleDir });
  const make = async (id: string) => {
    const m = await provider.request({ instanceId: id, epoch: 1, key: 'k'.repeat(43), controllerUrl: 'http://127.0.0.1:9', app: 'a', role: null });
    return until(`${id} settled`, async () => {
      const [d] = await provider.describe([{ id, providerRef: m.providerRef }]);
      return d?.state === 'pending' ? undefined : d;
    }, 20_000, 100);
  };
  assert.equal((await make('i-b0b0b0b1')).state, 'running');
  await provider.destroy({ id: 'i-b0b0b0b1', providerRef: null });
  rmSync(join(dir, after[0]!), { recursive: true, force: true });
  const lost = await make('i-b0b0b0b2');
  assert.equal(lost.state, 'gone');
  assert.match(lost.message ?? '', /on the host: /);
  const again = await make('i-b0b0b0b3');
  assert.equal(again.state, 'running', 'installed again');
  await provider.destroy({ id: 'i-b0b0b0b3', providerRef: null });
});

test('ssh: a controller given the hosts file runs a role on an ssh host (the app folder shipped as a bundle) and removes it on scale-in', { timeout: 90_000, ...(skip ? { skip } : {}) }, async (t) => {
  const dir = join(work, 'controller');
  const server: RunningController = await startServer({
    dataDir: join(dir, '.drover'), host: bridgeIp, port: await freePort(bridgeIp), logger: pino({ level: 'silent' }), heartbeatMs: 500, sshHosts: join(work, 'hosts.yaml'),
  });
  t.after(() => server.close());
  const api = <T>(method: string, path: string, body?: unknown) => apiClient(server)<T>(method, path, body);
  const yaml = (count: number) => `app: shop
roles:
  web:
    count: ${count}
    start: exec node \${appDir}/fleet-web.mjs
    exports: { url: "http://\${ip}:\${port}" }
    health: { http: /, interval: 200ms }
`;
  await api('PUT', '/v1/apps/shop', { yaml: yaml(1), appDir: join(ROOT, 'test/fixtures') });
  type Inst = { id: string; state: string; exports: Record<string, string>; workdir: string; agent: { host: string; pid: number | null } };
  const web = await until('web serving on an ssh host', async () => {
    const { instances } = await api<{ instances: Inst[] }>('GET', '/v1/instances');
    return instances.find((i) => i.state === 'serving');
  }, 60_000).catch(async (err: unknown) => {
    const { events } = await api<{ events: { kind: string; message: string }[] }>('GET', '/v1/events?limit=50');
    throw new Error(`${String(err)}; events: ${events.map((e) => `${e.kind}: ${e.message}`).join(' | ')}`);
  });
  assert.ok(['h0', 'h1'].includes(web.agent.host), `on an ssh host: ${web.agent.host}`);
  const url = web.exports.url!;
  assert.ok(sshHosts.some(({ host }) => url.startsWith(`http://${host.ip}:`)), `its host's address: ${url}`);
  assert.equal((await (await fetch(url)).text()).trim(), web.id);
  assert.ok(existsSync(join(web.workdir, 'app')), 'the app folder came as a bundle, unpacked in the instance folder');

  await api('PUT', '/v1/apps/shop', { yaml: yaml(0), appDir: join(ROOT, 'test/fixtures') });
  await until('gone from the host', async () => (processesOfInstance(web.id).length === 0 && !existsSync(web.workdir) ? true : undefined), 30_000);
  await until('marked destroyed', async () => ((await api<{ instances: Inst[] }>('GET', '/v1/instances')).instances.length === 0 ? true : undefined), 15_000);
});

test('drover controller --ssh-hosts with a bad file does not start, and says which field', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-ssh-cli-'));
  try {
    const file = join(dir, 'hosts.yaml');
    writeFileSync(file, 'hosts:\n  - address: 10.0.0.1\n    user: root\n    keyFile: /nonexistent\n    hostKey: "SHA256:nope"\n');
    const r = await drover(['controller', '--data-dir', join(dir, '.drover'), '--port', '0', '--ssh-hosts', file], { cwd: dir, timeoutMs: 30_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--ssh-hosts \(DROVER_SSH_HOSTS\): ssh hosts file .*hosts\.yaml: hosts\[0\]\.hostKey: the host key's SHA256 fingerprint/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
