/**
 * Controller side of a transport: carries orders to agents and their reports back. The embedded
 * transport accepts agents' WebSocket connections on the controller's own HTTP server; the amqp
 * transport does the same through RabbitMQ queues. Either way the handshake and the sealed
 * frames of core/auth.ts run end to end between the controller and each agent (session.ts), and
 * an agent is present only while its heartbeats arrive.
 */
import type { FastifyInstance } from 'fastify';
import type { AgentMessage, AgentStatus, ControllerMessage, Vitals } from '../../core/index.js';

export type JoinMessage = Extract<AgentMessage, { type: 'join' }>;

export interface TransportHandlers {
  /**
   * The per-instance key the agent must prove it holds, or undefined for an instance the
   * controller does not know (the agent is told so without proof, and does not obey that).
   */
  keyFor(instanceId: string): Promise<string | undefined>;
  /**
   * The agent proved its identity: decide whether it may serve. A refusal is sent sealed, so the
   * agent knows it comes from its controller, stops its role and exits.
   */
  onJoin(instanceId: string, epoch: number, msg: JoinMessage): Promise<{ accept: true } | { accept: false; reason: string }>;
  onStatus(instanceId: string, status: AgentStatus, vitals: Vitals | undefined): Promise<void>;
  /** The agent is connected and accepted (after its join's status was handled): re-send what it has not acknowledged. */
  onConnect(instanceId: string): Promise<void>;
  onAck(instanceId: string, orderId: string): Promise<void>;
  onLog(instanceId: string, lines: readonly string[]): void;
  onDisconnect(instanceId: string): void;
  /** The epoch of the leader lease this controller acts under, stamped on every sealed message. Absent: 0. */
  leaderEpoch?(): number;
  /** Something an agent connection did that deserves an operator's attention (a forged frame, a refused hello). */
  onSuspicious?(what: { instanceId: string | null; reason: string; remote: string | undefined }): void;
}

export interface ControllerTransport {
  readonly name: string;
  /**
   * A transport that agents reach through the controller's own HTTP server mounts its routes
   * here (the embedded one: `/v1/agent`); called once, before the server listens.
   */
  register?(app: FastifyInstance): Promise<void>;
  /**
   * Makes what an instance needs on this transport before its agent starts (the amqp transport:
   * its queue and its own broker user) and returns the URL its agent connects with, a secret to
   * hand over privately like the instance key; undefined when the agent needs nothing (embedded).
   */
  provision?(instanceId: string): Promise<string | undefined>;
  /**
   * From when the transport could hear agents: while its carrier (a broker) is away it hears no
   * one, and after it is back agents need time to reconnect. The controller does not count
   * silence before this as an agent's (ms epoch; may be in the future). Absent: always hearing.
   */
  hearingSince?(): number;
  /** Removes what {@link provision} made, once the instance is destroyed. Idempotent. */
  deprovision?(instanceId: string): Promise<void>;
  /** Sends if the agent is present; returns false if not (the order stays pending and is re-sent). */
  send(instanceId: string, msg: ControllerMessage): boolean;
  /** The agent is present: joined, and heard within three heartbeats (presence comes from heartbeats, not from a socket). */
  isConnected(instanceId: string): boolean;
  /**
   * Resolves once what the instance's agent sent before it went is handled (its last lines and
   * final status), at most `withinMs` later: the embedded transport waits for the connection to
   * close and its frames to be handled; the amqp one for the frames it has already received.
   * The controller calls it before judging an agent process's exit. Absent: nothing to wait for.
   */
  settle?(instanceId: string, withinMs: number): Promise<void>;
  /** Refuses and disconnects an agent (fencing). */
  fence(instanceId: string, reason: string): void;
  /** The present agents. */
  connected(): string[];
  close(): Promise<void>;
}
