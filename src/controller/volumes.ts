/**
 * `GET /v1/volumes`, `DELETE /v1/volumes/{app}/{slot}[/{name}]`: the volumes of this machine.
 *
 * A role's volume is a folder `<data-dir>/volumes/<app>/<role>-<n>/<name>` (0700) that outlives
 * the instances of member slot n: each instance that takes the slot gets it back. They are only
 * removed by hand, and never while an instance holds the slot (`409 volume_in_use`): a database's
 * files must not vanish under it. Volumes on joined hosts live on those hosts and are not listed.
 */
import { lstatSync, readdirSync, rmSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Controller } from './controller.js';
import { ApiError } from './errors.js';

export interface VolumeJson {
  readonly app: string;
  readonly role: string;
  /** `db-0`: the member slot. */
  readonly slot: string;
  readonly name: string;
  readonly path: string;
  /** Bytes of its files (counted up to 100,000 entries; `approx` past that). */
  readonly bytes: number;
  readonly approx: boolean;
  /** The live instance holding the slot, if any. */
  readonly usedBy: string | null;
}

const NAME = /^[a-z][a-z0-9-]{0,62}$/;
const SLOT = /^([a-z][a-z0-9-]{0,62})-(\d{1,6})$/;
const VOLUME = /^[a-z][a-z0-9_]{0,31}$/;
const MAX_ENTRIES = 100_000;

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Bytes under `path`, without following links; bounded. */
function size(path: string): { bytes: number; approx: boolean } {
  let bytes = 0;
  let seen = 0;
  const stack = [path];
  while (stack.length > 0) {
    const p = stack.pop()!;
    let st: Stats;
    try {
      st = lstatSync(p);
    } catch {
      continue;
    }
    if (++seen > MAX_ENTRIES) return { bytes, approx: true };
    if (st.isDirectory()) for (const e of list(p)) stack.push(join(p, e));
    else bytes += st.size;
  }
  return { bytes, approx: false };
}

/** Who holds member slot `slot` of `app` now: a live instance of its role with that slot. */
async function holder(c: Controller, app: string, slot: string): Promise<string | null> {
  const m = SLOT.exec(slot);
  if (!m) return null;
  const [, role = '', n = ''] = m;
  const live = (await c.listInstances({ app, role })).filter((i) => i.destroyedAt === null && i.slot === Number(n));
  return live[0]?.id ?? null;
}

export function registerVolumeRoutes(app: FastifyInstance, c: Controller, opts: { dir: string; errors: (...codes: number[]) => Record<number, unknown> }): void {
  const { dir, errors } = opts;
  const volumeSchema = {
    type: 'object',
    properties: {
      app: { type: 'string' },
      role: { type: 'string' },
      slot: { type: 'string', description: 'the member slot, <role>-<n>' },
      name: { type: 'string' },
      path: { type: 'string' },
      bytes: { type: 'integer' },
      approx: { type: 'boolean' },
      usedBy: { type: ['string', 'null'], description: 'the live instance holding the slot' },
    },
  } as const;

  app.get<{ Querystring: { app?: string } }>(
    '/v1/volumes',
    {
      schema: {
        tags: ['volumes'],
        summary: "The volumes on the controller's machine, by app and member slot, with their size and the instance that holds each",
        querystring: { type: 'object', additionalProperties: false, properties: { app: { type: 'string', pattern: NAME.source } } },
        response: { 200: { type: 'object', properties: { volumes: { type: 'array', items: volumeSchema } } }, ...errors(400, 401) },
      },
    },
    async (req) => {
      const out: VolumeJson[] = [];
      for (const a of req.query.app ? [req.query.app] : list(dir).filter((n) => NAME.test(n)).sort()) {
        for (const slot of list(join(dir, a)).filter((n) => SLOT.test(n)).sort()) {
          const usedBy = await holder(c, a, slot);
          const role = SLOT.exec(slot)![1]!;
          for (const name of list(join(dir, a, slot)).filter((n) => VOLUME.test(n)).sort()) {
            const path = join(dir, a, slot, name);
            out.push({ app: a, role, slot, name, path, ...size(path), usedBy });
          }
        }
      }
      return { volumes: out };
    },
  );

  const remove = async (params: { app: string; slot: string; name?: string }) => {
    const { app: a, slot, name } = params;
    const path = name === undefined ? join(dir, a, slot) : join(dir, a, slot, name);
    if (list(join(dir, a)).indexOf(slot) < 0 || (name !== undefined && list(join(dir, a, slot)).indexOf(name) < 0)) {
      throw new ApiError('not_found', `no volume ${a}/${slot}${name !== undefined ? `/${name}` : ''} on this machine`);
    }
    const usedBy = await holder(c, a, slot);
    if (usedBy) {
      throw new ApiError('volume_in_use', `volume ${a}/${slot}${name !== undefined ? `/${name}` : ''} is in use by ${usedBy}: scale the role down (or remove it) first`);
    }
    rmSync(path, { recursive: true, force: true });
    if (name !== undefined && list(join(dir, a, slot)).length === 0) rmSync(join(dir, a, slot), { recursive: true, force: true });
    if (list(join(dir, a)).length === 0) rmSync(join(dir, a), { recursive: true, force: true });
    await c.record({ app: a, role: SLOT.exec(slot)![1]!, instance: null, kind: 'volume.removed', message: `volume ${a}/${slot}${name !== undefined ? `/${name}` : ' (every volume of the slot)'} removed by hand` });
    return { removed: `${a}/${slot}${name !== undefined ? `/${name}` : ''}` };
  };
  const params = {
    app: { type: 'string', pattern: NAME.source },
    slot: { type: 'string', pattern: SLOT.source },
    name: { type: 'string', pattern: VOLUME.source },
  } as const;
  const removed = { 200: { type: 'object', properties: { removed: { type: 'string' } } }, ...errors(400, 401, 404, 409) };
  app.delete<{ Params: { app: string; slot: string } }>(
    '/v1/volumes/:app/:slot',
    {
      schema: {
        tags: ['volumes'],
        summary: 'Removes every volume of a member slot (refused while an instance holds it)',
        params: { type: 'object', properties: { app: params.app, slot: params.slot }, required: ['app', 'slot'] },
        response: removed,
      },
    },
    async (req) => remove(req.params),
  );
  app.delete<{ Params: { app: string; slot: string; name: string } }>(
    '/v1/volumes/:app/:slot/:name',
    {
      schema: {
        tags: ['volumes'],
        summary: 'Removes one volume of a member slot (refused while an instance holds it)',
        params: { type: 'object', properties: params, required: ['app', 'slot', 'name'] },
        response: removed,
      },
    },
    async (req) => remove(req.params),
  );
}
