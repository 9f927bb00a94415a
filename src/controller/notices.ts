/**
 * Tenant notices → the notifier (webhooks, e-mail), with every delivery attempt recorded in the
 * store (`drover tenants show` lists them). Webhook secrets are per app: `whsec_…` values made
 * on first use and kept in `<data-dir>/webhook-secrets.json` (0600), or the comma-separated
 * `DROVER_WEBHOOK_SECRETS` for every app (several for a rotation: one signature each).
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { createNotifier, generateWebhookSecret, smtpSettingsFromEnv, type Notifier, type NotifierOptions } from '../adapters/notify/index.js';
import type { Store } from '../adapters/store/index.js';
import type { Controller } from './controller.js';
import type { TenantNotice } from './tenants.js';

export class WebhookSecrets {
  private readonly file: string;
  private cache?: Record<string, string[]>;

  constructor(
    dataDir: string,
    private readonly fromEnv: readonly string[] | undefined,
  ) {
    this.file = join(dataDir, 'webhook-secrets.json');
  }

  /** The app's secrets, made (and kept) on first use. */
  for(app: string): readonly string[] {
    if (this.fromEnv?.length) return this.fromEnv;
    this.cache ??= existsSync(this.file) ? (JSON.parse(readFileSync(this.file, 'utf8')) as Record<string, string[]>) : {};
    const have = Object.hasOwn(this.cache, app) ? this.cache[app] : undefined;
    if (have?.length) return have;
    const made = [generateWebhookSecret()];
    this.cache[app] = made;
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.cache, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, this.file);
    return made;
  }
}

export interface NoticeWiring {
  readonly notifier: Notifier;
  close(): Promise<void>;
}

/** Connects the controller's tenant notices to a notifier; attempts go to the store. */
export function wireNotices(
  controller: Controller, store: Store, secrets: WebhookSecrets, logger: Logger, options: Partial<NotifierOptions> = {},
): NoticeWiring {
  const smtp = smtpSettingsFromEnv(process.env);
  // notification id → what the attempt rows need
  const meta = new Map<string, { tenantId: string; event: string; targets: { webhook?: string; email?: string } }>();
  const notifier = createNotifier({
    secretsFor: (app) => secrets.for(app),
    ...(smtp ? { smtp } : {}),
    logger,
    onAttempt: async (a) => {
      const m = meta.get(a.notificationId);
      if (!m) return;
      if (a.final) meta.delete(a.notificationId);
      await store.appendNotification({
        tenantId: m.tenantId,
        messageId: a.notificationId,
        kind: a.channel,
        event: m.event,
        target: (a.channel === 'webhook' ? m.targets.webhook : m.targets.email) ?? '',
        attempt: a.attempt,
        status: a.ok ? 'delivered' : a.final ? 'abandoned' : 'failed',
        response: a.status !== undefined ? `${a.status}${a.error ? `: ${a.error}` : ''}` : (a.error ?? null),
        at: a.at,
      });
    },
    ...options,
  });
  /**
   * After a restart: notifications whose last recorded attempt failed and was not the last of the
   * schedule are queued again, resuming the schedule where it stopped (the same id: receivers
   * de-duplicate on `webhook-id`). A notice lost between its event and its first attempt (a
   * crash within milliseconds) is not recovered.
   */
  const resume = async (): Promise<void> => {
    for (const t of await store.listTenants({})) {
      if (!t.callbackUrl && !t.email) continue;
      const byMessage = new Map<string, { event: string; attempts: Partial<Record<'webhook' | 'email', number>>; open: Set<'webhook' | 'email'> }>();
      for (const a of await store.listNotifications(t.id)) {
        const m = byMessage.get(a.messageId) ?? { event: a.event, attempts: {}, open: new Set<'webhook' | 'email'>() };
        m.attempts[a.kind] = Math.max(m.attempts[a.kind] ?? 0, a.attempt);
        if (a.status === 'failed') m.open.add(a.kind);
        else m.open.delete(a.kind);
        byMessage.set(a.messageId, m);
      }
      for (const [id, m] of byMessage) {
        if (m.open.size === 0) continue;
        const target = {
          ...(m.open.has('webhook') && t.callbackUrl ? { webhook: t.callbackUrl } : {}),
          ...(m.open.has('email') && t.email ? { email: t.email } : {}),
        };
        const kind = m.event as TenantNotice['kind'];
        meta.set(id, { tenantId: t.id, event: kind, targets: target });
        notifier.enqueue(
          { id, kind, at: Date.now(), app: t.app, tenant: { id: t.id, name: t.name, host: t.host ?? '', state: t.state, ...(t.instanceId ? { instance: t.instanceId } : {}), ...(t.reason ? { reason: t.reason } : {}) }, target },
          { previousAttempts: m.attempts },
        );
      }
    }
  };
  void resume().catch((err: unknown) => logger.warn({ err }, 'could not resume undelivered tenant notifications'));
  const onNotice = (n: TenantNotice): void => {
    const t = n.tenant;
    if (!t.callbackUrl && !t.email) return;
    const targets = { ...(t.callbackUrl ? { webhook: t.callbackUrl } : {}), ...(t.email ? { email: t.email } : {}) };
    const id = `ntf_${t.id}_${n.kind.replace('tenant.', '')}_${t.version}`;
    meta.set(id, { tenantId: t.id, event: n.kind, targets });
    notifier.enqueue({
      id, kind: n.kind, at: Date.now(), app: t.app,
      tenant: { id: t.id, name: t.name, host: t.host ?? '', state: t.state, ...(t.instanceId ? { instance: t.instanceId } : {}), ...(t.reason ? { reason: t.reason } : {}) },
      target: targets,
    });
  };
  controller.tenantNotices.on('notice', onNotice);
  return {
    notifier,
    close: async () => {
      controller.tenantNotices.off('notice', onNotice);
      await notifier.close();
    },
  };
}
