#!/usr/bin/env node
// The fractal service's command line, after the tutorial's `faafo`:
//
//   fractals [--endpoint-url URL] create [--width 256:1024] [--height …] [--iterations 128:512]
//                                        [--tasks 1:10] [--xa -4:-1] [--xb 1:4] [--ya -3:-0.5] [--yb 0.5:3]
//   fractals list [--json]
//   fractals show UUID [--json]
//   fractals delete UUID
//
// A value written A:B is drawn at random from that range for each fractal; a single value is
// used as is. Exit codes: 0 ok, 1 failure, 2 usage error.
import { randomUUID } from 'node:crypto';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { UUID, call, describeAnswer, retry } from './lib.mjs';

class Failure extends Error {}
class Usage extends Error {}

const DEFAULTS = {
  width: '256:1024',
  height: '256:1024',
  iterations: '128:512',
  tasks: '1:10',
  xa: '-4:-1',
  xb: '1:4',
  ya: '-3:-0.5',
  yb: '0.5:3',
};

/** A parser for "N" or "A:B", checked against [min, max]; integers if `int`. */
function range(name, { int, min, max }) {
  return (text) => {
    const parts = text.split(':');
    const nums = parts.map((p) => (p.trim() === '' ? NaN : Number(p)));
    const kind = int ? 'an integer' : 'a number';
    if (parts.length > 2 || nums.some((n) => !Number.isFinite(n) || (int && !Number.isInteger(n)))) {
      throw new InvalidArgumentError(`expected ${kind} or a range such as ${DEFAULTS[name]}`);
    }
    const [lo, hi = lo] = nums;
    if (lo > hi) throw new InvalidArgumentError(`the range's start (${lo}) is above its end (${hi})`);
    if (lo < min || hi > max) throw new InvalidArgumentError(`expected values from ${min} to ${max}`);
    return { lo, hi, int };
  };
}

function draw({ lo, hi, int }) {
  if (int) return lo + Math.floor(Math.random() * (hi - lo + 1));
  // Rounded like the tutorial's output, so `show` stays readable.
  return Math.round((lo + Math.random() * (hi - lo)) * 1e5) / 1e5;
}

function uuidArg(text) {
  if (!UUID.test(text)) throw new InvalidArgumentError('expected a UUID such as 410bca6e-baa7-4d82-9ec0-78e409db7ade');
  return text.toLowerCase();
}

function table(rows, header) {
  const all = header ? [header, ...rows] : rows;
  const widths = all[0].map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = '+' + widths.map((w) => '-'.repeat(w + 2)).join('+') + '+';
  const fmt = (r) => '| ' + r.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |';
  const out = [line];
  if (header) out.push(fmt(header), line);
  for (const r of rows) out.push(fmt(r));
  out.push(line);
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------

const program = new Command('fractals')
  .description('Create, list, show and delete fractals of the Fractals-as-a-Service demo.')
  .addOption(
    new Option('--endpoint-url <url>', 'base URL of the fractal api (or its load balancer)')
      .env('FRACTALS_URL')
      .default('http://127.0.0.1:8080')
      .argParser((u) => {
        if (!/^https?:\/\/[^\s/]+/.test(u)) throw new InvalidArgumentError('expected an http:// URL such as http://127.0.0.1:8080');
        return u.replace(/\/+$/, '');
      }),
  )
  .showHelpAfterError('(add --help for usage)')
  .exitOverride()
  .configureOutput({ outputError: (s, write) => write(s) });

const endpoint = () => program.opts().endpointUrl;

/** One api call; transient failures are retried, every other outcome is the caller's. */
async function api(method, path, opts = {}) {
  const url = `${endpoint()}${path}`;
  try {
    return await retry(
      async () => {
        const res = await call(url, { method, timeoutMs: 15_000, ...opts });
        if (res.status === 502 || res.status === 503 || res.status === 504) {
          throw Object.assign(new Error(describeAnswer(res)), { transient: true });
        }
        return res;
      },
      { attempts: 4, baseMs: 250 },
    );
  } catch (err) {
    throw new Failure(`cannot reach the fractal api at ${endpoint()}: ${err.message} (is it running? set --endpoint-url or FRACTALS_URL)`);
  }
}

function fail(res, what) {
  throw new Failure(`${what}: ${describeAnswer(res)}`);
}

/** An option taking "N" or "A:B", with the tutorial's range as its default. */
function rangeOption(name, placeholder, description, limits) {
  const parse = range(name, limits);
  return new Option(`--${name} <${placeholder}>`, description).default(parse(DEFAULTS[name]), DEFAULTS[name]).argParser(parse);
}

const INT = (max) => ({ int: true, min: 1, max });
const COORD = { int: false, min: -1e6, max: 1e6 };

program
  .command('create')
  .description('create fractals; a range A:B is drawn from for every fractal')
  .addOption(rangeOption('width', 'n|a:b', 'width in pixels', INT(4096)))
  .addOption(rangeOption('height', 'n|a:b', 'height in pixels', INT(4096)))
  .addOption(rangeOption('iterations', 'n|a:b', 'iterations per pixel', INT(10_000)))
  .addOption(rangeOption('tasks', 'n|a:b', 'how many fractals', INT(1000)))
  .addOption(rangeOption('xa', 'x|a:b', 'left edge of the region', COORD))
  .addOption(rangeOption('xb', 'x|a:b', 'right edge', COORD))
  .addOption(rangeOption('ya', 'y|a:b', 'bottom edge', COORD))
  .addOption(rangeOption('yb', 'y|a:b', 'top edge', COORD))
  .action(async (o) => {
    for (const [a, b] of [
      ['xa', 'xb'],
      ['ya', 'yb'],
    ]) {
      if (o[a].lo >= o[b].hi) throw new Usage(`--${b} must reach above --${a}: ${b} is at most ${o[b].hi}, ${a} at least ${o[a].lo}`);
    }
    /** A value of a range, drawn again while it would not lie above `below`. */
    const pick = (name, below) => {
      for (let i = 0; ; i++) {
        const v = draw(o[name]);
        if (below === undefined || v > below || i > 1000) return v;
      }
    };
    const n = draw(o.tasks);
    let failed = 0;
    const one = async () => {
      // The uuid is chosen here so a retried POST whose first answer was lost is recognised.
      const body = { uuid: randomUUID(), width: pick('width'), height: pick('height'), iterations: pick('iterations') };
      body.xa = pick('xa');
      body.xb = pick('xb', body.xa);
      body.ya = pick('ya');
      body.yb = pick('yb', body.ya);
      const res = await api('POST', '/v1/fractal', { json: body });
      if (res.status === 201 || res.status === 409) {
        console.log(`${body.uuid}  ${body.width} x ${body.height} pixels, ${body.iterations} iterations`);
      } else {
        failed++;
        console.error(`create failed: ${describeAnswer(res)}`);
      }
    };
    // A burst, but a bounded one: at most 8 requests in flight.
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(8, n) }, async () => {
        while (next < n) {
          next++;
          await one();
        }
      }),
    );
    if (failed) throw new Failure(`${failed} of ${n} fractal(s) not created`);
  });

