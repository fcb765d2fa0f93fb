/**
 * The simulator's APNs: an HTTP/2 + TLS server that answers `POST /3/device/<token>` as Apple's
 * provider API does for MDM pushes (client-certificate auth, topic = the certificate subject's UID,
 * `apns-push-type: mdm`, body `{"mdm":"<PushMagic>"}`) and hands accepted pushes to subscribers: in
 * this process (`subscribe`) or in others over a server-sent-events stream (see README.md here).
 *
 * One push waits per token (the newest wins) until a subscriber for the token appears or its
 * `apns-expiration` passes. Faults (410 tokens, 5xx share, latency, 429 window, outages) are set by
 * options, by `setFaults`, or through `/sim/faults`.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import type {
  Http2SecureServer,
  Http2Session,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { z } from 'zod';
import { authenticateSocket } from './client-certificate.ts';
import type { ApnsEnvironment, ConnectionAuth } from './client-certificate.ts';
import { DEVICE_TOKEN_PATTERN, FaultState, deviceTokenSchema } from './faults.ts';
import type { FaultPatch, FaultsView } from './faults.ts';
import { GatewayCounters } from './gateway-stats.ts';
import type { ApnsGatewayStats } from './gateway-stats.ts';
import { PendingPushes } from './pending-pushes.ts';
import type { ApnsPush, PendingPush } from './pending-pushes.ts';
import { statusOf } from './reasons.ts';
import type { ApnsReason } from './reasons.ts';
import { RemoteSubscriptions } from './remote-subscriptions.ts';
import type { Subscriber, SubscriberHost } from './remote-subscriptions.ts';
import { handleSimRequest } from './sim-endpoints.ts';
import type { SimControl } from './sim-endpoints.ts';

export type { ApnsPush, PendingPush } from './pending-pushes.ts';
export type { ApnsGatewayStats } from './gateway-stats.ts';
export type { FaultPatch, FaultsView } from './faults.ts';
export type { ApnsReason } from './reasons.ts';
export type { ApnsEnvironment } from './client-certificate.ts';

/** The port `npm run simulate` serves the gateway on (the server's development `MDM_APNS_URL`). */
export const DEFAULT_APNS_GATEWAY_PORT = 2197;
/** APNs' payload limit for everything but VoIP. */
export const MAX_PAYLOAD_BYTES = 4096;
const DEVICE_PATH = '/3/device/';
const UUID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const EXPIRATION_PATTERN = /^[0-9]{1,12}$/;
const TOPIC_PATTERN = /^[A-Za-z0-9._-]+$/;
const MAX_COLLAPSE_ID_BYTES = 64;
/** how long stop() lets open streams finish before dropping their connections */
const STOP_GRACE_MS = 200;

const mdmBodySchema = z.object({ mdm: z.string().min(1) }).strict();

const optionsSchema = z.object({
  port: z.number().int().min(0).max(65535),
  host: z.string().min(1).optional(),
  tlsCertPem: z.string().includes('-----BEGIN'),
  tlsKeyPem: z.string().includes('-----BEGIN'),
  clientCaPems: z.array(z.string().includes('-----BEGIN')).min(1),
  environment: z.enum(['production', 'development', 'any']).optional(),
  requireTopic: z.boolean().optional(),
  adminToken: z.string().min(16).optional(),
  maxConcurrentStreams: z.number().int().min(1).max(1_000_000).optional(),
  sweepIntervalMs: z.number().int().min(10).optional(),
});

