import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import fc from 'fast-check';
import { renderCommand, roleBuiltins } from './render.js';
import type { BuiltinValues } from './template.js';
import type { ResolvedImports } from './types.js';

const builtins: BuiltinValues = {
  port: '8080', ip: '127.0.0.1', instance: 'i-1', role: 'api', app: 'shop', workdir: '/data/my instances/i-1', appDir: "/apps/it's here",
};
const imports = (url: string): ResolvedImports => ({ db: [{ instance: 'i-0', exports: { url } }] });

/** Runs the rendered command in bash, as the agent does, and returns its stdout. */
function run(template: string, value: string): string {
  const { command, env } = renderCommand(template, builtins, imports(value));
  const r = spawnSync('bash', ['-c', command], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' });
  assert.equal(r.status, 0, `bash failed: ${r.stderr}\ncommand: ${command}`);
  return r.stdout;
}

test('an imported value reaches the command as data in every quoting context, never as shell', () => {
  const hostile = ['$(id)', '`id`', "'; touch /tmp/pwned-drover; '", '"; touch /tmp/pwned-drover; "', 'a b  c', '*', '$HOME', '\\', "it's", 'x\ny', '${PATH}'];
  for (const v of hostile) {
    assert.equal(run('printf %s ${db.url}', v), v);
    assert.equal(run('printf %s "pre-${db.url}-post"', v), `pre-${v}-post`);
    assert.equal(run("printf %s 'pre-${db.url}-post'", v), `pre-${v}-post`);
    assert.equal(run('printf %s "$(printf %s ${db.url})"', v.replace(/\n+$/, '')), v.replace(/\n+$/, ''));
    assert.equal(run("printf %s $'pre\\t${db.url}'", v), `pre\t${v}`);
    assert.equal(run('x=${db.url}; printf %s "$x"', v), v);
  }
});

test('property: any value, any context, exact output and no command run', () => {
  const value = fc.string({ unit: fc.constantFrom('a', ' ', '$', '(', ')', '`', "'", '"', '\\', ';', '|', '&', '*', '\t', 'x', '{', '}', '#', '!') , maxLength: 20 });
  const ctx = fc.constantFrom<readonly [string, (v: string) => string]>(
    ['printf %s ${db.url}', (v: string) => v],
    ['printf %s "<${db.url}>"', (v: string) => `<${v}>`],
    ["printf %s '<${db.url}>'", (v: string) => `<${v}>`],
    ['printf %s `printf %s ${db.url}`X', (v: string) => `${v}X`],
  );
  fc.assert(
    fc.property(value, ctx, (v, [tpl, expect]) => {
      // Command substitution drops trailing newlines; word splitting inside a backtick group is the shell's business.
      if (tpl.includes('`') && /\s/.test(v)) return;
      assert.equal(run(tpl, v), expect(v));
    }),
    { numRuns: 60 },
  );
});

test('built-ins are quoted too: folder names with spaces and quotes work', () => {
  assert.equal(run('cd "${workdir%/*}" 2>/dev/null; printf %s ${workdir}', ''), builtins.workdir);
  assert.equal(run('printf %s ${appDir}', ''), builtins.appDir);
});

test('references Drover does not resolve are left for the shell', () => {
  const { command, env } = renderCommand('echo ${HOME} ${1} ${nope.url} ${db.*}', builtins, imports('x'));
  assert.equal(command, 'echo ${HOME} ${1} ${nope.url} ${db.*}');
  assert.deepEqual(env, {});
});

test('each reference gets its own variable; names that collide are told apart', () => {
  const imp: ResolvedImports = { 'a-b': [{ instance: 'i', exports: { c: 'one' } }], a: [{ instance: 'j', exports: { 'b-c': 'two' } }] };
  const { command, env } = renderCommand('echo ${a-b.c} ${a.b-c} ${a-b.c}', builtins, imp);
  assert.equal(command, 'echo "${DROVER_IMPORT_A_B_C}" "${DROVER_IMPORT_A_B_C_2}" "${DROVER_IMPORT_A_B_C}"');
  assert.deepEqual(env, { DROVER_IMPORT_A_B_C: 'one', DROVER_IMPORT_A_B_C_2: 'two' });
});

test('roleBuiltins: a balancer on a fixed port publishes it; a role with user: works in home/', () => {
  const at = { app: 'a', appDir: '/x', instance: 'i-1', ip: '10.0.0.1', port: 4000, workdir: '/d/i-1' };
  assert.equal(roleBuiltins({ name: 'lb', loadBalancer: { listen: 80 } as never }, at).port, '80');
  assert.equal(roleBuiltins({ name: 'api', user: 'nobody' }, at).workdir, '/d/i-1/home');
  assert.equal(roleBuiltins({ name: 'api' }, at).workdir, '/d/i-1');
});
