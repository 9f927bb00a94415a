/**
 * Simulated agents for bench:transport's heartbeat run, in a process of their own so that the
 * controller's process measures only the controller. Each line on stdin is an instance to run
 * (`{"id","key","epoch","url"}`) or to stop (`{"stop":"id"}`). An agent here is the real agent
 * transport (WebSocket, handshake, sealed frames) answering like an agent: it acknowledges
 * orders, reports `serving` once assigned, and sends its status every heartbeat with vitals.
 */
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import type { AgentStatus, SealedControllerMessage } from '../src/core/index.js';
import { WsAgentTransport } from '../src/agent/index.js';

const logger = pino({ level: 'silent' });
const agents = new Map<string, { close: () => Promise<void> }>();

function run(id: string, key: string, epoch: number, url: string): void {
  let status: AgentStatus = { state: 'spare', restarts: 0 };
  let beat: NodeJS.Timeout | undefined;
  const link = new WsAgentTransport({ instanceId: id, key, epoch, logger, controllerUrl: url, reconnectMinMs: 200, reconnectMaxMs: 2000 });
  const vitals = () => ({ at: Date.now(), loadavg: [0.1, 0.1, 0.1] as [number, number, number], cpu: 0.01, memUsedBytes: 1e9, memTotalBytes: 8e9, role: { cpu: 0.01, rssBytes: 3e7, pids: 1, connections: 2 } });
  link.start({
    join: () => ({ type: 'join', pid: process.pid, status, applied: [] }),
    message: (m: SealedControllerMessage) => {
      if (m.type === 'welcome') {
        clearInterval(beat);
        beat = setInterval(() => void link.send({ type: 'status', status, vitals: vitals() }), m.heartbeatMs);
        return;
      }
      if (m.type !== 'order') return;
      const o = m.order;
      if (o.kind === 'assign') status = { state: 'serving', role: o.assignment.role.name, importsVersion: o.assignment.importsVersion, restarts: 0, exports: {}, servingSince: Date.now() };
      else if (o.kind === 'imports') status = { ...status, importsVersion: o.importsVersion };
      else if (o.kind === 'stop') status = { ...status, state: 'terminated' };
      void link.send({ type: 'ack', orderId: o.id }).then(() => link.send({ type: 'status', status }));
    },
    down: () => undefined,
  });
  agents.set(id, { close: async () => { clearInterval(beat); await link.close('stopped'); } });
}

for await (const line of createInterface({ input: process.stdin })) {
  const m = JSON.parse(line) as { id: string; key: string; epoch: number; url: string } | { stop: string };
  if ('stop' in m) {
    await agents.get(m.stop)?.close();
    agents.delete(m.stop);
  } else run(m.id, m.key, m.epoch, m.url);
}
for (const a of agents.values()) await a.close();
