/**
 * The simulated Apple Apps and Books service: Apple's user-management API under `/mdm/v2`, the page
 * the invitation URL opens (`/invite`), and the simulator's control endpoints (`/sim`). One location per
 * minted sToken. State lives in memory and, with `stateFile`, in a JSON file that survives restarts.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import express from 'express';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { z } from 'zod';
import { adminRouter } from './admin-routes.ts';
import type { MintOptions } from './admin-routes.ts';
import { DEFAULT_LIMITS, apiRouter } from './api-routes.ts';
import type { VppLimits } from './api-routes.ts';
import { FaultInjector } from './faults.ts';
import type { FaultRule, FaultSpec } from './faults.ts';
import { INVITE_PATH, inviteRouter } from './invite-routes.ts';
import { stateFileSchema } from './model.ts';
import type { EventRecord, EventType, LocationRecord, RequestUser, StateFile, UserRecord } from './model.ts';
import { Notifier } from './notifier.ts';
import type { NotificationLogEntry, NotificationTarget, NotifierStats, RetryPolicy } from './notifier.ts';
import { decodeSToken } from './s-token.ts';
import { VppState } from './vpp-state.ts';
import type { AcceptResult, DeclineResult, NotificationDraft } from './vpp-state.ts';

export type { VppLimits } from './api-routes.ts';
export type { FaultAction, FaultRule, FaultSpec } from './faults.ts';
export type { NotificationLogEntry, NotifierStats, RetryPolicy } from './notifier.ts';
export type { AcceptResult, DeclineResult } from './vpp-state.ts';
export { appleIdHash } from './id-hash.ts';
export { decodeSToken, encodeSToken } from './s-token.ts';

export interface AppleVppServiceOptions {
  /** 0 picks a free port (kept across stop/start) */
  port: number;
  /** default 127.0.0.1 */
  host?: string;
  /** HTTPS when both are given, else HTTP */
  tlsCertPem?: string;
  tlsKeyPem?: string;
  /** origin used in the URLs the service hands out (default from the protocol, host and port) */
  publicUrl?: string;
  logger?: Logger;
  /** epoch milliseconds; default Date.now */
  clock?: () => number;
  /** how long a users/create|update|retire event stays PENDING (default 500 ms) */
  eventDelayMs?: number;
  /** extra CAs for outbound HTTPS to the notification URL (e.g. the MDM server's development CA) */
  notificationCaPems?: string[];
  /** per delivery attempt, also the TEST_NOTIFICATION's (default 10 s) */
  notificationTimeoutMs?: number;
  /** default: 5 attempts, 1 s, ×2, at most 60 s apart */
  notificationRetry?: Partial<RetryPolicy>;
  /** accept http: notification URLs (Apple answers 9712) */
  allowHttpNotificationUrl?: boolean;
  /** overrides of Apple's limits (e.g. `maxUsers`) */
  limits?: Partial<VppLimits>;
  /** users per `GET /users` page (default 1000) */
  usersPageSize?: number;
  /** answer 9646 beyond `limits.maxRequestPerSecond` per location (default off) */
  enforceRateLimit?: boolean;
  /** JSON file that keeps locations, users, events and undelivered notifications across restarts */
  stateFile?: string;
  /** when set, `/sim/...` needs `Authorization: Bearer <adminToken>` */
  adminToken?: string;
}

export interface MintServiceTokenOptions {
  orgName: string;
  /** default a year from now (by the service's clock) */
  expDate?: string | number | Date;
  /** default orgName */
  locationName?: string;
  /** default US */
  countryISO2ACode?: string;
}

export interface LocationSummary {
  uId: string;
  orgName: string;
  locationName: string;
  countryISO2ACode: string;
  expDate: string;
  revoked: boolean;
  mdmInfo?: { id: string; name: string; metadata: string };
  notificationUrl?: string;
  subscribedNotificationTypes: string[];
  users: { total: number; registered: number; associated: number; retired: number };
  versionId: string;
  pendingEvents: number;
}

