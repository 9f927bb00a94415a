/**
 * The port keeper's process (port-keeper.ts): `node port-keeper-main.js IP PORT SOCKET [IDLE_MS HOLD_MS]`,
 * spawned by an agent. Exit codes: 0 released after idling, 2 bad arguments, 3 the port is taken.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { PortKeeper } from './port-keeper.js';

export async function main(argv: readonly string[]): Promise<number> {
  const [ip, portText, socketPath, idleText = '5000', holdText = '10000'] = argv;
  const port = Number(portText);
  const idleExitMs = Number(idleText);
  const holdMs = Number(holdText);
  if (!ip || !socketPath || !Number.isInteger(port) || port < 1 || port > 65535 || !(idleExitMs >= 0) || !(holdMs >= 0)) {
    process.stderr.write('usage: port-keeper IP PORT SOCKET [IDLE_MS HOLD_MS]\n');
    return 2;
  }
  const log = (msg: string) => process.stdout.write(`${new Date().toISOString()} port-keeper ${ip}:${port}: ${msg}\n`);
  const keeper = new PortKeeper({ ip, port, socketPath, idleExitMs, holdMs, log });
  try {
    await keeper.start();
  } catch (err) {
    log(`cannot hold the port: ${err instanceof Error ? err.message : String(err)}`);
    return (err as NodeJS.ErrnoException).code === 'EADDRINUSE' ? 3 : 1;
  }
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => keeper.close());
  await keeper.closed();
  return 0;
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
