import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { countEstablished, killGroup, parseStat, readEstablished } from './procfs.js';
import { VitalsSampler } from './vitals.js';

void test('parseStat copes with spaces and parentheses in the command name', () => {
  const fields = ['S', '1', '4242', '4242', '0', '-1', '4194560', '10', '0', '0', '0', '7', '5'];
  const rest = [...fields, '0', '0', '20', '0', '1', '0', '98765', '1000', '200'].join(' ');
  const st = parseStat(`4243 (we(ird) name) ${rest}`);
  assert.deepEqual(st, { pid: 4243, state: 'S', pgrp: 4242, cpuTicks: 12, startTime: 98765 });
  assert.equal(parseStat('garbage'), undefined);
});

void test('vitals measure the host and a busy role process group', async (t) => {
  // Two processes in one group: the group is the unit, not bash alone.
  const child = spawn('bash', ['-c', 'while :; do :; done & while :; do :; done & wait'], {
    detached: true,
    stdio: 'ignore',
  });
  const pgid = child.pid!;
  t.after(() => killGroup(pgid, 'SIGKILL'));
  const sampler = new VitalsSampler({ minIntervalMs: 0 });
  await sleep(100);
  const first = sampler.sample(pgid);
  assert.equal(first.role?.cpu, 0, 'no rate without a previous sample');
  await sleep(500);
  const v = sampler.sample(pgid);
  assert.ok(v.cpu >= 0 && v.cpu <= 1);
  assert.ok(v.memUsedBytes > 0 && v.memUsedBytes <= v.memTotalBytes);
  assert.equal(v.loadavg.length, 3);
  assert.equal(v.role?.pids, 3);
  assert.ok(v.role.rssBytes > 0);
  // Two spinning processes get what the machine can spare; under a parallel test run on 2 cores
  // that can be well under one core, but never the near-zero of an idle group.
  assert.ok(v.role.cpu > 0.15, `two busy loops are measured as busy (got ${v.role.cpu})`);

  const cached = new VitalsSampler();
  const a = cached.sample(pgid);
  assert.equal(cached.sample(pgid), a, 'samples closer than minIntervalMs are reused');
  assert.equal(new VitalsSampler().sample().role, undefined);
});

// Port 8080 is 1F90; 01 is ESTABLISHED, 0A LISTEN, 06 TIME_WAIT.
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:D432 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
  10: 0A00000A:1F90 0A000001:E3A2 01 00000000:00000000 02:000AFC7A 00000000  1000        0 1004 2 0000000000000000 20 4 1 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:E001 01 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000000000000 20 4 30 10 -1
   2: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:E002 01 00000000:00000000 00:00000000 00000000  1000        0 2003 1 0000000000000000 20 4 30 10 -1
`;

void test('countEstablished counts established connections whose local port is the role port', () => {
  // Not the listener, not the client end of a loopback connection, not TIME_WAIT.
  assert.equal(countEstablished(TCP, 8080), 2);
  assert.equal(countEstablished(TCP6, 8080), 1, 'an IPv4 client of a dual-stack listener shows up in tcp6');
  assert.equal(countEstablished(TCP6, 8081), 1);
  assert.equal(countEstablished(TCP, 54321), 1, 'the client end counts for its own local port');
  assert.equal(countEstablished(TCP, 8080, new Set([0xd431])), 1, "the agent's own probes are left out");
  assert.equal(countEstablished('', 8080), 0);
  assert.equal(countEstablished('garbage\n  sl  local_address rem_address   st\n', 8080), 0);
});

void test('readEstablished adds up tcp and tcp6, and is undefined without either', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'drover-procfs-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  assert.equal(readEstablished(8080, root), undefined);
  mkdirSync(join(root, 'net'));
  writeFileSync(join(root, 'net', 'tcp'), TCP);
  assert.equal(readEstablished(8080, root), 2, 'no tcp6 on a kernel without IPv6');
  writeFileSync(join(root, 'net', 'tcp6'), TCP6);
  assert.equal(readEstablished(8080, root), 3);
});
