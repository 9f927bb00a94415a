/**
 * The ssh provider's far end: run on a host over ssh (`node ssh-remote.js`, from the agent bundle
 * the provider installed there), it reads one request as JSON on stdin, carries it out with the
 * local provider of that host, and answers one JSON line on stdout. The request travels on
 * stdin, never in the command line: it holds the instance key.
 *
 * Built into `dist/ssh-bundle/adapters/providers/ssh-remote.js` beside the bundled agent
 * (`dist/ssh-bundle/agent/main.js`), where the local provider looks for it.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { LocalProvider } from './local.js';

const INSTANCE_ID = z.string().regex(/^i-[A-Za-z0-9_-]{1,64}$/);
const common = { dir: z.string().min(1).max(1024).startsWith('/'), ip: z.string().min(1).max(64) };

export const remoteRequest = z.discriminatedUnion('op', [
  z.object({
    op: z.literal('request'), ...common,
    req: z.object({
      instanceId: INSTANCE_ID, epoch: z.number().int().min(0), key: z.string().min(16).max(512), controllerUrl: z.string().url().max(2048),
      transportUrl: z.string().max(2048).optional(), app: z.string().max(128), role: z.string().max(128).nullable(),
    }),
  }),
  z.object({ op: z.literal('describe'), ...common, ids: z.array(INSTANCE_ID).max(1000) }),
  z.object({ op: z.literal('list'), ...common }),
  z.object({ op: z.literal('destroy'), ...common, id: INSTANCE_ID }),
]);
export type RemoteRequest = z.infer<typeof remoteRequest>;

async function readStdin(limit: number): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    if (text.length > limit) throw new Error(`the request on stdin is longer than ${limit} bytes`);
  }
  return text;
}

async function main(): Promise<void> {
  const parsed = remoteRequest.safeParse(JSON.parse(await readStdin(64 * 1024)));
  if (!parsed.success) throw new Error(`not a request: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const r = parsed.data;
  const provider = new LocalProvider({ baseDir: join(r.dir, 'instances'), ip: r.ip });
  let answer: unknown;
  switch (r.op) {
    case 'request': {
      const { transportUrl, ...req } = r.req;
      answer = await provider.request(transportUrl ? { ...req, transportUrl } : req);
      break;
    }
    case 'describe':
      answer = await provider.describe(r.ids.map((id) => ({ id, providerRef: null })));
      break;
    case 'list':
      answer = await provider.list();
      break;
    case 'destroy':
      await provider.destroy({ id: r.id, providerRef: null });
      answer = { destroyed: r.id };
      break;
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
