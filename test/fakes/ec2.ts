/**
 * A fake EC2 endpoint: a test fixture, not a product feature. It speaks the subset of the EC2
 * Query API Drover uses (RunInstances, DescribeInstances, TerminateInstances; form-encoded POST,
 * XML answers the AWS SDK parses) on a free loopback port, and is strict where EC2 is: it refuses
 * a request without a SigV4 `Authorization` header, an unknown action or parameter, a missing
 * required parameter, a RunInstances without a ClientToken or without Drover's tags; a
 * ClientToken repeated with the same parameters answers the machine already made (and makes
 * none), with other parameters `IdempotentParameterMismatch`, as EC2 does.
 *
 * What it cannot prove: that EC2 itself accepts these calls (IAM, real AMIs, subnets, quotas),
 * that the signature is right (it checks it is there, not what it says), or how long real
 * machines take — the live suite (test/provider-ec2-live.test.ts) is for that.
 *
 * Errors can be injected (throttling N times, no capacity, a limit), a machine can be made to
 * never leave `pending`, and every call is kept in an operation log tests assert on. A boot hook
 * turns a machine into something real when it "boots" (test/fakes/boot.ts: a node started from
 * the user data, as cloud-init would).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export interface FakeMachine {
  readonly ec2Id: string;
  readonly clientToken: string;
  readonly params: Readonly<Record<string, string>>;
  readonly tags: Readonly<Record<string, string>>;
  readonly privateIp: string;
  readonly instanceType: string;
  readonly imageId: string;
  readonly userData: string;
  readonly launchedAt: Date;
  state: 'pending' | 'running' | 'shutting-down' | 'terminated';
  reason?: { code: string; message: string };
  /** Stays pending (a machine that never boots). */
  stuck: boolean;
}

export interface Operation {
  readonly at: number;
  readonly action: string;
  readonly params: Readonly<Record<string, string>>;
  /** `ok`, or the error code answered. */
  readonly result: string;
  /** RunInstances: `created` (a machine made) or `replayed` (its ClientToken was seen: none made). */
  readonly effect?: 'created' | 'replayed';
}

export interface BootHook {
  /** The machine booted (went running): do what its user data says. */
  boot(m: FakeMachine): void | Promise<void>;
  /** The machine is terminated: whatever the boot started ends. */
  terminate(m: FakeMachine): void | Promise<void>;
}

export interface FakeEc2Options {
  /** How long a machine stays pending before it runs. @default 300 */
  readonly bootMs?: number;
  /** How long shutting-down lasts before terminated. @default 200 */
  readonly terminateMs?: number;
  readonly boot?: BootHook;
}

interface Injected {
  readonly action: string;
  readonly code: string;
  readonly message: string;
  readonly status: number;
  times: number;
}

const ACTIONS: Record<string, { required: RegExp[]; allowed: RegExp[] }> = {
  RunInstances: {
    required: [/^ImageId$/, /^InstanceType$/, /^MinCount$/, /^MaxCount$/, /^ClientToken$/, /^UserData$/, /^SubnetId$/, /^SecurityGroupId\.1$/, /^TagSpecification\.1\.ResourceType$/],
    allowed: [
      /^ImageId$/, /^InstanceType$/, /^MinCount$/, /^MaxCount$/, /^ClientToken$/, /^UserData$/, /^SubnetId$/, /^SecurityGroupId\.\d+$/, /^KeyName$/,
      /^IamInstanceProfile\.(Name|Arn)$/, /^MetadataOptions\.(HttpTokens|HttpEndpoint)$/, /^InstanceInitiatedShutdownBehavior$/,
      /^TagSpecification\.1\.ResourceType$/, /^TagSpecification\.1\.Tag\.\d+\.(Key|Value)$/,
    ],
  },
  DescribeInstances: { required: [], allowed: [/^Filter\.\d+\.Name$/, /^Filter\.\d+\.Value\.\d+$/, /^InstanceId\.\d+$/, /^MaxResults$/, /^NextToken$/] },
  TerminateInstances: { required: [/^InstanceId\.1$/], allowed: [/^InstanceId\.\d+$/] },
};

const DROVER_TAGS = ['drover:app', 'drover:role', 'drover:instance', 'drover:controller'];
const PAGE = 2; // small pages, so paging is exercised

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const STATE_CODES = { pending: 0, running: 16, 'shutting-down': 32, terminated: 48 } as const;

export class FakeEc2 {
  readonly machines = new Map<string, FakeMachine>();
  readonly log: Operation[] = [];
  private readonly injected: Injected[] = [];
  private server?: Server;
  private ipSeq = 10;
  private neverBoot = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  url = '';

  constructor(private readonly o: FakeEc2Options = {}) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    for (const m of this.machines.values()) if (m.state !== 'terminated') await this.o.boot?.terminate(m);
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** The next `times` calls of `action` fail with `code` (RequestLimitExceeded: 503, as EC2 throttles). */
  inject(action: string, code: string, times = 1, message = `injected ${code}`): void {
    this.injected.push({ action, code, message, status: code === 'RequestLimitExceeded' ? 503 : 400, times });
  }

