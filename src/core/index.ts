/**
 * Drover's pure core: the app model, import resolution, states, templates and the wire protocol.
 * No I/O and no wall clock here; everything is a function of its arguments (and a `Clock`).
 *
 * @example
 * ```ts
 * import { parseAppFile, startOrder, resolveImports, importsVersion, SpecError } from './core/index.js';
 *
 * try {
 *   const spec = parseAppFile(await readFile('drover.yaml', 'utf8'));
 *   startOrder(spec); // [['db'], ['api'], ['lb']]
 *   const { imports, missing } = resolveImports(spec.roles.api!, { db: [{ instance: 'i-1', exports: { url: 'http://10.0.0.7:5432' } }] });
 *   if (missing.length === 0) send({ imports, importsVersion: importsVersion(imports) });
 * } catch (e) {
 *   if (e instanceof SpecError) console.error(e.message); // one `path: reason` per line
 *   else throw e;
 * }
 * ```
 *
 * Other folders import from here only; each block below names one module's public part.
 */

export type {
  AppSpec,
  HealthSpec,
  PlacementSpec,
  TenantsSpec,
  ImportedMember,
  ImportRef,
  LoadBalancerSpec,
  ResolvedImports,
  RoleSpec,
} from './types.js';

export { AGENT_TRANSITIONS, ALL_STATES, canReport, InstanceState, isLive, isTerminal, LIVE_STATES } from './states.js';

export { EVENT_KINDS, EventKind, isEventKind, SCALING_EVENT_KINDS } from './events.js';

export { decide, decideSizes, policyInstances, scaleInHoldMs, type DecideInput, type DecideOutput, type RoleSizing, type SizeChange } from './decide.js';

export { ManualClock, systemClock, type Clock } from './clock.js';

export {
  holdsSeat,
  hostTemplateProblem,
  isHostName,
  isTenantName,
  SEAT_HOLDING_STATES,
  TENANT_NAME_RULE,
  TENANT_STATES,
  tenantHost,
  tenantRetryDelayMs,
  TenantState,
} from './tenants.js';

export {
  BUILTIN_VARS,
  envName,
  importEnv,
  importValue,
  isBuiltin,
  renderTemplate,
  templateRefs,
  type BuiltinValues,
  type BuiltinVar,
  type TemplateRef,
} from './template.js';

export {
  PROTOCOL_VERSION,
  type AgentMessage,
  type AgentStatus,
  type BalancerStatus,
  type Assignment,
  type ControllerMessage,
  type LastExit,
  type Order,
  type OrderKind,
  type Vitals,
  type TenantPhase,
  type TenantRef,
  type TenantReport,
  type HelloMessage,
  type PlainControllerMessage,
  type SealedControllerMessage,
  WIRE_LIMITS,
} from './protocol.js';

export { BUNDLE_CLOCK_SKEW_MS, BUNDLE_HEADERS, bundleProof, bundleRequestHeaders, checkBundleProof, SHA256_HEX, type BundleProofParams, type BundleRef } from './bundle.js';
export { apiProof, checkApiProof, checkControllerProof, controllerProof, NONCE_BYTES, SealedChannel, type FrameError, type HandshakeParams } from './auth.js';

export {
  addressSchema, boxKey, boxOpen, boxSeal, checkJoinProof, JOIN_TOKEN_RE, joinBoxSchema, joinProof, joinProofSchema, joinTokenId, labelsSchema, newJoinToken,
  NODE_PROTOCOL, nodeHelloSchema, nodeMessageSchema, nodeOrderSchema, nodePlainSchema, startBoxSchema, tokenHash,
  type JoinParams, type NodeHello, type NodeMessage, type NodeOrder, type NodePlainMessage,
} from './fleet.js';

export { exportsUseImports, listenTarget, renderCommand, renderExports, roleBuiltins, roleWorkdir } from './render.js';
export { extraAutoPorts, firstPort, fixedPortsOf, MAX_PORTS, MAX_VOLUMES, resolvePorts, slotName, type ListenSpec, type PortValue } from './ports.js';