program
  .command('list')
  .description('list every fractal')
  .option('--json', 'print the records as JSON')
  .action(async (o) => {
    const all = [];
    for (let page = 1; ; page++) {
      const res = await api('GET', `/v1/fractal?page=${page}&results_per_page=100`);
      if (res.status !== 200) fail(res, 'list');
      const body = res.json();
      all.push(...body.objects);
      if (page >= body.total_pages) break;
    }
    if (o.json) return console.log(JSON.stringify(all, null, 2));
    if (all.length === 0) return console.log('no fractals yet');
    console.log(
      table(
        all.map((f) => [f.uuid, `${f.width} x ${f.height} pixels`, f.status, f.size == null ? '' : `${f.size} bytes`, f.generated_by ?? '']),
        ['UUID', 'Dimensions', 'Status', 'Filesize', 'Generated by'],
      ),
    );
  });

program
  .command('show')
  .description('show one fractal')
  .argument('<uuid>', 'the fractal', uuidArg)
  .option('--json', 'print the record as JSON')
  .action(async (uuid, o) => {
    const res = await api('GET', `/v1/fractal/${uuid}`);
    if (res.status === 404) throw new Failure(`no fractal ${uuid}`);
    if (res.status !== 200) fail(res, 'show');
    const f = res.json();
    if (o.json) return console.log(JSON.stringify(f, null, 2));
    const rows = [
      ['uuid', f.uuid],
      ['status', f.status],
      ['duration', f.duration == null ? '' : `${f.duration} seconds`],
      ['dimensions', `${f.width} x ${f.height} pixels`],
      ['iterations', f.iterations],
      ['xa', f.xa],
      ['xb', f.xb],
      ['ya', f.ya],
      ['yb', f.yb],
      ['size', f.size == null ? '' : `${f.size} bytes`],
      ['checksum', f.checksum ?? ''],
      ['generated_by', f.generated_by ?? ''],
      ['image', f.status === 'done' ? `${endpoint()}/fractal/${f.uuid}` : ''],
    ];
    if (f.error) rows.push(['error', f.error]);
    console.log(table(rows, ['Parameter', 'Value']));
  });

program
  .command('delete')
  .description('delete one fractal and its image')
  .argument('<uuid>', 'the fractal', uuidArg)
  .action(async (uuid) => {
    const res = await api('DELETE', `/v1/fractal/${uuid}`);
    if (res.status === 404) throw new Failure(`no fractal ${uuid}`);
    if (res.status !== 204) fail(res, 'delete');
    console.log(`deleted ${uuid}`);
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; every other parse problem (no command included) is a usage error.
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else if (err instanceof Usage) {
    console.error(`error: ${err.message}`);
    process.exitCode = 2;
  } else if (err instanceof Failure) {
    console.error(`fractals: ${err.message}`);
    process.exitCode = 1;
  } else {
    console.error(err);
    process.exitCode = 1;
  }
}
