// Writes the front's balancer members (members.conf, included by httpd.conf) from $APP_MEMBERS,
// the app members Drover hands the role. With --reload it then reloads Apache gracefully and
// waits until balancer-manager lists exactly those members, so that once `update` has returned
// (and Drover lets a removed member drain) no new request goes to a member that left.
//
//   node members.mjs            write members.conf (the start step, before Apache starts)
//   node members.mjs --reload   write it, `apache2 -k graceful`, wait for the new members
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const workdir = process.env.DROVER_WORKDIR;
if (!workdir) fail('DROVER_WORKDIR is not set (run by drover as the front role)');
const conf = fileURLToPath(new URL('./httpd.conf', import.meta.url));
const WAIT_MS = 15_000;

function fail(message) {
  console.error(`members: ${message}`);
  process.exit(1);
}

/**
 * The members' endpoints, each checked to be exactly http://host:port: the value goes into an
 * Apache config file, where a quote or a newline would be read as configuration.
 */
function endpoints() {
  let members;
  try {
    members = JSON.parse(process.env.APP_MEMBERS ?? '[]');
  } catch {
    fail('APP_MEMBERS is not JSON');
  }
  if (!Array.isArray(members)) fail('APP_MEMBERS is not a list');
  return members.map((m, i) => {
    const text = typeof m?.endpoint === 'string' ? m.endpoint : '';
    const u = URL.canParse(text) ? new URL(text) : undefined;
    if (!u || u.protocol !== 'http:' || !/^[A-Za-z0-9.-]+$/.test(u.hostname) || !u.port || u.username || u.password || u.search || !['', '/'].includes(u.pathname)) {
      fail(`APP_MEMBERS[${i}].endpoint must be http://host:port, not ${JSON.stringify(text.slice(0, 100))}`);
    }
    return `http://${u.hostname}:${u.port}`;
  });
}

const members = endpoints();
const text = [
  '# Written by members.mjs from $APP_MEMBERS: one BalancerMember per app member.',
  '<Proxy "balancer://app">',
  // disablereuse: a new connection per request, so none is ever sent on a connection a leaving
  // member closed; retry=1: a member that refused is tried again after a second.
  ...members.map((m) => `  BalancerMember "${m}" disablereuse=On retry=1`),
  '  ProxySet lbmethod=byrequests',
  '</Proxy>',
  '',
].join('\n');
const file = join(workdir, 'members.conf');
writeFileSync(`${file}.new`, text, { mode: 0o600 });
renameSync(`${file}.new`, file);

if (process.argv.includes('--reload')) await reload();

async function reload() {
  const pidFile = join(workdir, 'httpd.pid');
  // Apache not started yet (or gone): its start reads the file.
  if (!existsSync(pidFile) || !alive(Number(readFileSync(pidFile, 'utf8').trim()))) return;
  try {
    // Checks the configuration first: a bad one is refused and the running Apache keeps its own.
    execFileSync('apache2', ['-f', conf, '-k', 'graceful'], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 10_000 });
  } catch (err) {
    fail(`apache2 -k graceful failed: ${err.message}`);
  }
  const admin = `http://${process.env.DROVER_IP ?? '127.0.0.1'}:${process.env.DROVER_PORT_ADMIN}/balancer-manager`;
  const want = [...members].sort().join(' ');
  const deadline = Date.now() + WAIT_MS;
  let seen = '';
  let inARow = 0;
  // Twice in a row: a poll may land on a process of the old generation that is still finishing.
  while (inARow < 2) {
    if (Date.now() > deadline) fail(`after the reload Apache lists [${seen}], not [${want}] (within ${WAIT_MS / 1000} s)`);
    try {
      const page = await fetchText(admin);
      seen = [...new Set([...page.matchAll(/>(http:\/\/[^<\s]+)<\/a>/g)].map((m) => m[1]))].sort().join(' ');
    } catch {
      seen = '';
    }
    inARow = seen === want ? inARow + 1 : 0;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** GET; the Referer of the page itself, else balancer-manager logs a "cross-site access" error. */
function fetchText(url) {
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout: 2000, headers: { referer: url } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return Number.isSafeInteger(pid) && pid > 0;
  } catch {
    return false;
  }
}
