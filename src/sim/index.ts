/**
 * The simulator: Drover's own policy (`evaluate`) and reconcile planner (`plan`) on a virtual
 * clock, against a simulated provider and agents, replaying a demand trace through a fluid
 * queue; and the comparison of Drover's policy with the classic ones on the same trace.
 *
 * @example
 * ```ts
 * import { runComparison, formatTable, renderSvg, loadTrace } from './sim/index.js';
 *
 * const report = runComparison({
 *   app: 'drover.yaml',            // its role with `scale:` policies is Drover's
 *   trace: loadTrace('traffic.csv'), // `period,count` or `time,rate`
 *   capacity: 25,                  // requests/s one instance serves
 *   boot: 'uniform:45s..90s',
 *   slo: 'wait:500ms',
 *   seed: 1,
 * });
 * console.log(formatTable(report));  // drover, threshold, hpa, aws, fixed, oracle
 * writeFileSync('plot.svg', renderSvg(report));
 * ```
 *
 * `simulateCommand` is `drover simulate`; `runComparisonParallel` spreads the runs over worker
 * threads; `simulate` is one run. docs/simulator.md describes the model and its choices.
 */

export {
  SIM_METRICS,
  simulate,
  needed,
  type Report,
  type Schedule,
  type Series,
  type SimulateOptions,
  type TenantPlacement,
} from './engine.js';

export {
  assembleComparison,
  comparisonRunOptions,
  comparisonRuns,
  forecastFor,
  formatTable,
  prepareComparison,
  runComparison,
  runComparisonRun,
  type ComparisonOptions,
  type ComparisonReport,
  type ComparisonRow,
  type DroverVariant,
  type SweepRun,
  type RunName,
  type TraceSummary,
} from './compare.js';

export { defaultThreads, runComparisonParallel, runJobs } from './parallel.js';

export {
  AWS_TARGET_TRACKING,
  BASELINES,
  fixedSchedule,
  HPA_DEFAULTS,
  neededPerTick,
  oracleSchedule,
  THRESHOLD_RULE,
  type BaselineName,
} from './baselines.js';

export { DEFAULT_KNOBS, defaultApp, defaultAppYaml, legacyApp, legacyAppYaml, type DefaultPolicyKnobs } from './default-app.js';

export { evalForecast, evaluateWithForecast, forecastPolicy, type CombinedState, type ForecastPolicy } from './forecast.js';

export { erlangC, erlangWait, fluidStep, type FluidStep } from './queue.js';

export { renderSvg } from './svg.js';

export {
  loadTrace,
  loadWorldCupTrace,
  parseTrace,
  rateAt,
  traceDurationMs,
  traceOf,
  worldCupTracePath,
  type Trace,
} from './trace.js';

export { FAMILY_DAYS, SYNTHETIC_FAMILIES, syntheticTrace, type SyntheticFamily, type SyntheticOptions } from './synthetic.js';

export {
  bootUpperMs,
  describeBoot,
  describeSlo,
  formatDuration,
  parseBoot,
  parseDuration,
  parseSlo,
  SimInputError,
  type BootDistribution,
  type Slo,
} from './units.js';

export { bootQuantileMs, CLOUD_BOOTS, cloudBoot, lognormalFrom, SIM_PROVIDERS, type CloudBoot, type SimProvider } from './clouds.js';

export { commandOptions, resolveTrace, simulateCommand, type CommandIo, type SimulateCommandOptions } from './command.js';

export { Rng } from './rng.js';
