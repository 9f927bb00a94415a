/**
 * The ec2 provider against a fake EC2 endpoint (test/fakes/ec2.ts): the provider conformance
 * suite, ClientToken idempotency across a "crash", pagination, and how EC2's errors come out.
 * The real AWS SDK makes every call (signed with fake static credentials, pointed at the fake):
 * what is proven is the requests Drover makes and how it reads the answers, not that AWS
 * accepts them — test/provider-ec2-live.test.ts is for that.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ec2Error, Ec2Provider, type CreateInstanceRequest, type Ec2ProviderOptions } from '../src/adapters/providers/index.js';
import type { Ec2ProviderSettings } from '../src/core/index.js';
import { FakeEc2 } from './fakes/ec2.js';
import { providerConformance } from './provider-conformance.js';

// The SDK's default chain finds these (never real ones: the endpoint is the fake's).
Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKE0001', AWS_SECRET_ACCESS_KEY: 'fake-secret', AWS_EC2_METADATA_DISABLED: 'true' });
delete process.env.AWS_PROFILE;
delete process.env.AWS_SESSION_TOKEN;

const settings: Ec2ProviderSettings = {
  kind: 'ec2', region: 'eu-west-1', image: 'ami-0abcdef1234567890', instanceType: 't3.small', subnet: 'subnet-0abc1234', securityGroups: ['sg-0abc1234', 'sg-0def5678'],
  keyName: 'ops', iamProfile: 'drover-node', tags: { team: 'web' },
};
const USER_DATA = '#cloud-config\n{}\n';
const req = (instanceId: string, s: Ec2ProviderSettings = settings): CreateInstanceRequest => ({
  instanceId, epoch: 1, key: '', controllerUrl: 'http://127.0.0.1:9', app: 'shop', role: 'api', settings: s, userData: USER_DATA,
});

/** The conformance suite asks without settings or user data (it is every provider's): the role's are added here. */
class WithSettings extends Ec2Provider {
  override request(r: CreateInstanceRequest) {
    return super.request({ ...r, settings, userData: USER_DATA });
  }
}

let shared: FakeEc2 | undefined;
const ready = new FakeEc2({ bootMs: 150, terminateMs: 80 }).start().then((f) => (shared = f));
test.after(async () => shared?.stop());

test('the fake EC2 is up', async () => {
  await ready;
});

providerConformance('ec2', {
  make: () => new WithSettings({ controllerId: 'ctl-conformance', endpoint: shared!.url, regions: ['eu-west-1'] }),
  addressOk: (ip) => /^10\.0\.\d+\.\d+$/.test(ip),
  reportsExit: () => false,
  remote: { exists: (id) => shared!.machinesOf(id).some((m) => m.state === 'pending' || m.state === 'running') },
});

async function fake(t: { after: (fn: () => Promise<void>) => void }, o: Partial<Ec2ProviderOptions> = {}) {
  const f = await new FakeEc2({ bootMs: 100, terminateMs: 50 }).start();
  const made: Ec2Provider[] = [];
  t.after(async () => {
    for (const p of made) await p.close();
    await f.stop();
  });
  const make = () => {
    const p = new Ec2Provider({ controllerId: 'ctl-test', endpoint: f.url, regions: ['eu-west-1'], ...o });
    made.push(p);
    return p;
  };
  return { f, make };
}

test('ec2: RunInstances carries the settings, one machine, IMDSv2, shutdown = terminate, Drover\'s tags and the role\'s, the user data; the client token is the instance id', async (t) => {
  const { f, make } = await fake(t);
  const m = await make().request(req('i-0a0b0c01'));
  assert.equal(m.state, 'pending');
  const [op] = f.ops('RunInstances');
  assert.ok(op);
  const p = op.params;
  assert.equal(p.ClientToken, 'i-0a0b0c01');
  assert.deepEqual([p.MinCount, p.MaxCount, p.ImageId, p.InstanceType, p.SubnetId, p['SecurityGroupId.1'], p['SecurityGroupId.2'], p.KeyName, p['IamInstanceProfile.Name']],
    ['1', '1', 'ami-0abcdef1234567890', 't3.small', 'subnet-0abc1234', 'sg-0abc1234', 'sg-0def5678', 'ops', 'drover-node']);
  assert.equal(p['MetadataOptions.HttpTokens'], 'required');
  assert.equal(p.InstanceInitiatedShutdownBehavior, 'terminate');
  assert.equal(Buffer.from(p.UserData!, 'base64').toString('utf8'), USER_DATA);
  const machine = f.machinesOf('i-0a0b0c01')[0]!;
  assert.deepEqual(machine.tags, { team: 'web', 'drover:app': 'shop', 'drover:role': 'api', 'drover:instance': 'i-0a0b0c01', 'drover:controller': 'ctl-test', Name: 'drover-shop-api-i-0a0b0c01' });
  assert.deepEqual(m.providerRef, { region: 'eu-west-1', ec2Id: machine.ec2Id, instanceType: 't3.small', launchedAt: machine.launchedAt.getTime() });
  // An ARN is passed as one.
  await make().request(req('i-0a0b0c02', { ...settings, iamProfile: 'arn:aws:iam::123456789012:instance-profile/drover' }));
  assert.equal(f.ops('RunInstances')[1]?.params['IamInstanceProfile.Arn'], 'arn:aws:iam::123456789012:instance-profile/drover');
});