export interface ApnsGatewayOptions {
  /** 0 picks a free port (kept across stop/start) */
  port: number;
  /** default 127.0.0.1 */
  host?: string;
  /** the gateway's TLS identity (the dev PKI's simulator certificate) */
  tlsCertPem: string;
  tlsKeyPem: string;
  /** CAs that issue push certificates (the dev PKI's server CA) */
  clientCaPems: string[];
  faults?: FaultPatch;
  logger?: Logger;
  /** which APNs extension push certificates must carry; default 'any' (either) */
  environment?: ApnsEnvironment;
  /**
   * Answer 400 MissingTopic when `apns-topic` is absent (default true). Apple lets a single-topic
   * certificate leave it out; the server must always send it, so the simulator is strict.
   */
  requireTopic?: boolean;
  /** when set, /sim/ endpoints need `Authorization: Bearer <adminToken>` */
  adminToken?: string;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (default 1000, like Apple's) */
  maxConcurrentStreams?: number;
  /** how often expired pending pushes are dropped (default 1000 ms) */
  sweepIntervalMs?: number;
  /** for tests: random in [0,1) (default Math.random) and the clock in ms (default Date.now) */
  random?: () => number;
  clock?: () => number;
}

export interface Rejection {
  /** the path's token when it was valid, else null */
  token: string | null;
  status: number;
  reason: ApnsReason;
  id: string;
}

export interface ApnsGatewayEvents {
  accepted: [push: PendingPush];
  rejected: [rejection: Rejection];
  delivered: [push: ApnsPush];
  stored: [push: PendingPush];
  replaced: [previous: PendingPush];
  expired: [push: PendingPush];
  dropped: [push: PendingPush];
  listening: [address: { port: number; url: string }];
  stopped: [];
}

type Decision = { ok: true; push: PendingPush } | { ok: false; reason: ApnsReason; token: string | null };

export class ApnsGateway extends EventEmitter<ApnsGatewayEvents> implements SubscriberHost {
  private readonly server: Http2SecureServer;
  private readonly log: Logger;
  private readonly host: string;
  private port: number;
  private readonly environment: ApnsEnvironment;
  private readonly requireTopic: boolean;
  private readonly adminToken: string | undefined;
  private readonly sweepIntervalMs: number;
  private readonly clock: () => number;
  private readonly faultState: FaultState;
  private readonly counters: GatewayCounters;
  private readonly pendingPushes = new PendingPushes();
  private readonly subscribers = new Map<string, Set<Subscriber>>();
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly auths = new WeakMap<Http2Session, ConnectionAuth>();
  private readonly remote: RemoteSubscriptions;
  private readonly sim: SimControl;
  private listening = false;
  private starting: Promise<{ port: number; url: string }> | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private reopenTimer: NodeJS.Timeout | null = null;
  private readonly onExpired = (push: PendingPush): void => {
    this.counters.expired++;
    this.emit('expired', push);
  };

  constructor(options: ApnsGatewayOptions) {
    super();
    const o = optionsSchema.parse(options);
    this.host = o.host ?? '127.0.0.1';
    this.port = o.port;
    this.environment = o.environment ?? 'any';
    this.requireTopic = o.requireTopic ?? true;
    this.adminToken = o.adminToken;
    this.sweepIntervalMs = o.sweepIntervalMs ?? 1000;
    this.clock = options.clock ?? Date.now;
    this.log = (options.logger ?? pino({ enabled: false })).child({ component: 'apns-gateway' });
    this.faultState = new FaultState(options.random ?? Math.random, this.clock);
    if (options.faults !== undefined) this.faultState.apply(options.faults);
    this.counters = new GatewayCounters(this.clock());
    this.remote = new RemoteSubscriptions(this, { unopenedTtlMs: 30_000, keepaliveMs: 15_000 });
    this.sim = {
      stats: () => this.stats(),
      faults: () => this.faults(),
      setFaults: (patch) => this.faultState.apply(patch),
      resetFaults: () => this.faultState.reset(),
      outage: (ms) => this.outage(ms),
      pending: (token) => this.pending(token),
      subscriptions: this.remote,
    };

    this.server = http2.createSecureServer({
      cert: o.tlsCertPem,
      key: o.tlsKeyPem,
      ca: o.clientCaPems,
      requestCert: true,
      rejectUnauthorized: false,
      allowHTTP1: false,
      minVersion: 'TLSv1.2',
      maxSessionMemory: 64,
      noDelay: true,
      settings: { maxConcurrentStreams: o.maxConcurrentStreams ?? 1000 },
    });
    this.server.on('session', (session) => {
      this.sessions.add(session);
      session.on('error', (err) => this.log.debug({ err }, 'session error'));
      session.once('close', () => this.sessions.delete(session));
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.server.on('sessionError', (err) => this.log.debug({ err }, 'session error'));
    this.server.on('tlsClientError', (err) => this.log.debug({ err }, 'TLS handshake failed'));
  }

  /** Listens (again, on the same port after a stop); pending pushes and subscribers are kept. */
  start(): Promise<{ port: number; url: string }> {
    if (this.reopenTimer !== null) {
      clearTimeout(this.reopenTimer);
      this.reopenTimer = null;
    }
    if (this.listening) return Promise.resolve(this.address());
    if (this.starting !== null) return this.starting;
    this.starting = new Promise<{ port: number; url: string }>((resolve, reject) => {
      const onError = (err: Error): void => {
        this.starting = null;
        reject(err);
      };
      this.server.once('error', onError);
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', onError);
        this.port = (this.server.address() as AddressInfo).port;
        this.listening = true;
        this.starting = null;
        this.sweepTimer = setInterval(() => this.sweep(), this.sweepIntervalMs);
        this.sweepTimer.unref();
        const address = this.address();
        this.log.info(address, 'APNs gateway listening');
        this.emit('listening', address);
        resolve(address);
      });
    });
    return this.starting;
  }

