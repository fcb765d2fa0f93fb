/**
 * Delivers notifications to the MDM server's `notificationUrl` with `Authorization: Bearer
 * <notificationAuthToken>`: a 2xx answer is a delivery; anything else is retried with exponential
 * backoff, with the same notificationId, up to `maxAttempts`. The queue lives in memory (and in the
 * state file when the service has one); `pause()` and `resume()` follow the service's stop and start.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import type { Logger } from 'pino';
import type { NotificationPayload, NotificationType, PendingNotification } from './model.ts';

export interface RetryPolicy {
  /** total attempts per notification, the first included */
  maxAttempts: number;
  initialDelayMs: number;
  factor: number;
  maxDelayMs: number;
}

export interface NotificationTarget {
  url: string;
  authToken: string;
  types: readonly string[];
  uId: string;
}

export interface DeliveryAttempt {
  at: number;
  /** HTTP status, when an answer came */
  status?: number;
  error?: string;
}

export type NotificationState = 'pending' | 'delivered' | 'failed' | 'dropped';

export interface NotificationLogEntry {
  notificationId: string;
  notificationType: NotificationType;
  uId: string;
  url?: string;
  state: NotificationState;
  attempts: DeliveryAttempt[];
  payload: NotificationPayload;
}

export interface NotifierStats {
  queued: number;
  delivered: number;
  failed: number;
  dropped: number;
  /** not sent: the location has no notification URL or did not subscribe to the type */
  unsubscribed: number;
  attempts: number;
  pending: number;
}

export interface PostResult {
  ok: boolean;
  status?: number;
  error?: string;
}

interface Entry {
  pending: PendingNotification;
  log: NotificationLogEntry;
  timer: NodeJS.Timeout | null;
  inFlight: boolean;
}

const LOG_LIMIT = 5000;

export class Notifier {
  private readonly entries = new Map<string, Entry>();
  private readonly log: NotificationLogEntry[] = [];
  private readonly counters = {
    queued: 0,
    delivered: 0,
    failed: 0,
    dropped: 0,
    unsubscribed: 0,
    attempts: 0,
  };
  private drop: number | 'all' | 0 = 0;
  private paused = true;
  private readonly ca: string[] | undefined;

  constructor(
    private readonly opts: {
      retry: RetryPolicy;
      timeoutMs: number;
      caPems?: string[];
      logger: Logger;
      now: () => number;
      /** the location's current notification settings, or null when it has none */
      target: (locationToken: string) => NotificationTarget | null;
      /** called whenever the queue changes (the service persists it) */
      onChange: () => void;
    },
  ) {
    this.ca = opts.caPems && opts.caPems.length > 0 ? [...rootCertificates, ...opts.caPems] : undefined;
  }

  /** Queues a notification for a location; returns its id, or null when the location is not subscribed. */
  enqueue(
    locationToken: string,
    notificationType: NotificationType,
    notification: Record<string, unknown>,
  ): string | null {
    const target = this.opts.target(locationToken);
    if (!target || !target.types.includes(notificationType)) {
      this.counters.unsubscribed += 1;
      return null;
    }
    const payload: NotificationPayload = {
      notificationId: randomUUID(),
      notificationType,
      uId: target.uId,
      notification,
    };
    const log: NotificationLogEntry = {
      notificationId: payload.notificationId,
      notificationType,
      uId: target.uId,
      url: target.url,
      state: 'pending',
      attempts: [],
      payload,
    };
    this.remember(log);
    this.counters.queued += 1;
    if (this.drop === 'all' || this.drop > 0) {
      if (typeof this.drop === 'number') this.drop -= 1;
      log.state = 'dropped';
      this.counters.dropped += 1;
      this.opts.logger.info(
        { notificationId: payload.notificationId, notificationType },
        'notification dropped',
      );
      return payload.notificationId;
    }
    const pending: PendingNotification = { locationToken, payload, attempts: 0, createdAt: this.opts.now() };
    this.entries.set(payload.notificationId, { pending, log, timer: null, inFlight: false });
    this.schedule(payload.notificationId, 0);
    this.opts.onChange();
    return payload.notificationId;
  }

  /** Drops the next `n` notifications (`true`: all until reset; `false`/0: none). */
  setDrop(n: number | boolean): void {
    this.drop = n === true ? 'all' : n === false ? 0 : Math.max(0, Math.floor(n));
  }

  dropSetting(): number | 'all' {
    return this.drop;
  }

  pause(): void {
    this.paused = true;
    for (const e of this.entries.values()) {
      if (e.timer) clearTimeout(e.timer);
      e.timer = null;
    }
  }

  resume(): void {
    this.paused = false;
    for (const [id, e] of this.entries) if (!e.inFlight && !e.timer) this.schedule(id, 0);
  }

  /** Restores a persisted queue (before `resume`). */
  restore(items: PendingNotification[]): void {
    for (const pending of items) {
      const log: NotificationLogEntry = {
        notificationId: pending.payload.notificationId,
        notificationType: pending.payload.notificationType,
        uId: pending.payload.uId,
        state: 'pending',
        attempts: [],
        payload: pending.payload,
      };
      this.remember(log);
      this.entries.set(pending.payload.notificationId, { pending, log, timer: null, inFlight: false });
    }
  }