test('ec2: a request repeated after a crash (a new provider, nothing in memory) gets the machine already made: one RunInstances effect; other parameters are refused', async (t) => {
  const { f, make } = await fake(t);
  const first = await make().request(req('i-cafe0001'));
  // The controller stopped here, before recording the reference; the next one asks again, with the same key.
  const again = await make().request(req('i-cafe0001'));
  assert.equal(again.providerRef?.ec2Id, first.providerRef?.ec2Id);
  assert.deepEqual(f.ops('RunInstances').map((o) => o.effect), ['created', 'replayed']);
  assert.equal(f.machinesOf('i-cafe0001').length, 1, 'one machine');
  // By its id alone (no reference), describe finds it: what adopts it after the crash.
  const [seen] = await make().describe([{ id: 'i-cafe0001', providerRef: null }]);
  assert.equal(seen?.providerRef?.ec2Id, first.providerRef?.ec2Id);
  await assert.rejects(make().request(req('i-cafe0001', { ...settings, instanceType: 't3.large' })), (e: unknown) => e instanceof Ec2Error && e.code === 'IdempotentParameterMismatch');
  assert.equal(f.machinesOf('i-cafe0001').length, 1, 'still one machine');
});

test('ec2: throttling is retried by the SDK; capacity, limits, auth and bad settings are refused with EC2\'s code and what to do', async (t) => {
  const { f, make } = await fake(t);
  const p = make();
  f.inject('RunInstances', 'RequestLimitExceeded', 2);
  const m = await p.request(req('i-70770001'));
  assert.equal(m.state, 'pending');
  assert.deepEqual(f.ops('RunInstances').map((o) => o.result), ['RequestLimitExceeded', 'RequestLimitExceeded', 'ok'], 'two throttled attempts, then made');
  f.inject('RunInstances', 'RequestLimitExceeded', 10);
  await assert.rejects(p.request(req('i-70770002')), (e: unknown) => e instanceof Ec2Error && e.code === 'RequestLimitExceeded' && e.retryable && /throttled/.test(e.message));
  assert.equal(f.ops('RunInstances').length, 3 + 4, 'four attempts at most (maxAttempts), not a loop');
  f.clearInjected(); // what is left of them is not for the next calls
  const cases: [string, boolean, RegExp][] = [
    ['InsufficientInstanceCapacity', true, /no capacity of this type/],
    ['InstanceLimitExceeded', false, /Service Quotas/],
    ['UnauthorizedOperation', false, /IAM policy/],
    ['AuthFailure', false, /credentials/],
    ['InvalidAMIID.NotFound', false, /RunInstances in eu-west-1 \(t3\.small, ami-0abcdef1234567890\): InvalidAMIID\.NotFound/],
    ['InvalidSubnetID.NotFound', false, /InvalidSubnetID\.NotFound/],
  ];
  const fresh = make();
  for (const [code, retryable, says] of cases) {
    f.inject('RunInstances', code, 1);
    await assert.rejects(fresh.request(req(`i-e${code.length.toString(16).padStart(7, '0')}`)), (e: unknown) => {
      assert.ok(e instanceof Ec2Error, String(e));
      assert.equal(e.code, code);
      assert.equal(e.retryable, retryable, code);
      assert.match(e.message, says);
      return true;
    });
  }
});

test('ec2: list pages through every machine of this controller and no other; destroy of an unknown or gone machine is fine', async (t) => {
  const { f, make } = await fake(t);
  const mine = make();
  const other = new Ec2Provider({ controllerId: 'ctl-other', endpoint: f.url, regions: ['eu-west-1'] });
  t.after(() => other.close());
  const ids = [0, 1, 2, 3, 4].map((n) => `i-list000${n}`);
  for (const id of ids) await mine.request(req(id));
  await other.request(req('i-0the0001'));
  const listed = await mine.list();
  assert.deepEqual(listed.map((m) => m.id).sort(), ids, 'five of its own over three pages of two');
  assert.ok(f.ops('DescribeInstances').some((o) => o.params.NextToken), 'paged');
  await mine.destroy({ id: 'i-nope0001', providerRef: { region: 'eu-west-1', ec2Id: 'i-0000000000000000' } });
  await mine.destroy({ id: 'i-nope0002', providerRef: null });
  assert.deepEqual((await other.list()).map((m) => m.id), ['i-0the0001'], 'the other controller\'s machine untouched');
});

test('ec2: a machine EC2 stops or terminates by itself is gone, with EC2\'s reason', async (t) => {
  const { f, make } = await fake(t);
  const p = make();
  const m = await p.request(req('i-9e0e0001'));
  const fm = f.machinesOf('i-9e0e0001')[0]!;
  fm.state = 'terminated';
  fm.reason = { code: 'Server.SpotInstanceTermination', message: 'Server.SpotInstanceTermination: Spot instance termination' };
  const [seen] = await p.describe([{ id: m.id, providerRef: m.providerRef }]);
  assert.equal(seen?.state, 'gone');
  assert.match(seen?.message ?? '', /EC2 says terminated: Server\.SpotInstanceTermination/);
});
