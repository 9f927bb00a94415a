/**
 * Template names checked when the app file is read: unknown names where no shell would expand
 * them are refused, ambiguous or misspelt ones are warned about, each naming the field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appFileWarnings, parseAppFile, SpecError } from './index.js';

const file = (...lines: string[]) => ['app: shop', 'roles:', ...lines, ''].join('\n');
const refusal = (yaml: string): string[] => {
  try {
    parseAppFile(yaml);
  } catch (err) {
    if (err instanceof SpecError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  assert.fail('expected the file to be refused');
};
const warnings = (yaml: string) => appFileWarnings(parseAppFile(yaml)).map((i) => `${i.path}: ${i.message}`);

void test('an unknown ${name} in an export or a role metric url is refused, naming the field', () => {
  assert.deepEqual(refusal(file('  api:', '    start: run', '    exports: { url: "http://${hostname}:${port}" }')), [
    'roles.api.exports.url: ${hostname} is not a Drover name, and exports are not run by a shell: it would stay as written (names: ${port}, ${ip}, ${instance}, ${role}, ${app}, ${workdir}, ${appDir}, or role.key of an import)',
  ]);
  const metric = (url: string) =>
    file('  api:', '    start: run', '    metrics:', '      - name: backlog', `        url: "${url}"`, '        select: backlog');
  assert.match(refusal(metric('http://${ip}:9000/q'))[0] ?? '', /^roles\.api\.metrics\[0\]\.url: \$\{ip\} has no value here: a role metric is scraped once by the controller/);
  assert.match(refusal(metric('http://${host}/q'))[0] ?? '', /^roles\.api\.metrics\[0\]\.url: \$\{host\} is not a Drover name/);
});

void test('unknown names in commands stay for bash; what is refused there today still is', () => {
  // ${HOME}, ${1}, ${PID:-0}-style names are the shell's.
  assert.deepEqual(warnings(file('  api:', '    start: echo ${HOME} ${PORT} ${n}; exec run')), []);
  assert.match(refusal(file('  api:', '    start: run ${db.url}'))[0] ?? '', /^roles\.api\.start: \$\{db\.url\} refers to no role "db"/);
  assert.match(refusal(file('  db:', '    start: run', '    exports: { url: u }', '  api:', '    start: run ${db.url}'))[0] ?? '', /^roles\.api\.start: \$\{db\.url\} is not imported/);
  assert.match(refusal(file('  db:', '    start: run', '    exports: { url: u }', '  api:', '    imports: [db.url]', '    health: { exec: "curl ${db.nope}" }'))[0] ?? '', /^roles\.api\.health\.exec: \$\{db\.nope\} is not imported/);
});

void test('${app} beside a role named app is warned about, naming the field; ${app.endpoint} is not', () => {
  const yaml = file(
    '  app:',
    '    start: run',
    '    exports: { endpoint: "http://${ip}:${port}" }',
    '  front:',
    '    imports: [app.endpoint]',
    '    start: exec front --backend ${app} --name ${app.endpoint}',
    '    health: { exec: "curl -fs ${app}/health" }',
  );
  assert.deepEqual(warnings(yaml), [
    'roles.front.start: ${app} is the built-in (the app\'s name), not an export of role "app"; for its export write ${app.KEY}',
    'roles.front.health.exec: ${app} is the built-in (the app\'s name), not an export of role "app"; for its export write ${app.KEY}',
  ]);
  // Without a role named app, ${app} is just the app's name.
  assert.deepEqual(warnings(file('  api:', '    start: exec run --name ${app}')), []);
});

void test('a misspelt built-in is warned about with the name meant; a ${name} in an env value too', () => {
  assert.deepEqual(warnings(file('  api:', '    start: exec node ${appdir}/a.js --id ${instanceId} --p ${prot}', '    env: { A: "${HOME}/x", B: "${port}" }')), [
    'roles.api.start: ${appdir} is not a Drover name (left as written, for bash it is an unset variable); did you mean ${appDir}?',
    'roles.api.start: ${instanceId} is not a Drover name (left as written, for bash it is an unset variable); did you mean ${instance}?',
    'roles.api.start: ${prot} is not a Drover name (left as written, for bash it is an unset variable); did you mean ${port}?',
    'roles.api.env.A: ${HOME} is not a Drover name, and env values are not run by a shell: the role gets it as written',
  ]);
});