  pendingItems(): PendingNotification[] {
    return [...this.entries.values()].map((e) => e.pending);
  }

  history(): NotificationLogEntry[] {
    return this.log.map((l) => ({ ...l, attempts: [...l.attempts] }));
  }

  stats(): NotifierStats {
    return { ...this.counters, pending: this.entries.size };
  }

  /** Sends a TEST_NOTIFICATION once, without retry, and records it in the history. */
  async test(uId: string, url: string, authToken: string): Promise<PostResult & { notificationId: string }> {
    const payload: NotificationPayload = {
      notificationId: randomUUID(),
      notificationType: 'TEST_NOTIFICATION',
      uId,
      notification: {},
    };
    const log: NotificationLogEntry = {
      notificationId: payload.notificationId,
      notificationType: 'TEST_NOTIFICATION',
      uId,
      url,
      state: 'pending',
      attempts: [],
      payload,
    };
    this.remember(log);
    this.counters.attempts += 1;
    const r = await this.post(url, authToken, payload);
    const attempt: DeliveryAttempt = { at: this.opts.now() };
    if (r.status !== undefined) attempt.status = r.status;
    if (r.error !== undefined) attempt.error = r.error;
    log.attempts.push(attempt);
    log.state = r.ok ? 'delivered' : 'failed';
    return { ...r, notificationId: payload.notificationId };
  }

  /** One POST, no retry. */
  post(url: string, authToken: string, payload: NotificationPayload): Promise<PostResult> {
    return new Promise((resolve) => {
      let target: URL;
      try {
        target = new URL(url);
      } catch {
        resolve({ ok: false, error: 'invalid URL' });
        return;
      }
      const body = Buffer.from(JSON.stringify(payload), 'utf8');
      const isHttps = target.protocol === 'https:';
      const options: https.RequestOptions = {
        method: 'POST',
        headers: {
          authorization: `Bearer ${authToken}`,
          'content-type': 'application/json',
          'content-length': String(body.length),
          'user-agent': 'vpp-mdm-simulator/apple-vpp',
        },
        timeout: this.opts.timeoutMs,
      };
      if (isHttps && this.ca) options.ca = this.ca;
      let settled = false;
      const done = (r: PostResult) => {
        if (!settled) {
          settled = true;
          resolve(r);
        }
      };
      const req = (isHttps ? https : http).request(target, options, (res) => {
        res.resume();
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          done({ ok: status >= 200 && status < 300, status });
        });
        res.on('error', (err) => done({ ok: false, status: res.statusCode, error: err.message }));
      });
      req.on('timeout', () => req.destroy(new Error(`no answer in ${this.opts.timeoutMs} ms`)));
      req.on('error', (err) => done({ ok: false, error: err.message }));
      req.end(body);
    });
  }

  private remember(log: NotificationLogEntry): void {
    this.log.push(log);
    if (this.log.length > LOG_LIMIT) this.log.splice(0, this.log.length - LOG_LIMIT);
  }

  private schedule(id: string, delayMs: number): void {
    const e = this.entries.get(id);
    if (!e || this.paused) return;
    e.timer = setTimeout(() => {
      e.timer = null;
      void this.attempt(id);
    }, delayMs);
    e.timer.unref?.();
  }

  private async attempt(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (!e || this.paused || e.inFlight) return;
    const { pending, log } = e;
    const target = this.opts.target(pending.locationToken);
    if (!target) {
      // the location no longer has a notification URL: nothing to deliver to
      this.finish(id, 'failed');
      return;
    }
    e.inFlight = true;
    pending.attempts += 1;
    this.counters.attempts += 1;
    log.url = target.url;
    const r = await this.post(target.url, target.authToken, pending.payload);
    e.inFlight = false;
    const attempt: DeliveryAttempt = { at: this.opts.now() };
    if (r.status !== undefined) attempt.status = r.status;
    if (r.error !== undefined) attempt.error = r.error;
    log.attempts.push(attempt);
    if (r.ok) {
      this.finish(id, 'delivered');
      return;
    }
    const { maxAttempts, initialDelayMs, factor, maxDelayMs } = this.opts.retry;
    this.opts.logger.warn(
      { notificationId: id, attempt: pending.attempts, status: r.status, error: r.error },
      'notification not delivered',
    );
    if (pending.attempts >= maxAttempts) {
      this.finish(id, 'failed');
      return;
    }
    this.opts.onChange();
    const delay = Math.min(maxDelayMs, initialDelayMs * factor ** (pending.attempts - 1));
    this.schedule(id, delay);
  }

  private finish(id: string, state: 'delivered' | 'failed'): void {
    const e = this.entries.get(id);
    if (!e) return;
    if (e.timer) clearTimeout(e.timer);
    this.entries.delete(id);
    e.log.state = state;
    this.counters[state] += 1;
    this.opts.onChange();
  }
}
