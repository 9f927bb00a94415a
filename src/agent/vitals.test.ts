import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { killGroup, parseStat } from './procfs.js';
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
  assert.ok(v.role.cpu > 0.5, `two busy loops use more than half a core (got ${v.role.cpu})`);

  const cached = new VitalsSampler();
  const a = cached.sample(pgid);
  assert.equal(cached.sample(pgid), a, 'samples closer than minIntervalMs are reused');
  assert.equal(new VitalsSampler().sample().role, undefined);
});
