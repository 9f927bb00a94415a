/**
 * The boot hook of the fake clouds (test/fakes/ec2.ts, test/fakes/openstack.ts): when a fake
 * machine "boots", do what its cloud-init user data says, the way cloud-init would — without
 * running any shell from it. The user data is read back as the structure the controller writes
 * (controller/bootstrap.ts `readBootPlan`: it must be Drover's, with its boot script unchanged);
 * the agent bundle is fetched from the controller and checked against the sha256 in the user
 * data; the token file is written 0600; the node is started as `drover-node.service` would,
 * here on this machine at 127.0.0.1 instead of a VM. Terminating the machine kills everything it
 * started (the node, its instance agents, their roles).
 *
 * What this cannot prove: that the boot script itself works on a real image (Node's install,
 * curl, systemd) — the live suite and docs/cloud.md's image recipe are for that.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { x as untar } from 'tar';
import { readBootPlan, type BootPlan } from '../../src/controller/index.js';
import { killAll, processesWithEnv } from '../helpers.js';

export interface BootedMachine {
  readonly id: string;
  readonly plan: BootPlan;
  readonly dir: string;
  readonly node: ChildProcess;
  /** What the node wrote (stdout and stderr). */
  output: string;
}

export interface BootHookOptions {
  /** Where each machine's disk goes: `<dir>/<machine id>/`. */
  readonly dir: string;
  /** Extra environment for the node (DROVER_AGENT_* tunables). */
  readonly env?: Readonly<Record<string, string>>;
}

/** Boots fake machines from their user data; see the file comment. */
export class BootHook {
  readonly booted = new Map<string, BootedMachine>();
  /** Why a boot failed, by machine id (a test asserts there is none). */
  readonly failures = new Map<string, string>();

  constructor(private readonly o: BootHookOptions) {}

  async boot(m: { ec2Id?: string; id?: string; userData: string }): Promise<void> {
    const id = m.ec2Id ?? m.id ?? 'machine';
    try {
      const plan = readBootPlan(m.userData);
      const disk = join(this.o.dir, id);
      mkdirSync(disk, { recursive: true, mode: 0o700 });
      // As the boot script's curl --retry 10 --retry-connrefused: the controller may be restarting.
      let res: Response | undefined;
      for (let attempt = 1; !res; attempt++) {
        try {
          res = await fetch(`${plan.controllerUrl}/v1/agent-bundle/${plan.agentSha256}`);
        } catch (err) {
          if (attempt >= 30) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      if (!res.ok) throw new Error(`the agent bundle: HTTP ${res.status}`);
      const data = Buffer.from(await res.arrayBuffer());
      const sha = createHash('sha256').update(data).digest('hex');
      if (sha !== plan.agentSha256) throw new Error(`the agent bundle's sha256 is ${sha}, the user data says ${plan.agentSha256}`);
      const agentDir = join(disk, `agent-${sha}`);
      mkdirSync(agentDir, { recursive: true });
      writeFileSync(join(disk, 'agent.tgz'), data);
      await untar({ file: join(disk, 'agent.tgz'), cwd: agentDir });
      const tokenFile = join(disk, 'join-token');
      writeFileSync(tokenFile, `${plan.token}\n`, { mode: 0o600 });
      chmodSync(tokenFile, 0o600);
      const node = spawn(
        process.execPath,
        [join(agentDir, 'agent/cloud/node.js'), '--join', plan.controllerUrl, '--token-file', tokenFile, '--data-dir', join(disk, 'data'), '--address', '127.0.0.1'],
        { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: disk, ...this.o.env, DROVER_AGENT_FAKE_MACHINE: disk } },
      );
      const booted: BootedMachine = { id, plan, dir: disk, node, output: '' };
      const keep = (b: Buffer) => {
        booted.output = (booted.output + b.toString('utf8')).slice(-20_000);
      };
      node.stdout?.on('data', keep);
      node.stderr?.on('data', keep);
      this.booted.set(id, booted);
    } catch (err) {
      this.failures.set(id, err instanceof Error ? err.message : String(err));
    }
  }

  terminate(m: { ec2Id?: string; id?: string }): void {
    const id = m.ec2Id ?? m.id ?? 'machine';
    const b = this.booted.get(id);
    if (!b) return;
    killAll(processesWithEnv(b.dir));
    try {
      process.kill(-b.node.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }

  /** Ends every machine and removes their disks. */
  close(): void {
    for (const id of this.booted.keys()) this.terminate({ id });
    rmSync(this.o.dir, { recursive: true, force: true });
  }
}
