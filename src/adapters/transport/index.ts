/**
 * Transports between controller and agents.
 *
 * ```ts
 * const transport = new EmbeddedTransport(handlers);
 * transport.register(fastifyApp); // agents connect to ws://host:port/v1/agent
 * ```
 */
export type * from './types.js';
export { EmbeddedTransport } from './embedded.js';
