/**
 * The controller: REST API, reconciler, agent reports.
 *
 * ```ts
 * const c = await startServer({ dataDir: '.drover', port: 7420 });
 * // PUT /v1/apps/shop with the app file; agents connect to /v1/agent
 * await c.close();
 * ```
 */
export { startServer, loadOrCreateToken, DEFAULT_PORT, type ServerOptions, type RunningController, type ControllerInfo } from './server.js';
export { Controller, type ControllerOptions, type InstanceView } from './controller.js';
export { buildApi, instanceJson, eventJson, type ApiOptions } from './api.js';
export { ApiError, ERROR_CODES, type ErrorCode, type ErrorBody } from './errors.js';
export { Runner, TerminalError, type ReconcileResult } from './runner.js';
export { VERSION } from './version.js';
export { ControllerStartError, preparePrivateDataDir, privateUmask, type StartErrorCode } from './datadir.js';
export { acquireLock, lockHolder, LockHeldError, type DataDirLock, type LockHolder } from './lock.js';
export { DEFAULT_RETENTION, type RetentionOptions, type PruneResult } from './retention.js';
export { cloudInitUserData, instanceJoinToken, readBootPlan, BOOT_PATHS, type BootPlan, type UserDataInput } from './bootstrap.js';
export { consoleLogger } from './console-log.js';
