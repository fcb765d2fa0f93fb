/**
 * Helpers for the Apps and Books simulator tests: a raw HTTP(S) client (node's fetch cannot take a CA
 * per request), a notification receiver standing in for the MDM server, and waiting with a deadline.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import type { AppleVppServiceOptions } from '../../../simulator/apple-vpp/service.ts';
import { waitFor as waitUntil } from '../../helpers/wait.ts';

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** the parsed body when it is JSON, else undefined */
  json: unknown;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  /** sent as JSON unless `form` or `raw` is given */
  body?: unknown;
  form?: Record<string, string>;
  raw?: { contentType: string; data: string };
  ca?: string;
  sToken?: string;
}

export function request(method: string, url: string, opts: RequestOptions = {}): Promise<HttpAnswer> {
  const target = new URL(url);
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.sToken !== undefined) headers.authorization = `Bearer ${opts.sToken}`;
  let payload: Buffer | null = null;
  if (opts.form) {
    payload = Buffer.from(new URLSearchParams(opts.form).toString());
    headers['content-type'] = 'application/x-www-form-urlencoded';
  } else if (opts.raw) {
    payload = Buffer.from(opts.raw.data);
    headers['content-type'] = opts.raw.contentType;
  } else if (opts.body !== undefined) {
    payload = Buffer.from(JSON.stringify(opts.body));
    headers['content-type'] = 'application/json';
  }
  if (payload) headers['content-length'] = String(payload.length);
  const isHttps = target.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const reqOpts: https.RequestOptions = { method, headers, agent: false };
    if (isHttps && opts.ca) reqOpts.ca = opts.ca;
    const req = (isHttps ? https : http).request(target, reqOpts, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        if ((res.headers['content-type'] ?? '').includes('application/json')) {
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload ?? undefined);
  });
}

/** The JSON body as a record (fails the test when it is not an object). */
export function obj(a: HttpAnswer): Record<string, unknown> {
  if (typeof a.json !== 'object' || a.json === null || Array.isArray(a.json)) {
    throw new Error(`expected a JSON object, got ${a.status} ${a.text.slice(0, 300)}`);
  }
  return a.json as Record<string, unknown>;
}

/** `waitFor` where `null` also means not yet. */
export function waitFor<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<T> {
  return waitUntil(what, async () => (await probe()) ?? undefined, timeoutMs, intervalMs);
}

export interface ReceivedNotification {
  authorization: string | undefined;
  body: {
    notificationId: string;
    notificationType: string;
    uId: string;
    notification: Record<string, unknown>;
  };
  /** the status the receiver answered */
  answered: number;
}

/** Stands in for the MDM server's `POST /apple/vpp/notifications/{locationId}`. */
export class NotificationReceiver {
  readonly received: ReceivedNotification[] = [];
  /** the status to answer, per received notification (default 200) */
  answer: (n: ReceivedNotification['body'], index: number) => number = () => 200;
  private server: http.Server | https.Server | null = null;

  constructor(private readonly tls?: { certPem: string; keyPem: string }) {}

  async start(): Promise<string> {
    const app = express();
    app.use(express.json());
    app.post('/apple/vpp/notifications/:locationId', (req, res) => {
      const body = req.body as ReceivedNotification['body'];
      const status = this.answer(body, this.received.length);
      this.received.push({ authorization: req.headers.authorization, body, answered: status });
      res.status(status).end();
    });
    const server = this.tls
      ? https.createServer({ cert: this.tls.certPem, key: this.tls.keyPem }, app)
      : http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.server = server;
    const port = (server.address() as AddressInfo).port;
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${port}/apple/vpp/notifications/loc-1`;
  }

  ofType(type: string): ReceivedNotification[] {
    return this.received.filter((r) => r.body.notificationType === type);
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
  }
}

/** A plain-HTTP service for most tests (http: notification URLs allowed, fast events and retries). */
export async function startService(
  overrides: Partial<AppleVppServiceOptions> = {},
): Promise<{ service: AppleVppService; url: string }> {
  const service = new AppleVppService({
    port: 0,
    eventDelayMs: 50,
    allowHttpNotificationUrl: true,
    notificationRetry: { maxAttempts: 4, initialDelayMs: 30, factor: 2, maxDelayMs: 200 },
    notificationTimeoutMs: 2000,
    ...overrides,
  });
  const { url } = await service.start();
  return { service, url };
}

/** Configures notifications for the location of `sToken` to go to `receiverUrl`. */
export async function subscribe(url: string, sToken: string, receiverUrl: string): Promise<HttpAnswer> {
  return request('POST', `${url}/client/config`, {
    sToken,
    body: {
      mdmInfo: { id: 'mdm-1', name: 'VPP MDM', metadata: '0.1.0' },
      notificationUrl: receiverUrl,
      notificationAuthToken: 'notify-secret',
      notificationTypes: ['USER_MANAGEMENT', 'USER_ASSOCIATED'],
    },
  });
}

export function users(n: number, prefix = 'u', from = 0): { clientUserId: string; email: string }[] {
  return Array.from({ length: n }, (_, i) => ({
    clientUserId: `${prefix}-${from + i}`,
    email: `${prefix}${from + i}@example.test`,
  }));
}

/** Waits until the event is no longer PENDING and returns its status body. */
export async function eventDone(
  url: string,
  sToken: string,
  eventId: string,
): Promise<Record<string, unknown>> {
  return waitFor(`event ${eventId}`, async () => {
    const r = obj(await request('GET', `${url}/status?eventId=${eventId}`, { sToken }));
    return r.eventStatus !== 'PENDING' ? r : null;
  });
}
