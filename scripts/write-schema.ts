/**
 * Writes schema/drover.schema.json, the JSON Schema editors use to check and complete
 * drover.yaml. Generated from the zod schema so the two cannot drift; a test compares the
 * committed file with a fresh generation, so run this after changing src/core/spec.ts.
 *
 *   npx tsx scripts/write-schema.ts
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { appFileJsonSchema } from '../src/core/index.js';

const target = fileURLToPath(new URL('../schema/drover.schema.json', import.meta.url));
mkdirSync(dirname(target), { recursive: true });
writeFileSync(target, `${JSON.stringify(appFileJsonSchema(), null, 2)}\n`);
console.log(`wrote ${target}`);
