/**
 * Controller side of a transport: carries orders to agents and their reports back. The embedded
 * transport accepts agents' WebSocket connections on the controller's own HTTP server; an AMQP
 * transport would do the same through RabbitMQ queues.
 */
import type { AgentMessage, AgentStatus, ControllerMessage, Vitals } from '../../core/index.js';

export type HelloMessage = Extract<AgentMessage, { type: 'hello' }>;

export interface TransportHandlers {
  /** Decide whether an agent may join; a refusal is sent to the agent, which stops and exits. */
  onHello(msg: HelloMessage): Promise<{ accept: true } | { accept: false; reason: string }>;
  onStatus(instanceId: string, status: AgentStatus, vitals: Vitals | undefined): Promise<void>;
  /** The agent is connected and accepted (after its hello's status was handled): re-send what it has not acknowledged. */
  onConnect(instanceId: string): Promise<void>;
  onAck(instanceId: string, orderId: string): Promise<void>;
  onLog(instanceId: string, lines: readonly string[]): void;
  onDisconnect(instanceId: string): void;
}

export interface ControllerTransport {
  readonly name: string;
  /** Sends if the agent is connected; returns false if not (the order stays pending and is re-sent). */
  send(instanceId: string, msg: ControllerMessage): boolean;
  isConnected(instanceId: string): boolean;
  /** Refuses and disconnects an agent (fencing). */
  fence(instanceId: string, reason: string): void;
  connected(): string[];
  close(): Promise<void>;
}