export interface UserSnapshot extends UserRecord {
  uId: string;
}

export interface ServiceStats {
  requests: { total: number; byRoute: Record<string, number>; byStatus: Record<string, number> };
  faultsInjected: number;
  events: { created: number; completed: number; failed: number; pending: number };
  invitations: {
    accepted: number;
    repeated: number;
    keptFirstAppleId: number;
    declined: number;
    notFound: number;
  };
  notifications: NotifierStats;
}

const optionsSchema = z.object({
  port: z.number().int().min(0).max(65535),
  host: z.string().min(1).optional(),
  tlsCertPem: z.string().min(1).optional(),
  tlsKeyPem: z.string().min(1).optional(),
  publicUrl: z.url().optional(),
  eventDelayMs: z.number().int().nonnegative().optional(),
  notificationCaPems: z.array(z.string().min(1)).optional(),
  notificationTimeoutMs: z.number().int().positive().optional(),
  notificationRetry: z
    .object({
      maxAttempts: z.number().int().positive().optional(),
      initialDelayMs: z.number().int().nonnegative().optional(),
      factor: z.number().min(1).optional(),
      maxDelayMs: z.number().int().nonnegative().optional(),
    })
    .optional(),
  allowHttpNotificationUrl: z.boolean().optional(),
  limits: z.record(z.string(), z.number().int().positive()).optional(),
  usersPageSize: z.number().int().positive().optional(),
  enforceRateLimit: z.boolean().optional(),
  stateFile: z.string().min(1).optional(),
  adminToken: z.string().min(1).optional(),
});

const mintSchema = z.object({
  orgName: z.string().min(1).max(200),
  expDate: z.union([z.string().min(1), z.number(), z.date()]).optional(),
  locationName: z.string().min(1).max(200).optional(),
  countryISO2ACode: z
    .string()
    .regex(/^[A-Z]{2}$/)
    .optional(),
});

export class AppleVppService {
  private readonly opts: AppleVppServiceOptions;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly state: VppState;
  private readonly notifier: Notifier;
  private readonly faultInjector = new FaultInjector();
  private readonly app: express.Express;
  private readonly limits: VppLimits;
  private readonly eventTimers = new Map<string, NodeJS.Timeout>();
  private server: http.Server | https.Server | null = null;
  private boundPort: number | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private eventsHeld = false;
  private loaded = false;
  private saveTimer: NodeJS.Timeout | null = null;
  private saving: Promise<void> = Promise.resolve();
  private readonly counters = {
    requests: 0,
    byRoute: {} as Record<string, number>,
    byStatus: {} as Record<string, number>,
    faults: 0,
    eventsCreated: 0,
    eventsCompleted: 0,
    eventsFailed: 0,
    accepted: 0,
    repeated: 0,
    keptFirstAppleId: 0,
    declined: 0,
    notFound: 0,
  };

  constructor(options: AppleVppServiceOptions) {
    const { logger, clock, ...plain } = options;
    optionsSchema.parse(plain);
    if ((options.tlsCertPem === undefined) !== (options.tlsKeyPem === undefined)) {
      throw new Error('tlsCertPem and tlsKeyPem go together');
    }
    this.opts = options;
    this.log = (logger ?? pino({ level: 'silent' })).child({ component: 'apple-vpp-simulator' });
    this.now = clock ?? Date.now;
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.state = new VppState(this.now);
    this.notifier = new Notifier({
      retry: {
        maxAttempts: 5,
        initialDelayMs: 1000,
        factor: 2,
        maxDelayMs: 60_000,
        ...options.notificationRetry,
      },
      timeoutMs: options.notificationTimeoutMs ?? 10_000,
      ...(options.notificationCaPems ? { caPems: options.notificationCaPems } : {}),
      logger: this.log,
      now: this.now,
      target: (token) => this.notificationTarget(token),
      onChange: () => this.changed(),
    });
    this.app = this.buildApp();
  }