  /** Forgets the errors still to be injected. */
  clearInjected(): void {
    this.injected.length = 0;
  }

  /** Machines made from now on never leave pending. */
  set stuckPending(v: boolean) {
    this.neverBoot = v;
  }

  /** Machines (not terminated) tagged with this Drover instance id. */
  machinesOf(instanceId: string): FakeMachine[] {
    return [...this.machines.values()].filter((m) => m.tags['drover:instance'] === instanceId && m.state !== 'terminated');
  }

  ops(action: string): Operation[] {
    return this.log.filter((o) => o.action === action);
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
    const action = params.Action ?? '';
    const { Action: _a, Version: version, ...rest } = params;
    const fail = (status: number, code: string, message: string) => {
      this.log.push({ at: Date.now(), action, params: rest, result: code });
      res.writeHead(status, { 'content-type': 'text/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${xml(code)}</Code><Message>${xml(message)}</Message></Error></Errors><RequestID>${randomBytes(8).toString('hex')}</RequestID></Response>`);
    };
    if (req.method !== 'POST' || !/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] ?? '')) return fail(400, 'InvalidRequest', 'expected a form-encoded POST');
    const auth = req.headers.authorization ?? '';
    if (!/^AWS4-HMAC-SHA256 Credential=[A-Z0-9]+\/\d{8}\/[a-z0-9-]+\/ec2\/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$/.test(auth)) {
      return fail(401, 'AuthFailure', 'AWS was not able to validate the provided access credentials (no SigV4 Authorization header)');
    }
    if (!req.headers['x-amz-date']) return fail(400, 'MissingParameter', 'X-Amz-Date');
    const spec = ACTIONS[action];
    if (!spec) return fail(400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
    if (version !== '2016-11-15') return fail(400, 'InvalidParameterValue', `Version ${version}`);
    for (const r of spec.required) if (!Object.keys(rest).some((k) => r.test(k))) return fail(400, 'MissingParameter', `The request must contain the parameter ${r.source.replace(/[\\^$]/g, '')}`);
    for (const k of Object.keys(rest)) if (!spec.allowed.some((r) => r.test(k))) return fail(400, 'UnknownParameter', `The parameter ${k} is not recognized`);
    const inj = this.injected.find((i) => i.action === action && i.times > 0);
    if (inj) {
      inj.times -= 1;
      return fail(inj.status, inj.code, inj.message);
    }
    let body: string;
    let effect: Operation['effect'];
    try {
      if (action === 'RunInstances') ({ body, effect } = this.run(rest));
      else if (action === 'DescribeInstances') body = this.describe(rest);
      else body = this.terminate(rest);
    } catch (err) {
      const e = err as { code?: string; message: string };
      return fail(400, e.code ?? 'InvalidParameterValue', e.message);
    }
    this.log.push({ at: Date.now(), action, params: rest, result: 'ok', ...(effect ? { effect } : {}) });
    res.writeHead(200, { 'content-type': 'text/xml' });
    res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>${randomBytes(8).toString('hex')}</requestId>${body}</${action}Response>`);
  }

  private run(p: Record<string, string>): { body: string; effect: 'created' | 'replayed' } {
    const bad = (code: string, message: string) => Object.assign(new Error(message), { code });
    if (p.MinCount !== '1' || p.MaxCount !== '1') throw bad('InvalidParameterValue', 'Drover asks for one machine at a time');
    const token = p.ClientToken!;
    if (!/^[\x21-\x7e]{1,64}$/.test(token)) throw bad('InvalidParameterValue', 'ClientToken: 1 to 64 ASCII characters');
    if (!/^ami-[0-9a-f]{8,17}$/.test(p.ImageId!)) throw bad('InvalidAMIID.Malformed', `Invalid id: "${p.ImageId}"`);
    if (!/^subnet-[0-9a-f]{8,17}$/.test(p.SubnetId!)) throw bad('InvalidSubnetID.Malformed', `Invalid id: "${p.SubnetId}"`);
    if (p['TagSpecification.1.ResourceType'] !== 'instance') throw bad('InvalidParameterValue', 'TagSpecification.1.ResourceType must be instance');
    const tags: Record<string, string> = {};
    for (let n = 1; p[`TagSpecification.1.Tag.${n}.Key`] !== undefined; n++) tags[p[`TagSpecification.1.Tag.${n}.Key`]!] = p[`TagSpecification.1.Tag.${n}.Value`] ?? '';
    for (const t of DROVER_TAGS) if (tags[t] === undefined) throw bad('MissingParameter', `tag ${t} (the fake requires Drover's tags)`);
    const userData = Buffer.from(p.UserData!, 'base64').toString('utf8');
    if (!userData.startsWith('#cloud-config\n')) throw bad('InvalidParameterValue', 'UserData: not base64 of #cloud-config');
    const { ClientToken: _c, ...compared } = p;
    const seen = [...this.machines.values()].find((m) => m.clientToken === token);
    if (seen) {
      if (JSON.stringify(seen.params) !== JSON.stringify(compared)) throw bad('IdempotentParameterMismatch', `Client token ${token} was used with other parameters`);
      return { body: `<reservationId>r-${seen.ec2Id.slice(2)}</reservationId><ownerId>123456789012</ownerId><instancesSet>${this.item(seen)}</instancesSet>`, effect: 'replayed' };
    }
    const ec2Id = `i-${randomBytes(8).toString('hex').slice(0, 17)}`;
    const m: FakeMachine = {
      ec2Id, clientToken: token, params: compared, tags, privateIp: `10.0.${Math.floor(this.ipSeq / 250)}.${(this.ipSeq++ % 250) + 2}`,
      instanceType: p.InstanceType!, imageId: p.ImageId!, userData, launchedAt: new Date(), state: 'pending', stuck: this.neverBoot,
    };
    this.machines.set(ec2Id, m);
    if (!m.stuck) {
      this.later(this.o.bootMs ?? 300, () => {
        if (m.state !== 'pending') return;
        m.state = 'running';
        void Promise.resolve(this.o.boot?.boot(m)).catch(() => undefined);
      });
    }
    return { body: `<reservationId>r-${ec2Id.slice(2)}</reservationId><ownerId>123456789012</ownerId><instancesSet>${this.item(m)}</instancesSet>`, effect: 'created' };
  }

  private describe(p: Record<string, string>): string {
    let list = [...this.machines.values()];
    const ids = Object.entries(p).filter(([k]) => /^InstanceId\.\d+$/.test(k)).map(([, v]) => v);
    if (ids.length) {
      const unknown = ids.find((id) => !this.machines.has(id));
      if (unknown) throw Object.assign(new Error(`The instance ID '${unknown}' does not exist`), { code: 'InvalidInstanceID.NotFound' });
      list = list.filter((m) => ids.includes(m.ec2Id));
    }
    for (let n = 1; p[`Filter.${n}.Name`] !== undefined; n++) {
      const name = p[`Filter.${n}.Name`]!;
      const values: string[] = [];
      for (let v = 1; p[`Filter.${n}.Value.${v}`] !== undefined; v++) values.push(p[`Filter.${n}.Value.${v}`]!);
      const of = (m: FakeMachine): string | undefined =>
        name === 'instance-id' ? m.ec2Id : name === 'instance-state-name' ? m.state : name.startsWith('tag:') ? m.tags[name.slice(4)] : (() => {
          throw Object.assign(new Error(`The filter '${name}' is invalid`), { code: 'InvalidParameterValue' });
        })();
      list = list.filter((m) => values.includes(of(m) ?? '\u0000'));
    }
    const start = p.NextToken ? Number(p.NextToken) : 0;
    const page = list.slice(start, start + PAGE);
    const next = start + PAGE < list.length ? `<nextToken>${start + PAGE}</nextToken>` : '';
    return `<reservationSet>${page.map((m) => `<item><reservationId>r-${m.ec2Id.slice(2)}</reservationId><ownerId>123456789012</ownerId><instancesSet>${this.item(m)}</instancesSet></item>`).join('')}</reservationSet>${next}`;
  }

  private terminate(p: Record<string, string>): string {
    const ids = Object.entries(p).filter(([k]) => /^InstanceId\.\d+$/.test(k)).map(([, v]) => v);
    const unknown = ids.find((id) => !this.machines.has(id));
    if (unknown) throw Object.assign(new Error(`The instance ID '${unknown}' does not exist`), { code: 'InvalidInstanceID.NotFound' });
    const items = ids.map((id) => {
      const m = this.machines.get(id)!;
      const prev = m.state;
      if (m.state === 'pending' || m.state === 'running') {
        m.state = 'shutting-down';
        m.reason = { code: 'Client.UserInitiatedShutdown', message: 'Client.UserInitiatedShutdown: User initiated shutdown' };
        void Promise.resolve(this.o.boot?.terminate(m)).catch(() => undefined);
        this.later(this.o.terminateMs ?? 200, () => (m.state = 'terminated'));
      }
      return `<item><instanceId>${m.ec2Id}</instanceId><currentState><code>${STATE_CODES[m.state]}</code><name>${m.state}</name></currentState><previousState><code>${STATE_CODES[prev]}</code><name>${prev}</name></previousState></item>`;
    });
    return `<instancesSet>${items.join('')}</instancesSet>`;
  }

  private item(m: FakeMachine): string {
    const tags = Object.entries(m.tags).map(([k, v]) => `<item><key>${xml(k)}</key><value>${xml(v)}</value></item>`).join('');
    const reason = m.reason ? `<stateReason><code>${xml(m.reason.code)}</code><message>${xml(m.reason.message)}</message></stateReason>` : '';
    return `<item><instanceId>${m.ec2Id}</instanceId><imageId>${m.imageId}</imageId><instanceState><code>${STATE_CODES[m.state]}</code><name>${m.state}</name></instanceState>` +
      `<privateIpAddress>${m.privateIp}</privateIpAddress><instanceType>${xml(m.instanceType)}</instanceType><launchTime>${m.launchedAt.toISOString()}</launchTime>` +
      `<clientToken>${xml(m.clientToken)}</clientToken><tagSet>${tags}</tagSet>${reason}</item>`;
  }
}
