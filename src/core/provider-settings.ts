/**
 * The `provider:` block of the app file (at the top for every role, or on one role): which kind
 * of machine a role's instances run on, and that cloud's settings. Credentials are never here:
 * they come from the controller's environment (the AWS SDK's chain, OpenStack's OS_* variables).
 *
 * The schemas only check form (lengths, patterns, bounds); whether an image or a subnet exists is
 * the cloud's to say, when the machine is asked for.
 */
import { z } from 'zod';
import { err } from './schema-words.js';

const MAX_TAGS = 40;
const text = (what: string, max = 255) =>
  z.string(err(`expected ${what}`)).min(1, { error: `expected ${what}` }).max(max, { error: `at most ${max} characters` });
const pattern = (what: string, re: RegExp, example: string) =>
  z.string(err(`expected ${what} such as "${example}"`)).regex(re, { error: `expected ${what} such as "${example}"` });

/** Tag keys Drover writes itself (app, role, instance id): a user may not set them. */
export const RESERVED_TAG_PREFIX = 'drover:';

const tags = z
  .record(z.string(), z.string(err('expected a tag value')).max(255, { error: 'tag values are at most 255 characters' }), err('expected a mapping of tag names to values'))
  .superRefine((t, ctx) => {
    const keys = Object.keys(t);
    if (keys.length > MAX_TAGS) ctx.addIssue({ code: 'custom', input: t, message: `at most ${MAX_TAGS} tags` });
    for (const k of keys) {
      const problem =
        k.length < 1 || k.length > 127 ? 'tag keys are 1 to 127 characters'
        : k.toLowerCase().startsWith('aws:') ? 'tag keys starting with "aws:" are reserved by AWS'
        : k.toLowerCase().startsWith(RESERVED_TAG_PREFIX) ? `tag keys starting with "${RESERVED_TAG_PREFIX}" are Drover's own`
        : undefined;
      if (problem) ctx.addIssue({ code: 'custom', input: k, path: [k], message: problem });
    }
  });

export const localProviderSchema = z.strictObject({ kind: z.literal('local') }, err('expected a mapping'));

export const ec2ProviderSchema = z
  .strictObject(
    {
      kind: z.literal('ec2'),
      region: pattern('an AWS region', /^[a-z]{2}(-[a-z0-9]+){1,3}-\d{1,2}$/, 'eu-west-1').meta({ description: 'AWS region of the instances.' }),
      image: pattern('an AMI id', /^ami-[0-9a-f]{8,17}$/, 'ami-0abcdef1234567890').meta({ description: 'AMI to boot (Debian 12 or an image with Node 20 and the agent; see docs/cloud.md).' }),
      instanceType: pattern('an instance type', /^[a-z][a-z0-9-]*\.[a-z0-9]+$/, 't3.small').meta({ description: 'Instance type, e.g. t3.small.' }),
      subnet: pattern('a subnet id', /^subnet-[0-9a-f]{8,17}$/, 'subnet-0abc1234').meta({ description: 'Subnet the instances go in; its VPC must reach the controller.' }),
      securityGroups: z
        .array(pattern('a security group id', /^sg-[0-9a-f]{8,17}$/, 'sg-0abc1234'), err('expected a list of security group ids'))
        .min(1, { error: 'at least one security group' })
        .max(5, { error: 'at most 5 security groups' })
        .meta({ description: 'Security group ids; they must let the agent reach the controller and the roles reach each other.' }),
      keyName: text('a key pair name').optional().meta({ description: 'EC2 key pair for ssh access (optional; Drover does not use ssh).' }),
      iamProfile: text('an instance profile name or ARN', 2048).optional().meta({ description: 'IAM instance profile (name or ARN) given to the instances.' }),
      tags: tags.optional().meta({ description: 'Extra tags on every instance (Drover adds drover:app, drover:role, drover:instance).' }),
    },
    err('expected a mapping'),
  )
  .meta({ description: 'Amazon EC2 instances; credentials from the AWS SDK chain on the controller.' });

export const openstackProviderSchema = z
  .strictObject(
    {
      kind: z.literal('openstack'),
      region: text('a region name', 64).optional().meta({ description: 'Region in the Keystone catalog (default: OS_REGION_NAME, or the only one).' }),
      flavor: text('a flavor name or id').meta({ description: 'Nova flavor (name or id).' }),
      image: text('an image name or id').meta({ description: 'Glance image (name or id): Debian 12 or an image with Node 20 and the agent.' }),
      network: text('a network name or id').meta({ description: 'Neutron network the servers attach to; it must reach the controller.' }),
      keyPair: text('a key pair name').optional().meta({ description: 'Nova key pair for ssh access (optional; Drover does not use ssh).' }),
      securityGroups: z
        .array(text('a security group name'), err('expected a list of security group names'))
        .max(10, { error: 'at most 10 security groups' })
        .optional()
        .meta({ description: 'Security group names (default: the project\'s "default").' }),
      availabilityZone: text('an availability zone', 255).optional().meta({ description: 'Nova availability zone.' }),
      metadata: tags.optional().meta({ description: 'Extra server metadata (Drover adds drover:app, drover:role, drover:instance).' }),
    },
    err('expected a mapping'),
  )
  .meta({ description: 'OpenStack servers (Keystone v3, Nova, Neutron); credentials from OS_* variables on the controller.' });

export const providerSettingsSchema = z.discriminatedUnion('kind', [localProviderSchema, ec2ProviderSchema, openstackProviderSchema], {
  error: (iss) => (iss.input === undefined ? 'required' : 'expected kind: local, ec2 or openstack'),
});

export type LocalProviderSettings = z.output<typeof localProviderSchema>;
export type Ec2ProviderSettings = z.output<typeof ec2ProviderSchema>;
export type OpenStackProviderSettings = z.output<typeof openstackProviderSchema>;
export type ProviderSettings = z.output<typeof providerSettingsSchema>;
export type ProviderKind = ProviderSettings['kind'];

/**
 * The settings an instance of `role` is made with (a spare: the role of its pool, `*` or null
 * for the app's pool): the role's block (which already holds the app's when the role has none),
 * else the app's. Undefined: the controller's default provider.
 */
export function providerSettingsOf(
  spec: { readonly provider?: ProviderSettings; readonly roles: Readonly<Record<string, { readonly provider?: ProviderSettings }>> },
  role: string | null,
): ProviderSettings | undefined {
  if (role !== null && role !== '*' && Object.hasOwn(spec.roles, role)) return spec.roles[role]!.provider;
  return spec.provider;
}

/** The provider kind of some settings: `local` (the controller's default chain) when there are none. */
export function providerKindOf(settings: ProviderSettings | undefined): ProviderKind {
  return settings?.kind ?? 'local';
}
