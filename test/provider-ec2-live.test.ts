/**
 * The ec2 provider against real AWS: a credentialed suite, run only when asked for. It costs a
 * few cents (t3.micro or the type given, for a minute or two) and needs, in the environment:
 *
 *   DROVER_TEST_EC2_REGION      e.g. eu-west-1
 *   DROVER_TEST_EC2_IMAGE       an AMI in that region (Debian 12 is fine: nothing is booted here)
 *   DROVER_TEST_EC2_SUBNET      subnet-…
 *   DROVER_TEST_EC2_SG          sg-… (comma-separated for several)
 *   DROVER_TEST_EC2_TYPE        optional, default t3.micro
 *   and AWS credentials the SDK's chain finds (AWS_PROFILE, AWS_ACCESS_KEY_ID…) allowed
 *   ec2:RunInstances, DescribeInstances, TerminateInstances and CreateTags.
 *
 * Without DROVER_TEST_EC2_REGION it is skipped, saying so — also under CI=true: it needs an
 * account, which CI does not have (README, "Testing without a cloud"). It runs the provider
 * conformance suite (machines made, observed, listed, destroyed; the id as idempotency key),
 * so every machine it makes is terminated, also when it fails.
 */
import { Ec2Provider, type CreateInstanceRequest } from '../src/adapters/providers/index.js';
import type { Ec2ProviderSettings } from '../src/core/index.js';
import { providerConformance } from './provider-conformance.js';

const env = process.env;
const region = env.DROVER_TEST_EC2_REGION?.trim();
const missing = region ? ['DROVER_TEST_EC2_IMAGE', 'DROVER_TEST_EC2_SUBNET', 'DROVER_TEST_EC2_SG'].filter((k) => !env[k]?.trim()) : [];
const skip = !region
  ? 'a credentialed suite: set DROVER_TEST_EC2_REGION (and _IMAGE, _SUBNET, _SG, AWS credentials) to run it against real EC2'
  : missing.length > 0 ? `DROVER_TEST_EC2_REGION is set but ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not` : undefined;

const settings = (): Ec2ProviderSettings => ({
  kind: 'ec2', region: region ?? 'eu-west-1', image: env.DROVER_TEST_EC2_IMAGE ?? '', instanceType: env.DROVER_TEST_EC2_TYPE?.trim() || 't3.micro',
  subnet: env.DROVER_TEST_EC2_SUBNET ?? '', securityGroups: (env.DROVER_TEST_EC2_SG ?? '').split(',').map((s) => s.trim()).filter(Boolean), tags: { purpose: 'drover-live-test' },
});

/** Nothing boots on these machines: the user data only says so (the suite checks the provider, not the image). */
class Live extends Ec2Provider {
  override request(r: CreateInstanceRequest) {
    return super.request({ ...r, settings: settings(), userData: '#cloud-config\n{}\n' });
  }
}

providerConformance('ec2 (live)', {
  make: () => new Live({ controllerId: `drover-live-test-${process.pid}`, regions: [region ?? 'eu-west-1'], provisionTimeoutMs: 600_000 }),
  addressOk: (ip) => /^(10|172|192)\./.test(ip),
  reportsExit: () => false,
  remote: { exists: async (id) => (await new Live({ controllerId: `drover-live-test-${process.pid}`, regions: [region ?? 'eu-west-1'] }).list()).some((m) => m.id === id) },
  ...(skip ? { skip } : {}),
});
