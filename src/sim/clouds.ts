/**
 * How long a new instance takes on each kind of provider, from "create" to its agent saying
 * hello: the boot-time distributions `drover simulate --provider KIND` uses (and the app file's
 * `provider: kind:` when no flag says otherwise), so a comparison can say what warm spares buy
 * on that cloud.
 *
 * Each is a lognormal (boot times have a long right tail: a slow host, an image not cached, a
 * busy control plane) fitted to a median and a 90th percentile. Where a number comes from a
 * published measurement it says which; the rest is an estimate, and says why. The measurements
 * are of "SSH answers"; Drover needs more than that — cloud-init installing Node 20 and the
 * agent, and the agent joining — which is added as an estimate. With an image that has Node and
 * the agent baked in (docs/cloud.md), pass `--boot` with your own figures: about 20–30 s less.
 */
import { SimInputError, type BootDistribution } from './units.js';

export const SIM_PROVIDERS = ['local', 'ec2', 'openstack'] as const;
export type SimProvider = (typeof SIM_PROVIDERS)[number];

export interface CloudBoot {
  readonly provider: SimProvider;
  readonly boot: BootDistribution & { readonly kind: 'lognormal' };
  /** From "create" to the agent's hello. */
  readonly medianMs: number;
  readonly p90Ms: number;
  /** Where the numbers come from, in a sentence or two (also in docs/simulator.md). */
  readonly source: string;
}

/** z of the 90th and 99th percentiles of a standard normal. */
const Z90 = 1.2816;
const Z99 = 2.3263;

/** The lognormal with this median whose 90th percentile is `p90Ms`. */
export function lognormalFrom(medianMs: number, p90Ms: number): BootDistribution & { readonly kind: 'lognormal' } {
  if (!(medianMs > 0) || !(p90Ms >= medianMs)) throw new SimInputError('boot', `expected 0 < median (${medianMs} ms) <= p90 (${p90Ms} ms)`);
  return { kind: 'lognormal', medianMs, sigma: Math.round((Math.log(p90Ms / medianMs) / Z90) * 1000) / 1000 };
}

/** A quantile (0.5, 0.9, 0.99) of a boot distribution, in ms. */
export function bootQuantileMs(b: BootDistribution, q: 0.5 | 0.9 | 0.99): number {
  if (b.kind === 'fixed') return b.ms;
  if (b.kind === 'uniform') return Math.round(b.minMs + (b.maxMs - b.minMs) * q);
  const z = q === 0.5 ? 0 : q === 0.9 ? Z90 : Z99;
  return Math.round(b.medianMs * Math.exp(b.sigma * z));
}

const cloud = (provider: SimProvider, medianMs: number, p90Ms: number, source: string): CloudBoot => ({ provider, boot: lognormalFrom(medianMs, p90Ms), medianMs, p90Ms, source });

export const CLOUD_BOOTS: Readonly<Record<SimProvider, CloudBoot>> = {
  local: cloud(
    'local',
    800,
    1200,
    'Measured here: an agent process on this machine says hello 0.7–0.9 s after it is asked for (bench/README.md, ' +
      '"fifty": 0.84 s per instance; docs/fleet.md: 0.7–0.9 s on an ssh host); the 90th percentile is an estimate for a loaded machine.',
  ),
  ec2: cloud(
    'ec2',
    50_000,
    80_000,
    'Until SSH answers, published measurements on current instance types put the median at 25–30 s: ' +
      'C. Percival, "EC2 boot time benchmarking" (daemonology.net, 2021; its example run on c5.xlarge: RunInstances 1.5 s, ' +
      'pending→running 4.9 s, running→SSH 22.8 s), and the public repository brevdev/ec2-coldboot-research (25.8 s mean to SSH; ' +
      'pending→running 16.4–16.6 s on every instance family tried). ' +
      'Tails: "one to two minutes" to first availability across distributions (ADMIN magazine 65, 2021), and reports of bimodal ' +
      'launches of tens of seconds vs about 80 s (EBS volume hydration). Added, an estimate: cloud-init installing Node 20 and the ' +
      'agent and the agent joining, 20–25 s. Median 50 s, p90 80 s (p99 about 2 min).',
  ),
  openstack: cloud(
    'openstack',
    55_000,
    120_000,
    'An estimate: private clouds vary too widely for one published figure. Nova makes a server ACTIVE in about 7 s when the ' +
      "image is cached on the compute node (IBM Blue Box's Nova boot-speed notes, 2017: a 618 MB image, 7 s from claim to build " +
      'complete); the first server from an image on a host waits for the copy from Glance (tens of seconds to minutes for a few GB), ' +
      'and parallel boots contend (P. Feiner, "Scaling the Boot Barrier", OpenStack Summit 2013: one boot in seconds, the last of ' +
      '20 in parallel after minutes). Guest boot to SSH taken as on EC2 (~20 s), plus cloud-init installing Node and the agent ' +
      '(20–25 s). Median 55 s, p90 120 s (p99 about 3.8 min): measure yours and pass --boot.',
  ),
};

/** The provider named by `--provider` (or an app file), or a {@link SimInputError} naming the option. */
export function cloudBoot(kind: string, option = '--provider'): CloudBoot {
  if (!(SIM_PROVIDERS as readonly string[]).includes(kind)) throw new SimInputError(option, `expected one of ${SIM_PROVIDERS.join(', ')}, got ${JSON.stringify(kind)}`);
  return CLOUD_BOOTS[kind as SimProvider];
}
