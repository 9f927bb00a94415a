// Bundles what the ssh provider installs on a host (src/adapters/providers/ssh.ts) into
// dist/ssh-bundle/: the agent (agent/main.js) and the provider's far end
// (adapters/providers/ssh-remote.js), each one file with its dependencies, so a host needs
// node.js and nothing else. The layout mirrors src/, where the local provider finds the agent.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = resolve(root, 'dist/ssh-bundle');
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: {
    'agent/main': resolve(root, 'src/agent/main.ts'),
    'adapters/providers/ssh-remote': resolve(root, 'src/adapters/providers/ssh-remote.ts'),
    // A cloud machine's node (controller/bootstrap.ts); two folders deep like ssh-remote, so the local provider finds agent/main.js.
    'agent/cloud/node': resolve(root, 'src/agent/node-main.ts'),
  },
  outdir: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // CommonJS dependencies call require(): give the ESM bundle one.
  banner: { js: "import { createRequire as __droverRequire } from 'node:module'; const require = __droverRequire(import.meta.url);" },
  // ws's optional native helpers: absent, it uses its JavaScript.
  external: ['bufferutil', 'utf-8-validate'],
  // The node (agent/node.ts) needs only the local provider: through the providers' door it would
  // pull ssh2 (native parts) and the cloud SDKs into a bundle meant for a bare machine.
  plugins: [{
    name: 'local-provider-only',
    setup(b) {
      b.onResolve({ filter: /^\.\.\/adapters\/providers\/index\.js$/ }, (a) =>
        a.importer.endsWith('/src/agent/node.ts') ? { path: resolve(root, 'src/adapters/providers/local.ts') } : undefined);
    },
  }],
  logLevel: 'warning',
});
