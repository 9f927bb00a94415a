/**
 * A forecaster for a role's request rate that does not chase noise: seasonal (a daily profile
 * in 5-minute bins, optionally a day-of-week offset) plus a damped trend, on the log of the
 * per-minute rate, with every update clipped to a few robust deviations so one outlier minute
 * moves nothing much. It keeps score of itself against the naive forecast ("the rate stays
 * where it is") on the minutes it predicted, and says it is {@link trusted} only while it has
 * recently been the better of the two.
 *
 * Pure and plain JSON: the state goes into the policy state the controller stores.
 */

export const MINUTE_MS = 60_000;
const DAY_MIN = 1440;
/** Minutes per bin of the daily profile: 288 bins a day keep the state small. */
export const SEASON_BIN_MIN = 5;
const BINS = DAY_MIN / SEASON_BIN_MIN;

export interface ForecastOptions {
  /** Learn a daily profile. @default true */
  readonly daily: boolean;
  /** Learn a day-of-week offset on top of the daily profile. @default true */
  readonly weekly: boolean;
  /** Forecast error / naive error must stay below this to be trusted. @default 0.9 */
  readonly trustRatio: number;
}

export const FORECAST_DEFAULTS: ForecastOptions = { daily: true, weekly: true, trustRatio: 0.9 };

/** Plain JSON. Log rates are log(1 + rate). */
export interface ForecastState {
  /** Minutes observed. */
  readonly n: number;
  /** Deseasonalised level (log). */
  readonly level: number;
  /** Per minute (log), damped. */
  readonly trend: number;
  /** EWMA of the absolute residual: the scale outliers are clipped to. */
  readonly mad: number;
  /** Daily profile, log offsets per 5-minute bin; empty until enabled. */
  readonly day: readonly number[];
  /** Day-of-week offsets (log), Monday... by epoch day modulo 7. */
  readonly week: readonly number[];
  /** Forecasts waiting for their minute: [target minute, predicted log, log at issue]. */
  readonly pending: readonly (readonly [number, number, number])[];
  /** EWMA absolute log error of this forecaster and of the naive one on the same minutes. */
  readonly err: number;
  readonly errNaive: number;
  /** Scored minutes (the EWMAs' weight). */
  readonly scored: number;
}

export const EMPTY_FORECAST: ForecastState = {
  n: 0,
  level: 0,
  trend: 0,
  mad: 0.1,
  day: [],
  week: [],
  pending: [],
  err: 0,
  errNaive: 0,
  scored: 0,
};

const ALPHA = 0.3; // level, per minute: a few minutes of memory
const BETA = 0.02; // trend
const PHI = 0.97; // trend damping per minute
const GAMMA = 0.1; // daily bin, per update (5 per bin per day): a few days of memory
const GAMMA_WEEK = 0.0005; // day-of-week, per minute: a few weeks of memory
const CLIP = 3; // residuals clipped to this many robust deviations
const SCORE = 1 / 240; // error EWMA: about 4 hours of minutes

const dayBin = (minute: number) => Math.floor((((minute % DAY_MIN) + DAY_MIN) % DAY_MIN) / SEASON_BIN_MIN);
const weekDay = (minute: number) => ((Math.floor(minute / DAY_MIN) % 7) + 7) % 7;

function seasonal(s: ForecastState, minute: number): number {
  return (s.day[dayBin(minute)] ?? 0) + (s.week[weekDay(minute)] ?? 0);
}

/** The predicted log(1 + rate) at `minute + ahead`, made at `minute`. */
export function predictLog(s: ForecastState, minute: number, ahead: number): number {
  let damp = 0;
  let f = 1;
  for (let k = 1; k <= ahead; k++) {
    f *= PHI;
    damp += f;
  }
  return s.level + s.trend * damp + seasonal(s, minute + ahead);
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
  // Score the forecasts made for this minute.
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

  if (s.n === 0) {
    const day = o.daily ? new Array<number>(BINS).fill(0) : [];
    const week = o.weekly ? new Array<number>(7).fill(0) : [];
    const first: ForecastState = { ...EMPTY_FORECAST, n: 1, level: y, day, week };
    return { ...first, pending: [[minute + ahead, predictLog(first, minute, ahead), y]] };
  }

  const season = seasonal(s, minute);
  const expected = s.level + s.trend + season;
  const scale = Math.max(0.02, s.mad);
  const e = Math.max(-CLIP * scale, Math.min(CLIP * scale, y - expected));
  const mad = s.mad + 0.02 * (Math.abs(y - expected) > CLIP * scale ? CLIP * scale : Math.abs(y - expected) - s.mad);
  const level = s.level + s.trend + ALPHA * e;
  const trend = PHI * (s.trend + BETA * ALPHA * e);
  // The seasonal share of what the level did not absorb; the profile learns only after a day
  // of level, so the first day's shape is not mistaken for noise.
  const yc = expected + e;
  let day = s.day;
  let week = s.week;
  if (o.daily && s.day.length === BINS && s.n >= 60) {
    const b = dayBin(minute);
    const next = day.slice();
    next[b] = (day[b] ?? 0) + GAMMA * (yc - level - (week[weekDay(minute)] ?? 0) - (day[b] ?? 0));
    day = next;
  }
  if (o.weekly && s.week.length === 7 && s.n >= DAY_MIN) {
    const d = weekDay(minute);
    const next = week.slice();
    next[d] = (week[d] ?? 0) + GAMMA_WEEK * (yc - level - (day[dayBin(minute)] ?? 0) - (week[d] ?? 0));
    week = next;
  }
  const out: ForecastState = { n: s.n + 1, level, trend, mad, day, week, pending, err, errNaive, scored };
  pending.push([minute + ahead, predictLog(out, minute, ahead), y]);
  return out;
}

/** Recently better than "stays where it is", on enough scored minutes (an hour). */
export function trusted(s: ForecastState, o: ForecastOptions = FORECAST_DEFAULTS): boolean {
  return s.scored >= 60 && s.err < o.trustRatio * s.errNaive;
}