export {
  AMQP_NAMES,
  agentMessageSchema,
  controllerMessageSchema,
  fitLines,
  helloSchema,
  orderSchema,
  parseAgentMessage,
  parseControllerMessage,
  parseHello,
  parsePlainControllerMessage,
  truncate,
} from './wire.js';

export { appFileJsonSchema, appFileSchema, appFileWarnings, compileAppSpec, parseAppFile, SpecError, type SpecIssue } from './spec.js';

export { APP_FILE_LIMITS, own, shapeIssues } from './limits.js';

export {
  dependents,
  findCycle,
  importsVersion,
  requiredDeps,
  resolveImports,
  satisfied,
  startOrder,
  stopOrder,
} from './imports.js';

export {
  DEFAULT_PLANNER_OPTIONS,
  failureBackoff,
  plan,
  rankVictims,
  recentFailures,
  roleHash,
  victimWhy,
  type InstanceGoal,
  type RecentFailures,
  type Plan,
  type PlanAction,
  type PlanInput,
  type PlanInstance,
  type PlannerOptions,
  type RoleSummary,
} from './planner.js';

export {
  BALANCER_METRICS,
  balancerRates,
  BUILTIN_METRICS,
  DEFAULT_HORIZON_MS,
  instantStats,
  isBalancerMetric,
  isBuiltinMetric,
  MetricStore,
  parseJsonPath,
  parsePrometheusSelector,
  parsePrometheusText,
  pickJson,
  pickPrometheus,
  samplesFromVitals,
  statOf,
  stats,
  statsOfValues,
  type BalancerMemberCount,
  type BalancerMetric,
  type BalancerReading,
  type BuiltinMetric,
  type JsonPath,
  type MetricStoreOptions,
  type PromSample,
  type PromSelector,
  type Sample,
  type StatName,
  type Stats,
  type WindowOptions,
} from './metrics.js';

export {
  DEFAULT_LOOKBACK_MS,
  EMPTY_POLICY_STATE,
  evaluate,
  historyNeededMs,
  learnedCapacities,
  POLICY_DEFAULTS,
  queuePolicy,
  recordAction,
  targetPolicy,
  thresholdPolicy,
  type Decision,
  type Policy,
  type PolicyContext,
  type PolicyKind,
  type PolicyOutcome,
  type PolicyState,
  type QueuePolicy,
  type RateLimit,
  type Recommendation,
  type ScaleEvent,
  type TargetPolicy,
  type ThresholdPolicy,
} from './policy.js';

export {
  checkPolicyMetrics,
  compileMetrics,
  compileScale,
  metricsSchema,
  scaleSchema,
  type MetricsInput,
  type MetricSource,
  type ScaleInput,
} from './policy-spec.js';

export {
  chooseHost,
  consolidationPlan,
  describeConstraints,
  missingLabels,
  placeTenants,
  seatAvailability,
  type ConsolidationPlan,
  type ConsolidationTenant,
  type HostCandidate,
  type HostChoice,
  type HostChoiceInput,
  type HostConstraints,
  type PendingTenant,
  type Placement,
  type PlacementInput,
  type PlacementInstance,
  type PlacementPlan,
  type SeatAvailability,
  type TenantMove,
  type WaitingTenant,
} from './placement.js';

export { MAX_TENANT_CAPACITY } from './spec.js';
export { BILLING, BILLING_WORDS, billingOf, paidLeftText, paidSecondsLeft, parseBilling, type Billing } from './billing.js';
export {
  providerKindOf,
  providerSettingsOf,
  providerSettingsSchema,
  RESERVED_TAG_PREFIX,
  type Ec2ProviderSettings,
  type LocalProviderSettings,
  type OpenStackProviderSettings,
  type ProviderKind,
  type ProviderSettings,
} from './provider-settings.js';

export {
  balancedRoles,
  DEFAULT_KNOBS,
  DEFAULT_POLICY_METRICS,
  defaultRequestPolicies,
  defaultScaleEntries,
  type DefaultPolicyKnobs,
} from './default-policy.js';
