/**
 * Output of role commands: split into lines, keep the last few for status reports, and append
 * everything to the role's log file so a person can read the whole story later.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Readable } from 'node:stream';

/** Where whole lines of output go. */
export interface LineSink {
  write(line: string): void;
}

/**
 * Appends lines to `${workdir}/role.log`, each as `<ISO 8601 time> <line>`. One instance is shared by the process and script
 * plug-ins so their lines keep the order in which they arrived, and it remembers the last few:
 * when the role is stopped they go to the controller, which outlives the workdir.
 */
export class RoleLog implements LineSink {
  readonly #stream: WriteStream;
  readonly #tail: string[] = [];
  #closed = false;

  /** @param tailLines lines kept for {@link tail}. */
  constructor(
    readonly path: string,
    private readonly tailLines = 40,
  ) {
    this.#stream = createWriteStream(path, { flags: 'a' });
    // A log we cannot write must not take the agent down with it; the tail still reaches status.
    this.#stream.on('error', () => {
      this.#closed = true;
    });
  }

  write(line: string): void {
    this.#tail.push(line);
    if (this.#tail.length > this.tailLines) this.#tail.splice(0, this.#tail.length - this.tailLines);
    // Background processes left by a script may keep writing after the agent closed the log.
    // Each line stamped with when the agent got it: `drover logs --since` reads it back.
    if (!this.#closed) this.#stream.write(`${new Date().toISOString()} ${line}\n`);
  }

  /** The last lines written, oldest first: every step's output, `[step] `-prefixed, and the start command's. */
  tail(): string[] {
    return [...this.#tail];
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    return new Promise((resolve) => this.#stream.end(resolve));
  }
}

/** Longest line kept whole; a longer one is cut here, with a marker, and the rest of it skipped. */
export const MAX_LINE_CHARS = 16 * 1024;

/**
 * Splits chunks from several streams into lines; remembers the last `max` of them. Memory stays
 * bounded whatever a process prints: a line longer than {@link MAX_LINE_CHARS} (even one that
 * never ends) is cut with a marker, never buffered whole.
 */
export class LineTail {
  readonly #lines: string[] = [];
  readonly #partial = new Map<Readable, string>();
  /** Streams in the middle of a line already cut: skip up to its newline. */
  readonly #skipping = new Set<Readable>();

  constructor(
    private readonly max: number,
    private readonly sink?: LineSink,
    private readonly prefix = '',
  ) {}

  /** Reads `stream` as UTF-8 until it ends. */
  follow(stream: Readable | null): void {
    if (!stream) return;
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => this.#push(stream, chunk));
    stream.on('end', () => this.#flush(stream));
    // A destroyed pipe (the child is gone) is not worth an unhandled 'error'.
    stream.on('error', () => this.#flush(stream));
  }

  lines(): string[] {
    return [...this.#lines];
  }

  /** Adds a line that did not come from the process (e.g. why it was killed). */
  note(line: string): void {
    this.#add(line);
  }

  /** Emits partial lines still buffered, e.g. when the process exited without a final newline. */
  flushAll(): void {
    for (const s of [...this.#partial.keys()]) this.#flush(s);
  }

  #push(stream: Readable, chunk: string): void {
    if (this.#skipping.has(stream)) {
      const nl = chunk.indexOf('\n');
      if (nl < 0) return;
      this.#skipping.delete(stream);
      chunk = chunk.slice(nl + 1);
    }
    const text = (this.#partial.get(stream) ?? '') + chunk;
    const parts = text.split('\n');
    let rest = parts.pop() ?? '';
    for (const p of parts) this.#add(cut(p.endsWith('\r') ? p.slice(0, -1) : p));
    if (rest.length > MAX_LINE_CHARS) {
      this.#add(cut(rest));
      this.#skipping.add(stream);
      rest = '';
    }
    this.#partial.set(stream, rest);
  }

  #flush(stream: Readable): void {
    const rest = this.#partial.get(stream);
    this.#partial.delete(stream);
    if (rest) this.#add(rest);
  }

  #add(line: string): void {
    this.#lines.push(line);
    if (this.#lines.length > this.max) this.#lines.splice(0, this.#lines.length - this.max);
    this.sink?.write(this.prefix + line);
  }
}

function cut(line: string): string {
  return line.length <= MAX_LINE_CHARS ? line : `${line.slice(0, MAX_LINE_CHARS)}…[line cut at ${MAX_LINE_CHARS} characters]`;
}

/** "250ms", "2s", "1.5s", "90s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)}s`;
}

/** "exited with code 1" / "was killed by SIGKILL". */
export function describeExit(code: number | null, signal: string | null): string {
  if (signal) return `was killed by ${signal}`;
  if (code === null) return 'could not be run';
  return `exited with code ${code}`;
}
