/**
 * Transports between controller and agents (the controller's side; the agent's is in src/agent).
 *
 * ```ts
 * const transport = new EmbeddedTransport(handlers, heartbeatMs);
 * await transport.register(fastifyApp); // agents connect to ws://host:port/v1/agent
 *
 * const amqp = new AmqpTransport(handlers, heartbeatMs, { url: 'amqp://drover:…@mq:5672/drover' });
 * await amqp.start(); // keeps reconnecting in the background
 * const agentUrl = await amqp.provision('i-1'); // the agent's own broker user: hand it over privately
 * ```
 *
 * Every transport runs the same handshake and sealed frames (session.ts) and passes the same
 * conformance suite (test/transport-suite.ts).
 */
export type * from './types.js';
export { AmqpTransport, AmqpTransportError, parseAmqpUrl, redactUrl, type AmqpTransportOptions } from './amqp.js';
export { CLOSE, EmbeddedTransport } from './embedded.js';
export { presenceWindowMs } from './session.js';
export { withTransportProvisioning } from './provisioning.js';
