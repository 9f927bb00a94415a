// The transport conformance suite against the embedded transport: agents' WebSockets to the
// controller's own HTTP server (a Fastify app on a free loopback port).
import Fastify, { type FastifyInstance } from 'fastify';
import { EmbeddedTransport, type ControllerTransport } from '../src/adapters/transport/index.js';
import { WsAgentTransport } from '../src/agent/index.js';
import { transportConformance } from './transport-suite.js';

const servers = new WeakMap<ControllerTransport, { app: FastifyInstance; url: string }>();

transportConformance({
  name: 'embedded',
  closeIsSeen: true,
  async controller(handlers, heartbeatMs) {
    const transport = new EmbeddedTransport(handlers, heartbeatMs);
    const app = Fastify();
    await transport.register(app);
    await app.listen({ host: '127.0.0.1', port: 0 });
    const addr = app.server.address();
    const url = `http://127.0.0.1:${addr && typeof addr === 'object' ? addr.port : 0}`;
    servers.set(transport, { app, url });
    const close = transport.close.bind(transport);
    transport.close = async () => {
      await close();
      await app.close();
    };
    return transport;
  },
  agent(transport, opts) {
    return new WsAgentTransport({ ...opts, controllerUrl: servers.get(transport)!.url });
  },
  async interrupt(transport) {
    for (const c of servers.get(transport)!.app.websocketServer.clients) c.terminate();
  },
});