  // ---- lifecycle ----

  async start(): Promise<{ port: number; url: string }> {
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
    }
    if (this.server) return { port: this.port, url: this.url };
    if (!this.loaded) {
      await this.loadState();
      this.loaded = true;
    }
    const { tlsCertPem, tlsKeyPem } = this.opts;
    const server =
      tlsCertPem !== undefined && tlsKeyPem !== undefined
        ? https.createServer({ cert: tlsCertPem, key: tlsKeyPem }, this.app)
        : http.createServer(this.app);
    const port = this.boundPort ?? this.opts.port;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.opts.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.boundPort = (server.address() as AddressInfo).port;
    this.notifier.resume();
    for (const { loc, event } of this.state.pendingEvents()) this.scheduleEvent(loc, event);
    this.log.info({ url: this.url }, 'Apps and Books simulator listening');
    return { port: this.port, url: this.url };
  }

  async stop(): Promise<void> {
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
    }
    await this.halt();
  }

  /** The port bound by the last start (the configured one before). */
  get port(): number {
    return this.boundPort ?? this.opts.port;
  }

  get running(): boolean {
    return this.server !== null;
  }

  /** Origin of every URL this service hands out, e.g. `https://127.0.0.1:8444`. */
  get origin(): string {
    if (this.opts.publicUrl) return this.opts.publicUrl.replace(/\/+$/, '');
    const tls = this.opts.tlsCertPem !== undefined;
    const host = this.opts.host ?? '127.0.0.1';
    const urlHost =
      host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
    return `${tls ? 'https' : 'http'}://${urlHost}:${this.port}`;
  }

  /** The API base, e.g. `https://127.0.0.1:8444/mdm/v2`. */
  get url(): string {
    return `${this.origin}/mdm/v2`;
  }

  /** Apple's template, with the `%25inviteCode%25` placeholder. */
  get invitationEmailTemplate(): string {
    return `${this.origin}${INVITE_PATH}?inviteCode=%25inviteCode%25&mt=8`;
  }

  invitationUrl(inviteCode: string): string {
    return this.invitationEmailTemplate.replace('%25inviteCode%25', encodeURIComponent(inviteCode));
  }

  // ---- tokens and locations ----

  /** Registers a location and returns its sToken. */
  mintServiceToken(options: MintServiceTokenOptions): string {
    const o = mintSchema.parse(options);
    const { sToken } = this.state.addLocation({
      orgName: o.orgName,
      ...(o.expDate !== undefined ? { expDate: o.expDate } : {}),
      ...(o.locationName !== undefined ? { locationName: o.locationName } : {}),
      ...(o.countryISO2ACode !== undefined ? { countryISO2ACode: o.countryISO2ACode } : {}),
    });
    this.changed();
    return sToken;
  }

  /** Later calls with the token answer 9625. False when the token is unknown. */
  revokeServiceToken(sToken: string): boolean {
    const loc = this.locationOf(sToken);
    if (!loc) return false;
    loc.revoked = true;
    this.changed();
    return true;
  }

  locations(): (LocationSummary & { sToken: string })[] {
    return this.state.allLocations().map((l) => ({ ...this.summary(l), sToken: this.state.sTokenOf(l) }));
  }

  location(sToken: string): LocationSummary | null {
    const loc = this.locationOf(sToken);
    return loc ? this.summary(loc) : null;
  }

  /** Every user record of the location (retired ones too), with simulator-only fields such as `appleId`. */
  users(sToken: string): UserSnapshot[] {
    const loc = this.locationOf(sToken);
    if (!loc) throw new Error('unknown sToken');
    return loc.users.map((u) => ({ ...structuredClone(u), uId: loc.uId }));
  }

  events(sToken: string): EventRecord[] {
    const loc = this.locationOf(sToken);
    if (!loc) throw new Error('unknown sToken');
    return structuredClone(loc.events);
  }

  /** Every notification sent or attempted (TEST_NOTIFICATION included), oldest first. */
  notifications(): NotificationLogEntry[] {
    return this.notifier.history();
  }

  stats(): ServiceStats {
    const c = this.counters;
    return {
      requests: { total: c.requests, byRoute: { ...c.byRoute }, byStatus: { ...c.byStatus } },
      faultsInjected: c.faults,
      events: {
        created: c.eventsCreated,
        completed: c.eventsCompleted,
        failed: c.eventsFailed,
        pending: this.state.pendingEvents().length,
      },
      invitations: {
        accepted: c.accepted,
        repeated: c.repeated,
        keptFirstAppleId: c.keptFirstAppleId,
        declined: c.declined,
        notFound: c.notFound,
      },
      notifications: this.notifier.stats(),
    };
  }

  // ---- invitations ----

  /** What the invitation page does on Accept. */
  acceptInvitation(inviteCode: string, appleId: string): AcceptResult {
    const id = z.string().trim().min(1).max(254).parse(appleId);
    const { outcome, drafts } = this.state.accept(inviteCode, id);
    const c = this.counters;
    if (outcome.result === 'associated') c.accepted += 1;
    else if (outcome.result === 'already_associated') c.repeated += 1;
    else if (outcome.result === 'kept_first_apple_id') {
      c.keptFirstAppleId += 1;
      this.log.info({ uId: outcome.uId }, 'invitation accepted again with another Apple ID: first kept');
    } else if (outcome.result === 'not_found') c.notFound += 1;
    this.deliver(drafts);
    if (outcome.result === 'associated') this.changed();
    return outcome;
  }

  /** What the invitation page does on Decline: the user stays Registered; nothing is sent. */
  declineInvitation(inviteCode: string): DeclineResult {
    const r = this.state.decline(inviteCode);
    if (r.result === 'declined') {
      this.counters.declined += 1;
      this.changed();
    } else if (r.result === 'not_found') this.counters.notFound += 1;
    return r;
  }

  // ---- events ----

  /** While held, events stay PENDING until `holdEvents(false)` or `flushEvents()`. */
  holdEvents(held: boolean): void {
    this.eventsHeld = held;
    if (held) {
      for (const t of this.eventTimers.values()) clearTimeout(t);
      this.eventTimers.clear();
    } else if (this.server) {
      for (const { loc, event } of this.state.pendingEvents()) this.scheduleEvent(loc, event);
    }
  }

  /** Completes every pending event now; returns how many. */
  flushEvents(): number {
    const pending = this.state.pendingEvents();
    for (const { loc, event } of pending) this.completeEvent(loc, event.eventId);
    return pending.length;
  }

  // ---- faults ----

  addFault(spec: FaultSpec): string {
    return this.faultInjector.add(spec);
  }

  removeFault(id: string): boolean {
    return this.faultInjector.remove(id);
  }

  clearFaults(): void {
    this.faultInjector.clear();
    this.notifier.setDrop(false);
  }

  faults(): FaultRule[] {
    return this.faultInjector.list();
  }

  /** Drops (never sends) the next `n` notifications; `true` all until `false`. */
  dropNotifications(n: number | boolean): void {
    this.notifier.setDrop(n);
  }

  /** Closes the listener (state kept); with `ms`, listens again on the same port after `ms`. */
  async makeUnreachable(ms?: number): Promise<void> {
    await this.halt();
    if (ms !== undefined) {
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        this.start().catch((err: unknown) => this.log.error({ err }, 'restart after unreachable failed'));
      }, ms);
    }
  }

  // ---- internals ----

  private buildApp(): express.Express {
    const app = express();
    app.disable('x-powered-by');
    app.set('etag', false);
    app.use(
      '/mdm/v2',
      apiRouter({
        state: this.state,
        faults: this.faultInjector,
        logger: this.log,
        now: this.now,
        limits: this.limits,
        usersPageSize: this.opts.usersPageSize ?? 1000,
        allowHttpNotificationUrl: this.opts.allowHttpNotificationUrl ?? false,
        enforceRateLimit: this.opts.enforceRateLimit ?? false,
        urls: () => ({ apiBase: this.url, invitationEmail: this.invitationEmailTemplate }),
        sendTestNotification: (loc, url, authToken) => this.notifier.test(loc.uId, url, authToken),
        startEvent: (loc, type, users) => this.startEvent(loc, type, users),
        changed: () => this.changed(),
        countRequest: (route, status) => {
          this.counters.requests += 1;
          this.counters.byRoute[route] = (this.counters.byRoute[route] ?? 0) + 1;
          this.counters.byStatus[String(status)] = (this.counters.byStatus[String(status)] ?? 0) + 1;
        },
        countFault: () => {
          this.counters.faults += 1;
        },
      }),
    );
    app.use(
      inviteRouter({
        invitation: (code) => this.state.invitation(code),
        accept: (code, appleId) => this.acceptInvitation(code, appleId),
        decline: (code) => this.declineInvitation(code),
      }),
    );
    app.use(
      '/sim',
      adminRouter({
        ...(this.opts.adminToken !== undefined ? { adminToken: this.opts.adminToken } : {}),
        mint: (o: MintOptions) => {
          const sToken = this.mintServiceToken(o);
          const loc = this.locationOf(sToken);
          return { sToken, uId: loc?.uId ?? '', expDate: loc?.expDate ?? '' };
        },
        revoke: (sToken) => this.revokeServiceToken(sToken),
        locations: () => this.state.allLocations().map((l) => this.summary(l)),
        users: (uId) => {
          const loc = this.state.byUId(uId);
          return loc ? loc.users.map((u) => ({ ...u, uId: loc.uId })) : null;
        },
        stats: () => this.stats(),
        faults: () => ({ faults: this.faults(), dropNotifications: this.notifier.dropSetting() }),
        addFault: (spec) => this.addFault(spec),
        removeFault: (id) => this.removeFault(id),
        clearFaults: () => this.clearFaults(),
        dropNotifications: (n) => this.dropNotifications(n),
        unreachableFor: (ms) => {
          this.makeUnreachable(ms).catch((err: unknown) => this.log.error({ err }, 'unreachable failed'));
        },
        accept: (code, appleId) => this.acceptInvitation(code, appleId),
        decline: (code) => this.declineInvitation(code),
        flushEvents: () => this.flushEvents(),
      }),
    );
    app.use((_req, res) => {
      res.status(404).json({ error: 'not_found' });
    });
    return app;
  }

  private async halt(): Promise<void> {
    for (const t of this.eventTimers.values()) clearTimeout(t);
    this.eventTimers.clear();
    this.notifier.pause();
    const server = this.server;
    this.server = null;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
    await this.flushState();
  }

  private locationOf(sToken: string): LocationRecord | undefined {
    const content = decodeSToken(sToken);
    return content ? this.state.byToken(content.token) : undefined;
  }

  private summary(loc: LocationRecord): LocationSummary {
    const counts = { total: loc.users.length, registered: 0, associated: 0, retired: 0 };
    for (const u of loc.users) {
      if (u.status === 'Registered') counts.registered += 1;
      else if (u.status === 'Associated') counts.associated += 1;
      else counts.retired += 1;
    }
    const c = loc.clientConfig;
    return {
      uId: loc.uId,
      orgName: loc.orgName,
      locationName: loc.locationName,
      countryISO2ACode: loc.countryISO2ACode,
      expDate: loc.expDate,
      revoked: loc.revoked,
      ...(c.mdmInfo ? { mdmInfo: { ...c.mdmInfo } } : {}),
      ...(c.notificationUrl !== undefined ? { notificationUrl: c.notificationUrl } : {}),
      subscribedNotificationTypes: c.notificationTypes.filter((t) => t !== 'TEST_NOTIFICATION'),
      users: counts,
      versionId: this.state.versionIdOf(loc),
      pendingEvents: loc.events.filter((e) => e.eventStatus === 'PENDING').length,
    };
  }

  private notificationTarget(token: string): NotificationTarget | null {
    const loc = this.state.byToken(token);
    const c = loc?.clientConfig;
    if (!loc || !c || c.notificationUrl === undefined || c.notificationAuthToken === undefined) return null;
    return {
      url: c.notificationUrl,
      authToken: c.notificationAuthToken,
      types: c.notificationTypes,
      uId: loc.uId,
    };
  }

  private startEvent(loc: LocationRecord, type: EventType, users: RequestUser[]): EventRecord {
    const event = this.state.addEvent(loc, type, users);
    this.counters.eventsCreated += 1;
    this.scheduleEvent(loc, event);
    this.changed();
    return event;
  }

  private scheduleEvent(loc: LocationRecord, event: EventRecord): void {
    if (this.eventsHeld || !this.server || this.eventTimers.has(event.eventId)) return;
    const timer = setTimeout(() => {
      this.eventTimers.delete(event.eventId);
      this.completeEvent(loc, event.eventId);
    }, this.opts.eventDelayMs ?? 500);
    this.eventTimers.set(event.eventId, timer);
  }

  private completeEvent(loc: LocationRecord, eventId: string): void {
    const timer = this.eventTimers.get(eventId);
    if (timer) clearTimeout(timer);
    this.eventTimers.delete(eventId);
    const drafts = this.state.completeEvent(loc, eventId);
    const event = this.state.event(loc, eventId);
    if (event?.eventStatus === 'FAILED') this.counters.eventsFailed += 1;
    else this.counters.eventsCompleted += 1;
    this.deliver(drafts);
    this.changed();
  }

  private deliver(drafts: NotificationDraft[]): void {
    for (const d of drafts) this.notifier.enqueue(d.locationToken, d.notificationType, d.notification);
  }

  // ---- persistence ----

  private changed(): void {
    if (!this.opts.stateFile || this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      void this.writeState();
    }, 100);
  }

  private async flushState(): Promise<void> {
    if (!this.opts.stateFile) return;
    if (this.saveTimer) {
      clearTimeout(this.saveTimer);
      this.saveTimer = null;
    }
    await this.writeState();
  }

  private writeState(): Promise<void> {
    const file = this.opts.stateFile;
    // never overwrite a file that was not read (missing or refused) with an empty state
    if (!file || !this.loaded) return Promise.resolve();
    const snapshot: StateFile = {
      ...this.state.toJSON(),
      pendingNotifications: this.notifier.pendingItems(),
    };
    const data = JSON.stringify(snapshot);
    this.saving = this.saving.then(async () => {
      try {
        await mkdir(path.dirname(file), { recursive: true });
        const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
        await writeFile(tmp, data, { mode: 0o600 });
        await rename(tmp, file);
      } catch (err) {
        this.log.error({ err, file }, 'could not write the state file');
      }
    });
    return this.saving;
  }

  private async loadState(): Promise<void> {
    const file = this.opts.stateFile;
    if (!file) return;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new Error(`state file ${file} is not JSON`, { cause: err });
    }
    const parsed = stateFileSchema.safeParse(json);
    if (!parsed.success) {
      throw new Error(`state file ${file} is not valid: ${parsed.error.issues[0]?.message ?? ''}`);
    }
    this.state.load(parsed.data);
    this.notifier.restore(parsed.data.pendingNotifications);
    this.log.info({ file, locations: parsed.data.locations.length }, 'state loaded');
  }
}
