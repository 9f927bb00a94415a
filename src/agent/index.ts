/**
 * The agent: one per instance, carrying out the controller's orders for one role.
 *
 * ```ts
 * import { Agent } from './agent/index.js';
 *
 * const agent = new Agent({
 *   controllerUrl: 'http://127.0.0.1:7420',
 *   instanceId: 'i-1',
 *   key, // the instance key, shared with the controller; never sent
 *   epoch: 1,
 *   workdir: '/var/lib/drover/i-1',
 *   port: 8080,
 * });
 * const exit = await agent.run(); // until stopped ('terminated'), fenced ('refused') or shutdown()
 * ```
 *
 * As a process, `node dist/agent/main.js` reads the same settings from DROVER_* variables, and
 * the key from its stdin (never from the environment, which role processes can read).
 */
export { Agent, type AgentExit, type AgentOptions } from './runtime.js';
export type { AgentTransport, AgentTransportEvents, AgentTransportOptions } from './transport.js';
export { WsAgentTransport, type WsAgentTransportOptions } from './ws-transport.js';
export { AmqpAgentTransport, type AmqpAgentTransportOptions } from './amqp-transport.js';
export { agentOptionsFromEnv, AgentEnvError, readSecrets, type AgentSecrets } from './main.js';
export { NodeAgent, NODE_REFUSED, hostAddresses, type NodeAgentOptions, type NodeExit } from './node.js';
