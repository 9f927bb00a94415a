/**
 * The node of a cloud machine, as its cloud-init starts it from the agent bundle the controller
 * serves (controller/bootstrap.ts, docs/cloud.md):
 *
 *     node <bundle>/agent/cloud/node.js --join URL --token-file FILE --data-dir DIR [--name NAME] [--address IP]
 *
 * It reads the single-use join token from FILE and removes the file at once (the token is no
 * use after the join, and nothing else on the machine needs it), then joins like `drover agent
 * --join` does. The token was made for this machine's instance: the node runs that instance
 * and no other. Built into `dist/ssh-bundle/agent/cloud/node.js`, two folders deep like the
 * ssh provider's far end, so the local provider finds the bundled agent (`agent/main.js`).
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { NodeAgent } from './node.js';

const TOKEN = /^drj\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/;

export interface CloudNodeArgs {
  readonly url: string;
  readonly tokenFile: string;
  readonly dataDir: string;
  readonly name?: string;
  /** The address its instances serve on. @default the machine's first non-loopback address */
  readonly address?: string;
}

/** The command line, checked: a clear message naming the option otherwise. */
export function cloudNodeArgs(argv: readonly string[]): CloudNodeArgs {
  const { values } = parseArgs({
    args: [...argv],
    options: { join: { type: 'string' }, 'token-file': { type: 'string' }, 'data-dir': { type: 'string' }, name: { type: 'string' }, address: { type: 'string' } },
    strict: true,
  });
  if (!values.join) throw new Error('--join URL is required');
  let url: URL;
  try {
    url = new URL(values.join);
  } catch {
    throw new Error(`--join: not a URL: ${JSON.stringify(values.join)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--join: expected http:// or https://, got ${url.protocol}//`);
  if (!values['token-file']) throw new Error('--token-file FILE is required');
  if (!values['data-dir']?.startsWith('/')) throw new Error('--data-dir: an absolute folder is required');
  if (values.address !== undefined && !/^[0-9a-fA-F.:]{2,45}$/.test(values.address)) throw new Error(`--address: not an IP address: ${JSON.stringify(values.address)}`);
  return {
    url: url.origin, tokenFile: values['token-file'], dataDir: values['data-dir'],
    ...(values.name ? { name: values.name } : {}), ...(values.address ? { address: values.address } : {}),
  };
}

/** Reads the token and removes its file whatever it held: a single-use secret is not left behind. */
export function takeToken(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } finally {
    rmSync(file, { force: true });
  }
  if (!TOKEN.test(text)) throw new Error(`${file}: not a join token (drj.<id>.<secret>)`);
  return text;
}

export async function runCloudNode(a: CloudNodeArgs): Promise<number> {
  const token = takeToken(a.tokenFile);
  mkdirSync(a.dataDir, { recursive: true, mode: 0o700 });
  const logger = pino({ name: 'drover-node', level: process.env.DROVER_LOG_LEVEL ?? 'info' });
  const agentEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('DROVER_AGENT_') && v !== undefined) agentEnv[k] = v;
  const node = new NodeAgent({ url: a.url, token, labels: {}, dataDir: a.dataDir, logger, agentEnv, ...(a.name ? { hostname: a.name } : {}), ...(a.address ? { addresses: [a.address] } : {}) });
  const stop = () => void node.close('signal');
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const exit = await node.run();
  if (exit.reason === 'refused') {
    logger.error(exit.message);
    return 3;
  }
  return 0;
}

const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(realpathSync(entry)).href) {
  let args: CloudNodeArgs;
  try {
    args = cloudNodeArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`drover node: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
  runCloudNode(args).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`drover node: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
