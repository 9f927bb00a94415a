/**
 * The queueing model: a fluid queue with a backlog, in front of the role's load balancer.
 *
 * Over one interval the arrival rate λ and the serving capacity μ (serving instances × capacity
 * per instance) are constant. Requests beyond μ join a FIFO backlog Q and are served later;
 * while Q > 0 every arriving request waits Q(t)/μ, the time the backlog ahead of it takes to
 * drain. A request that would wait longer than the client timeout is dropped instead (so Q
 * never exceeds μ × timeout; with μ = 0 the load balancer has no member and refuses at once).
 * Everything is solved exactly for piecewise-constant λ and μ, so the answer does not depend on
 * the tick length beyond where capacity changes. See docs/simulator.md for why this model.
 */

export interface FluidStep {
  /** Requests served during the interval (old backlog first). */
  readonly served: number;
  /** Requests given up: backlog beyond the new timeout bound, and arrivals the full queue refused. */
  readonly dropped: number;
  /** Seconds waited, summed over the interval's admitted arrivals. */
  readonly waitSeconds: number;
  /** Admitted arrivals that found a backlog (waited more than zero). */
  readonly queued: number;
  /** Backlog at the end of the interval. */
  readonly backlog: number;
  /** Time-integral of the backlog (request·seconds), for a mean backlog. */
  readonly backlogArea: number;
}

/**
 * One interval of `dt` seconds from backlog `q0`, at arrival rate `lambda` and service rate `mu`
 * (requests/s), with clients giving up past `timeout` seconds.
 */
export function fluidStep(q0: number, lambda: number, mu: number, dt: number, timeout: number): FluidStep {
  const cap = mu * timeout;
  let dropped = 0;
  let q = q0;
  if (q > cap) {
    // Capacity fell under the backlog: those now facing more than the timeout give up.
    dropped += q - cap;
    q = cap;
  }
  const arrivals = lambda * dt;
  if (mu <= 0) return { served: 0, dropped: dropped + arrivals, waitSeconds: 0, queued: 0, backlog: 0, backlogArea: 0 };

  if (lambda > mu) {
    const grow = lambda - mu;
    const tFull = (cap - q) / grow;
    if (tFull >= dt) {
      const q1 = q + grow * dt;
      const area = ((q + q1) / 2) * dt;
      return { served: mu * dt, dropped, waitSeconds: (lambda / mu) * area, queued: arrivals, backlog: q1, backlogArea: area };
    }
    // Full at tFull: from then on only μ of the λ arriving are admitted, each waiting the timeout.
    const areaBefore = ((q + cap) / 2) * tFull;
    const rest = dt - tFull;
    return {
      served: mu * dt,
      dropped: dropped + grow * rest,
      waitSeconds: (lambda / mu) * areaBefore + mu * rest * timeout,
      queued: lambda * tFull + mu * rest,
      backlog: cap,
      backlogArea: areaBefore + cap * rest,
    };
  }

  if (q <= 0) return { served: arrivals, dropped, waitSeconds: 0, queued: 0, backlog: 0, backlogArea: 0 };
  const drain = mu - lambda;
  const tEmpty = drain > 0 ? q / drain : Infinity;
  if (tEmpty >= dt) {
    const q1 = q - drain * dt;
    const area = ((q + q1) / 2) * dt;
    return { served: mu * dt, dropped, waitSeconds: (lambda / mu) * area, queued: arrivals, backlog: q1, backlogArea: area };
  }
  const area = (q / 2) * tEmpty;
  return { served: q + arrivals, dropped, waitSeconds: (lambda / mu) * area, queued: lambda * tEmpty, backlog: 0, backlogArea: area };
}

// ---------------------------------------------------------------------------------------------
// Erlang C: the waits below saturation

/**
 * Erlang's C formula: the probability that an arrival waits, for `c` servers offered `a`
 * erlangs (arrival rate / one server's rate), a < c. Through the Erlang B recursion, which is
 * stable for thousands of servers: B(0) = 1, B(k) = a·B(k-1) / (k + a·B(k-1)),
 * C = c·B / (c - a·(1 - B)). 1 when a ≥ c (everyone waits, and the wait grows without bound).
 */
export function erlangC(c: number, a: number): number {
  if (c <= 0) return 1;
  if (a <= 0) return 0;
  if (a >= c) return 1;
  let b = 1;
  for (let k = 1; k <= c; k++) b = (a * b) / (k + a * b);
  return (c * b) / (c - a * (1 - b));
}

/**
 * Mean wait in queue of an M/M/c queue (seconds): C(c, a) / (c·μ - λ), with `lambda` the
 * arrival rate and `muServer` one server's rate; Infinity at or beyond saturation.
 */
export function erlangWait(c: number, lambda: number, muServer: number): number {
  if (lambda <= 0) return 0;
  if (c <= 0 || muServer <= 0 || lambda >= c * muServer) return Infinity;
  return erlangC(c, lambda / muServer) / (c * muServer - lambda);
}