  /**
   * Stops listening and closes every connection (GOAWAY; requests still open after 200 ms are reset;
   * remote subscribers are disconnected); pending pushes, in-process subscribers, faults and stats
   * are kept.
   */
  async stop(): Promise<void> {
    if (this.reopenTimer !== null) {
      clearTimeout(this.reopenTimer);
      this.reopenTimer = null;
    }
    if (this.starting !== null) await this.starting.catch(() => undefined);
    if (!this.listening) return;
    this.listening = false;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    this.remote.closeAll();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // GOAWAY first so answers already written still leave; then cut whatever is left
    for (const session of this.sessions) session.close();
    const cut = setTimeout(() => {
      for (const session of this.sessions) session.destroy();
    }, STOP_GRACE_MS);
    await closed;
    clearTimeout(cut);
    this.log.info('APNs gateway stopped');
    this.emit('stopped');
  }

  /** Refuses connections for `durationMs`, then listens again on the same port. */
  async outage(durationMs: number): Promise<void> {
    await this.stop();
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      this.start().catch((err: unknown) => this.log.error({ err }, 'APNs gateway could not listen again'));
    }, durationMs);
  }

  get url(): string {
    return this.address().url;
  }

  /**
   * Calls `listener` for every push accepted for `token` from now on, and (in a microtask) for the
   * token's pending push if there is one. Returns the unsubscribe function.
   */
  subscribe(token: string, listener: (push: ApnsPush) => void): () => void {
    const t = deviceTokenSchema.parse(token);
    const subscriber: Subscriber = { kind: 'local', deliver: listener };
    let active = true;
    this.attach(t, subscriber);
    queueMicrotask(() => {
      if (active) this.flushPending(t);
    });
    return () => {
      if (!active) return;
      active = false;
      this.removeSubscriber(t, subscriber);
    };
  }

  /** Merges a fault patch (fields left out keep their value); throws a ZodError when invalid. */
  setFaults(patch: FaultPatch): void {
    this.faultState.apply(patch);
  }

  resetFaults(): void {
    this.faultState.reset();
  }

  faults(): FaultsView {
    return this.faultState.view();
  }

  /** The push waiting for `token` (not expired), if any. */
  pending(token: string): PendingPush | undefined {
    const t = deviceTokenSchema.safeParse(token);
    if (!t.success) return undefined;
    const push = this.pendingPushes.peek(t.data, this.clock(), this.onExpired);
    return push === undefined ? undefined : { ...push };
  }

  stats(): ApnsGatewayStats {
    const c = this.counters;
    const now = this.clock();
    return {
      received: c.received,
      accepted: c.accepted,
      rejected: c.rejected,
      rejectedByReason: c.byReason(),
      delivered: c.delivered,
      stored: c.stored,
      replaced: c.replaced,
      expired: c.expired,
      dropped: c.dropped,
      pending: this.pendingPushes.size,
      subscribedTokens: this.subscribers.size,
      remoteSubscriptions: this.remote.count,
      connections: this.sessions.size,
      perSecond: {
        received: c.receivedRate.perSecond(now),
        accepted: c.acceptedRate.perSecond(now),
        delivered: c.deliveredRate.perSecond(now),
      },
    };
  }

  /** SubscriberHost: attaches a subscriber and delivers the token's pending push to it. */
  addSubscriber(token: string, subscriber: Subscriber): void {
    this.attach(token, subscriber);
    this.flushPending(token);
  }

  removeSubscriber(token: string, subscriber: Subscriber): void {
    const set = this.subscribers.get(token);
    if (set === undefined) return;
    set.delete(subscriber);
    if (set.size === 0) this.subscribers.delete(token);
  }

  private address(): { port: number; url: string } {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return { port: this.port, url: `https://${host}:${this.port}` };
  }

  private attach(token: string, subscriber: Subscriber): void {
    let set = this.subscribers.get(token);
    if (set === undefined) {
      set = new Set();
      this.subscribers.set(token, set);
    }
    set.add(subscriber);
  }

  private flushPending(token: string): void {
    const set = this.subscribers.get(token);
    if (set === undefined || set.size === 0) return;
    const push = this.pendingPushes.take(token, this.clock(), this.onExpired);
    if (push !== undefined) this.deliver(push, set);
  }

  private sweep(): void {
    this.pendingPushes.sweep(this.clock(), this.onExpired);
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', (err) => this.log.trace({ err }, 'stream error'));
    const path = headers[':path'] ?? '';
    if (path.startsWith(DEVICE_PATH)) {
      this.onPush(stream, headers, path);
    } else if (path.startsWith('/sim/')) {
      handleSimRequest(this.sim, this.adminToken, stream, headers, path, (err) =>
        this.log.error({ err }, 'simulator endpoint failed'),
      );
    } else {
      stream.resume();
      this.answerError(stream, 'BadPath', randomUUID(), undefined);
    }
  }

  private onPush(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, path: string): void {
    const now = this.clock();
    this.counters.received++;
    this.counters.receivedRate.add(now);
    let first: Buffer | null = null;
    let rest: Buffer[] | null = null;
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_PAYLOAD_BYTES) return;
      if (first === null) first = chunk;
      else (rest ??= [first]).push(chunk);
    });
    stream.once('end', () => {
      const body =
        size > MAX_PAYLOAD_BYTES ? null : rest !== null ? Buffer.concat(rest) : (first ?? Buffer.alloc(0));
      this.onPushBody(stream, headers, path, body, size);
    });
  }

  private onPushBody(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    path: string,
    body: Buffer | null,
    size: number,
  ): void {
    const givenId = headers['apns-id'];
    const id = typeof givenId === 'string' && UUID_PATTERN.test(givenId) ? givenId : randomUUID();
    const decision = this.decide(stream, headers, path, body, size, id);
    const delay = this.faultState.latencyMs();
    if (delay > 0) setTimeout(() => this.finish(stream, decision, id), delay);
    else this.finish(stream, decision, id);
  }

  private decide(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    path: string,
    body: Buffer | null,
    size: number,
    id: string,
  ): Decision {
    const fail = (reason: ApnsReason, token: string | null = null): Decision => ({
      ok: false,
      reason,
      token,
    });
    if (headers[':method'] !== 'POST') return fail('MethodNotAllowed');

    const auth = this.authOf(stream);
    if (!auth.ok) {
      if (auth.reason !== 'none') return fail(auth.reason);
      return fail(headers.authorization === undefined ? 'MissingProviderToken' : 'InvalidProviderToken');
    }

    const rawToken = path.slice(DEVICE_PATH.length);
    if (rawToken.length === 0) return fail('MissingDeviceToken');
    if (!DEVICE_TOKEN_PATTERN.test(rawToken)) return fail('BadDeviceToken');
    const token = rawToken.toLowerCase();

    for (const name of ['apns-topic', 'apns-push-type', 'apns-id', 'apns-expiration', 'apns-priority']) {
      if (Array.isArray(headers[name])) return fail('DuplicateHeaders', token);
    }
    const topicHeader = headers['apns-topic'];
    let topic: string;
    if (typeof topicHeader !== 'string') {
      if (this.requireTopic) return fail('MissingTopic', token);
      topic = auth.topic;
    } else if (!TOPIC_PATTERN.test(topicHeader)) {
      return fail('BadTopic', token);
    } else if (topicHeader !== auth.topic) {
      return fail('TopicDisallowed', token);
    } else {
      topic = topicHeader;
    }
    if (headers['apns-push-type'] !== 'mdm') return fail('InvalidPushType', token);
    const givenId = headers['apns-id'];
    if (givenId !== undefined && givenId !== id) return fail('BadMessageId', token);
    const priority = headers['apns-priority'];
    if (priority !== undefined && priority !== '10' && priority !== '5' && priority !== '1')
      return fail('BadPriority', token);
    const collapseId = headers['apns-collapse-id'];
    if (typeof collapseId === 'string' && Buffer.byteLength(collapseId) > MAX_COLLAPSE_ID_BYTES)
      return fail('BadCollapseId', token);
    const expirationHeader = headers['apns-expiration'];
    let expiration = 0;
    if (expirationHeader !== undefined) {
      if (typeof expirationHeader !== 'string' || !EXPIRATION_PATTERN.test(expirationHeader))
        return fail('BadExpirationDate', token);
      expiration = Number(expirationHeader);
    }

    if (body === null || size > MAX_PAYLOAD_BYTES) return fail('PayloadTooLarge', token);
    const text = body.toString('utf8');
    if (text.trim().length === 0) return fail('PayloadEmpty', token);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return fail('BadPayload', token);
    }
    const parsed = mdmBodySchema.safeParse(json);
    if (!parsed.success) return fail('BadPayload', token);

    const injected = this.faultState.injectedError();
    if (injected !== null) return fail(injected, token);
    if (this.faultState.unregisteredAt(token) !== undefined) return fail('Unregistered', token);

    return {
      ok: true,
      push: { token, mdm: parsed.data.mdm, topic, id, expiration, receivedAt: this.clock() },
    };
  }

  private authOf(stream: ServerHttp2Stream): ConnectionAuth {
    const session = stream.session;
    if (session === undefined) return { ok: false, reason: 'none', detail: 'no session' };
    let auth = this.auths.get(session);
    if (auth === undefined) {
      auth = authenticateSocket(session.socket as TLSSocket, this.environment);
      this.auths.set(session, auth);
      if (!auth.ok) this.log.debug({ reason: auth.reason, detail: auth.detail }, 'push connection refused');
    }
    return auth;
  }

  private finish(stream: ServerHttp2Stream, decision: Decision, id: string): void {
    if (!decision.ok) {
      const reason = decision.reason;
      this.counters.reject(reason);
      const unregisteredAt =
        reason === 'Unregistered' && decision.token !== null
          ? this.faultState.unregisteredAt(decision.token)
          : undefined;
      this.answerError(stream, reason, id, unregisteredAt);
      if (this.listenerCount('rejected') > 0)
        this.emit('rejected', { token: decision.token, status: statusOf(reason), reason, id });
      return;
    }
    if (!stream.destroyed && !stream.headersSent)
      stream.respond({ ':status': 200, 'apns-id': id }, { endStream: true });
    const push = decision.push;
    const now = this.clock();
    this.counters.accepted++;
    this.counters.acceptedRate.add(now);
    this.emit('accepted', push);
    const set = this.subscribers.get(push.token);
    if (set !== undefined && set.size > 0) {
      // a newer push supersedes one still waiting (a subscriber attached in this same tick)
      const previous = this.pendingPushes.take(push.token, now, this.onExpired);
      if (previous !== undefined) {
        this.counters.replaced++;
        this.emit('replaced', previous);
      }
      this.deliver(push, set);
    } else if (push.expiration * 1000 > now) {
      const previous = this.pendingPushes.put(push);
      this.counters.stored++;
      if (previous !== undefined) {
        this.counters.replaced++;
        this.emit('replaced', previous);
      }
      this.emit('stored', push);
    } else {
      this.counters.dropped++;
      this.emit('dropped', push);
    }
  }

  private deliver(push: PendingPush, subscribers: Set<Subscriber>): void {
    const out: ApnsPush = { token: push.token, mdm: push.mdm, topic: push.topic, id: push.id };
    for (const s of [...subscribers]) {
      try {
        s.deliver(out);
      } catch (err) {
        this.log.warn({ err }, 'push subscriber threw');
      }
    }
    this.counters.delivered++;
    this.counters.deliveredRate.add(this.clock());
    this.emit('delivered', out);
  }

  private answerError(
    stream: ServerHttp2Stream,
    reason: ApnsReason,
    id: string,
    unregisteredAt: number | undefined,
  ): void {
    if (stream.destroyed || stream.headersSent) return;
    const status = statusOf(reason);
    const body = status === 410 ? { reason, timestamp: unregisteredAt ?? this.clock() } : { reason };
    stream.respond({ ':status': status, 'apns-id': id, 'content-type': 'application/json' });
    stream.end(JSON.stringify(body));
  }
}
