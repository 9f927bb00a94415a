/**
 * A forecaster for a role's request rate that does not chase noise: the rate moves from now as
 * it moved at this time of day before. It keeps a daily profile of the log of the per-minute
 * rate (one value per minute of the day, an average over past days) plus a day-of-week offset,
 * and predicts `rate now × profile(then) / profile(now)`: a seasonal ratio on a naive base, so
 * a level or trend the profile has not seen carries over from now, and the profile only adds
 * the shape days repeat (a morning rise, bursts on the clock). Profile updates are clipped to a
 * few robust deviations so one outlier day moves it little.
 *
 * It keeps score of itself against the naive forecast ("the rate stays where it is") on the
 * minutes it predicted, and is {@link trusted} only while it has recently been the better of
 * the two by a margin. Pure and plain JSON: the state goes into the policy state the controller
 * stores (about 1,450 numbers).
 */

export const MINUTE_MS = 60_000;
const DAY_MIN = 1440;

export interface ForecastOptions {
  /** Learn a day-of-week offset on top of the daily profile. @default true */
  readonly weekly: boolean;
  /** Forecast error / naive error must stay below this to be trusted. @default 0.9 */
  readonly trustRatio: number;
}

export const FORECAST_DEFAULTS: ForecastOptions = { weekly: true, trustRatio: 0.9 };

/** Plain JSON. Log rates are log(1 + rate). */
export interface ForecastState {
  /** Minutes observed. */
  readonly n: number;
  /** The last observed minute and its log rate. */
  readonly minute: number;
  readonly last: number;
  /** Daily profile (log), one per minute of the day; NaN-free, `seen` says which are learned. */
  readonly day: readonly number[];
  /** Days each minute of the profile has been seen (capped). */
  readonly seen: readonly number[];
  /** Day-of-week offsets (log), by epoch day modulo 7. */
  readonly week: readonly number[];
  /** EWMA of the absolute deviation from the profile: the scale updates are clipped to. */
  readonly mad: number;
  /** Forecasts waiting for their minute: [target minute, predicted log, log at issue]. */
  readonly pending: readonly (readonly [number, number, number])[];
  /** EWMA absolute log error of this forecaster and of the naive one on the same minutes. */
  readonly err: number;
  readonly errNaive: number;
  /** Scored minutes. */
  readonly scored: number;
}

export const EMPTY_FORECAST: ForecastState = {
  n: 0,
  minute: 0,
  last: 0,
  day: [],
  seen: [],
  week: [],
  mad: 0.1,
  pending: [],
  err: 0,
  errNaive: 0,
  scored: 0,
};

const GAMMA = 0.4; // profile, per day: a few days of memory
const GAMMA_WEEK = 0.001; // day-of-week, per minute: about two weeks of memory
const CLIP = 3; // updates clipped to this many robust deviations
const SCORE = 1 / 240; // error EWMA: about 4 hours of minutes

const minuteOfDay = (m: number) => ((m % DAY_MIN) + DAY_MIN) % DAY_MIN;
const weekDay = (m: number) => ((Math.floor(m / DAY_MIN) % 7) + 7) % 7;

function profile(s: ForecastState, m: number): number | undefined {
  const k = minuteOfDay(m);
  if ((s.seen[k] ?? 0) === 0) return undefined;
  return (s.day[k] ?? 0) + (s.week[weekDay(m)] ?? 0);
}

/** The predicted log(1 + rate) at `minute + ahead`, from the last observed minute. */
export function predictLog(s: ForecastState, minute: number, ahead: number): number {
  const now = profile(s, minute);
  const then = profile(s, minute + ahead);
  return now === undefined || then === undefined ? s.last : s.last + then - now;
}

/** Requests/s predicted `ahead` minutes after `minute`. */
export function predictRate(s: ForecastState, minute: number, ahead: number): number {
  return Math.max(0, Math.expm1(predictLog(s, minute, ahead)));
}

/**
 * The state after minute `minute` closed with mean rate `rate`; `ahead` is the horizon (in
 * minutes) this minute's forecast is scored at.
 */
export function observeMinute(s: ForecastState, minute: number, rate: number, ahead: number, o: ForecastOptions = FORECAST_DEFAULTS): ForecastState {
  const y = Math.log1p(Math.max(0, rate));
  let err = s.err;
  let errNaive = s.errNaive;
  let scored = s.scored;
  const pending: (readonly [number, number, number])[] = [];
  for (const p of s.pending) {
    if (p[0] === minute) {
      err += SCORE * (Math.abs(y - p[1]) - err);
      errNaive += SCORE * (Math.abs(y - p[2]) - errNaive);
      scored++;
    } else if (p[0] > minute) pending.push(p);
  }

  const k = minuteOfDay(minute);
  const day = s.day.length === DAY_MIN ? s.day.slice() : new Array<number>(DAY_MIN).fill(0);
  const seen = s.seen.length === DAY_MIN ? s.seen.slice() : new Array<number>(DAY_MIN).fill(0);
  let week = o.weekly ? (s.week.length === 7 ? s.week : new Array<number>(7).fill(0)) : [];
  const wk = week[weekDay(minute)] ?? 0;
  let mad = s.mad;
  if ((seen[k] ?? 0) === 0) day[k] = y - wk;
  else {
    const dev = y - wk - (day[k] ?? 0);
    const scale = Math.max(0.02, mad);
    const clipped = Math.max(-CLIP * scale, Math.min(CLIP * scale, dev));
    mad += 0.01 * (Math.min(Math.abs(dev), CLIP * scale) - mad);
    day[k] = (day[k] ?? 0) + Math.max(GAMMA, 1 / ((seen[k] ?? 0) + 1)) * clipped;
    if (o.weekly && s.n >= DAY_MIN) {
      const d = weekDay(minute);
      const next = week.slice();
      next[d] = (week[d] ?? 0) + GAMMA_WEEK * clipped;
      week = next;
    }
  }
  seen[k] = Math.min(100, (seen[k] ?? 0) + 1);
  const out: ForecastState = { n: s.n + 1, minute, last: y, day, seen, week, mad, pending, err, errNaive, scored };
  pending.push([minute + ahead, predictLog(out, minute, ahead), y]);
  return out;
}

/** Recently better than "stays where it is" by the margin, on enough scored minutes (an hour). */
export function trusted(s: ForecastState, o: ForecastOptions = FORECAST_DEFAULTS): boolean {
  return s.scored >= 60 && s.err < o.trustRatio * s.errNaive;
}
