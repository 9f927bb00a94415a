/**
 * Bounded intake: at most `concurrency` calls run at once, the others wait in arrival order, and
 * beyond `maxWaiting` a call is refused at once. A burst of API writes (a thousand sign-ups) then
 * never queues thousands of store queries ahead of the control loop's own (agent handshakes,
 * reports, reconcile passes), which would otherwise wait behind all of them.
 */
export class IntakeFullError extends Error {
  override readonly name = 'IntakeFullError';
}

export class Intake {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly concurrency: number,
    private readonly maxWaiting: number,
  ) {}

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.maxWaiting) throw new IntakeFullError(`${this.waiting.length} requests are already waiting`);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await fn();
    } finally {
      // The slot passes straight to the next in line (running stays the same), or is freed.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
