/**
 * Bounds on an app file, and the shape check that enforces the structural ones on any parsed
 * value before a schema walks it. Every bound is far above what a real app file needs (a large
 * one is a few KiB, nests 6 deep, has a dozen roles) and low enough that checking the largest
 * file allowed takes milliseconds. docs/app-file.md lists them; `parseAppFile` and
 * `compileAppSpec` refuse a file past any of them with a {@link SpecIssue}-shaped reason.
 */

/** Most instances one role may have (`count` alone may be scaled anywhere in [0, this]). */
export const MAX_ROLE_COUNT = 1000;
/** Most warm spares an app, or one of its roles, may keep. */
export const MAX_SPARES = 100;
/** Most consecutive failures a check may wait for before it counts as failed. */
export const MAX_FAILURE_THRESHOLD = 100;

/** Largest magnitude of any number in the file (metric values, targets, thresholds): 1e15 is a petabyte, or a quadrillion requests. */
export const MAX_NUMBER = 1e15;

/** The bounds, by name. Numbers of the app file itself (count, spares, durations…) are bounded in its schema. */
export const APP_FILE_LIMITS = {
  /** Size of the YAML text, in UTF-8 bytes, checked before any parsing. */
  bytes: 256 * 1024,
  /** Nesting of mappings and lists (the deepest field, `roles.x.scale[0].target.scaleUp.period`, is at 6). */
  depth: 32,
  /** `*alias` references in the YAML text. */
  aliases: 100,
  /** Keys of one mapping or items of one list, as written. */
  entries: 1000,
  /** Values in the whole file once aliases are expanded (every mapping, list and scalar counts). */
  values: 20_000,
  /** Roles of one app. */
  roles: 100,
  /** Characters of one string value (a deploy script may be long; a name is far shorter). */
  stringLength: 64 * 1024,
  /** Characters of one mapping key. */
  keyLength: 256,
} as const;

/**
 * Names a key may not have wherever it becomes a property of a record: `roles.constructor`,
 * `env.toString`, a metric `hasOwnProperty`. A plain object lookup of any of them finds the
 * prototype's member instead of nothing; refusing them keeps every lookup honest even where a
 * `Map` or `Object.hasOwn` was forgotten.
 */
export const RESERVED_NAMES: ReadonlySet<string> = new Set([...Object.getOwnPropertyNames(Object.prototype), '__proto__', 'prototype']);

/** One problem found by {@link shapeIssues}: a path as segments, and the reason. */
export interface ShapeIssue {
  readonly path: readonly (string | number)[];
  readonly message: string;
}

/**
 * Structural problems of a parsed app file (from YAML or JSON): nesting, value count, string
 * and key lengths, control characters, reserved key names. `fatal` means a bound was passed and
 * no schema may walk the value; other issues are reported along with the schema's.
 *
 * Iterative, and stops at {@link APP_FILE_LIMITS.values} values, so its own cost is bounded
 * whatever the input (shared references, as YAML aliases make, are counted each time they are met).
 *
 * @param multiLine whether a string at `path` may hold tabs and newlines (commands, env values).
 */
export function shapeIssues(
  raw: unknown,
  multiLine: (path: readonly (string | number)[]) => boolean,
): { issues: ShapeIssue[]; fatal: boolean } {
  const L = APP_FILE_LIMITS;
  const issues: ShapeIssue[] = [];
  const stack: { value: unknown; path: (string | number)[] }[] = [{ value: raw, path: [] }];
  let values = 0;
  const fatal = (path: readonly (string | number)[], message: string) => ({ issues: [...issues, { path, message }], fatal: true });
  while (stack.length > 0) {
    const { value, path } = stack.pop()!;
    if (++values > L.values) return fatal([], `the app file has more than ${L.values} values (aliases expanded); split it or simplify it`);
    if (typeof value === 'string') {
      if (value.length > L.stringLength) issues.push({ path, message: `longer than ${L.stringLength} characters` });
      else {
        const bad = controlCharacter(value, multiLine(path));
        if (bad) issues.push({ path, message: bad });
      }
      continue;
    }
    if (typeof value === 'number') {
      // Every number has a bound; the schema sets a tighter one wherever it knows the field.
      if (!Number.isFinite(value) || Math.abs(value) > MAX_NUMBER) issues.push({ path, message: `expected a number from -${MAX_NUMBER} to ${MAX_NUMBER}` });
      continue;
    }
    if (typeof value !== 'object' || value === null) continue;
    const isArray = Array.isArray(value);
    // Only lists and plain mappings have children a schema would walk; anything else is a leaf it refuses.
    if (!isArray && !isPlainObject(value)) continue;
    if (path.length >= L.depth) return fatal(path, `nested more than ${L.depth} levels deep`);
    if (isArray) {
      if (value.length > L.entries) return fatal(path, `more than ${L.entries} items`);
      for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i] as unknown, path: [...path, i] });
      continue;
    }
    const keys = Object.keys(value);
    if (keys.length > L.entries) return fatal(path, `more than ${L.entries} keys`);
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i]!;
      const at = [...path, key];
      if (key.length > L.keyLength) issues.push({ path, message: `a key is longer than ${L.keyLength} characters` });
      else if (RESERVED_NAMES.has(key)) issues.push({ path: at, message: `${JSON.stringify(key)} is a reserved name` });
      else {
        const bad = controlCharacter(key, false);
        if (bad) issues.push({ path, message: `key ${JSON.stringify(key)}: ${bad}` });
        else stack.push({ value: value[key], path: at });
      }
    }
  }
  return { issues, fatal: false };
}

function isPlainObject(v: object): v is Record<string, unknown> {
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * The first control character of `s` (U+0000–U+001F, U+007F), as a reason; tab and newline are
 * allowed when `multiLine`. A NUL cannot pass through an environment variable or an argv entry,
 * and the others hide text from whoever reads a command or a log line.
 */
export function controlCharacter(s: string, multiLine: boolean): string | undefined {
  // eslint-disable-next-line no-control-regex
  const m = (multiLine ? /[\x00-\x08\x0b-\x1f\x7f]/ : /[\x00-\x1f\x7f]/).exec(s);
  if (!m) return undefined;
  const code = m[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
  const hint = multiLine ? '' : m[0] === '\n' || m[0] === '\t' ? ' here (only commands and env values may hold tabs and newlines)' : '';
  return `control character U+${code} is not allowed${hint}`;
}

/** `Object.hasOwn` then the value: a lookup in a record that never finds a prototype's member. */
export function own<V>(record: Readonly<Record<string, V>>, key: string): V | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}
