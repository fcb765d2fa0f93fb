import http from 'node:http';
import https from 'node:https';
import { z } from 'zod';
import type { Logger } from '../log.ts';
import { outboundCa } from '../security/outbound-trust.ts';

/**
 * Apple's Apps and Books API v2, the user-management part (see `../shared/spec/apple-vpp.md`). Every
 * response is validated with zod; every error becomes an `AppleError`. The sToken is never logged.
 */

// ---------- the sToken ----------

export interface ServiceTokenContent {
  token: string;
  expDate: string;
  orgName: string;
}

const sTokenJson = z.object({
  token: z.string().min(1).max(4096),
  expDate: z.string().min(1).max(64),
  orgName: z.string().max(1024),
});

/** An sToken is base64 of JSON `{"token","expDate","orgName"}`; null when it is not. */
export function decodeServiceToken(sToken: string): ServiceTokenContent | null {
  const s = sToken.trim();
  if (s.length === 0 || s.length > 16_384 || !/^[A-Za-z0-9+/=_\-\s]+$/.test(s)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(s, 'base64').toString('utf8'));
  } catch {
    return null;
  }
  const r = sTokenJson.safeParse(parsed);
  return r.success ? r.data : null;
}

/** Apple's dates (`2030-11-08T22:33:22+0000`) and ISO 8601; null when unparsable. */
export function parseAppleDate(value: string | undefined | null): Date | null {
  if (!value) return null;
  const ms = Date.parse(value.trim().replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
  return Number.isFinite(ms) ? new Date(ms) : null;
}

// ---------- errors ----------

export type AppleTokenProblem = 'token_expired' | 'token_revoked' | 'token_invalid';

/** Error numbers that mean the sToken itself is no good (the location's work stops until a renewal). */
export const TOKEN_ERRORS: ReadonlyMap<number, AppleTokenProblem> = new Map([
  [9621, 'token_expired'],
  [9625, 'token_revoked'],
  [9601, 'token_invalid'],
  [9622, 'token_invalid'],
  [9722, 'token_invalid'],
]);

/**
 * A failed call. `errorNumber` is Apple's (null when no Apple error came: no answer, or an answer that
 * is not Apple's). `retryAfterMs` is set for rate limiting and unavailability (from `Retry-After`).
 */
export class AppleError extends Error {
  constructor(
    message: string,
    readonly errorNumber: number | null,
    readonly httpStatus: number | null,
    readonly retryAfterMs: number | null = null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }

  /** `token_expired` (9621), `token_revoked` (9625), `token_invalid` (9601/9622/9722), else null. */
  get tokenProblem(): AppleTokenProblem | null {
    return this.errorNumber === null ? null : (TOKEN_ERRORS.get(this.errorNumber) ?? null);
  }

  /** 9646 / 429 (too many requests), 503 / 9729 / 9644 (unavailable, maintenance). */
  get rateLimited(): boolean {
    return (
      this.httpStatus === 429 ||
      this.httpStatus === 503 ||
      this.errorNumber === 9646 ||
      this.errorNumber === 9729 ||
      this.errorNumber === 9644
    );
  }

  /** Worth trying again later: rate limits, 5xx, no answer. Apple's 4xx errors are not. */
  get transient(): boolean {
    return this.rateLimited || this.httpStatus === null || this.httpStatus >= 500;
  }
}

// ---------- response shapes ----------

const text = z.string();
const uId = z.union([z.string(), z.number()]).transform(String);

const serviceConfigSchema = z.object({
  urls: z.looseObject({ invitationEmail: text.min(1) }),
  limits: z.looseObject({ maxUsers: z.number().int().positive().default(100) }).default({ maxUsers: 100 }),
  notificationTypes: z.array(text).optional(),
});
export type ServiceConfig = z.infer<typeof serviceConfigSchema>;

const mdmInfoSchema = z.object({ id: text, name: text.optional(), metadata: text.optional() });
export type MdmInfo = z.infer<typeof mdmInfoSchema>;

const clientConfigSchema = z.object({
  countryISO2ACode: text.optional(),
  locationName: text.optional(),
  uId,
  tokenExpirationDate: text.optional(),
  mdmInfo: mdmInfoSchema.optional(),
  notificationUrl: text.optional(),
  subscribedNotificationTypes: z.array(text).optional(),
});
export type ClientConfig = z.infer<typeof clientConfigSchema>;

export const APPLE_USER_STATUSES = ['Registered', 'Associated', 'Retired'] as const;
export type AppleUserStatus = (typeof APPLE_USER_STATUSES)[number];

export const appleUserSchema = z.object({
  clientUserId: text.min(1),
  email: text.optional(),
  status: z.enum(APPLE_USER_STATUSES).optional(),
  inviteCode: text.optional(),
  idHash: text.optional(),
});
export type AppleUser = z.infer<typeof appleUserSchema>;

const usersPageSchema = z.object({
  users: z.array(appleUserSchema).default([]),
  versionId: text.optional(),
  currentPageIndex: z.number().int().optional(),
  nextPageIndex: z.number().int().optional(),
  totalPages: z.number().int().optional(),
});
export type UsersPage = z.infer<typeof usersPageSchema>;

const eventRefSchema = z.object({
  eventId: text.min(1),
  tokenExpirationDate: text.optional(),
  uId: uId.optional(),
});

const failureSchema = z.object({
  clientUserId: text.optional(),
  errorNumber: z.number().int(),
  errorMessage: text.default(''),
  errorInfo: z.object({ clientUserIds: z.array(text).optional() }).optional(),
});

const eventStatusSchema = z.object({
  eventStatus: z.enum(['PENDING', 'COMPLETE', 'FAILED']),
  eventType: text.optional(),
  numCompleted: z.number().int().optional(),
  numRequested: z.number().int().optional(),
  failures: z.array(failureSchema).default([]),
});

export interface UserFailure {
  clientUserId: string;
  errorNumber: number;
  errorMessage: string;
}

export interface EventStatus {
  eventStatus: 'PENDING' | 'COMPLETE' | 'FAILED';
  eventType: string | null;
  numCompleted: number | null;
  numRequested: number | null;
  /** one per user (Apple may list several users under one error) */
  failures: UserFailure[];
}

/** Apple's failure entries, one per user (`clientUserId` or `errorInfo.clientUserIds`). */
export function flattenFailures(failures: readonly z.infer<typeof failureSchema>[]): UserFailure[] {
  const out: UserFailure[] = [];
  for (const f of failures) {
    const ids = new Set<string>(f.errorInfo?.clientUserIds ?? []);
    if (f.clientUserId) ids.add(f.clientUserId);
    for (const clientUserId of ids) {
      out.push({ clientUserId, errorNumber: f.errorNumber, errorMessage: f.errorMessage });
    }
  }
  return out;
}

const errorBodySchema = z.object({ errorNumber: z.number().int(), errorMessage: text.default('') });

// ---------- the interface ----------

export interface ManagedUserInput {
  clientUserId: string;
  email?: string;
  managedAppleId?: string;
}

/** One `users/create|update|retire` call: its asynchronous event and the users in it. */
export interface UserBatch {
  eventId: string;
  clientUserIds: string[];
}

export interface SetClientConfig {
  mdmInfo?: { id: string; name: string; metadata: string };
  /** empty strings remove the notification URL */
  notificationUrl?: string;
  notificationAuthToken?: string;
  notificationTypes?: string[];
}

export type UsersQuery =
  { clientUserId: string } | { sinceVersionId: string; pageIndex?: number } | { pageIndex: number };

/** Apple's Apps and Books service, as the server uses it. */
export interface AppsAndBooks {
  /** `GET service/config`, cached (refreshed hourly). */
  serviceConfig(): Promise<ServiceConfig>;
  clientConfig(sToken: string): Promise<ClientConfig>;
  setClientConfig(sToken: string, config: SetClientConfig): Promise<ClientConfig>;
  /**
   * In batches of at most `limits.maxUsers`. When a later batch fails, the error is an
   * `AppleBatchError` carrying the batches already accepted.
   */
  createUsers(sToken: string, users: readonly ManagedUserInput[]): Promise<UserBatch[]>;
  updateUsers(sToken: string, users: readonly ManagedUserInput[]): Promise<UserBatch[]>;
  retireUsers(sToken: string, clientUserIds: readonly string[]): Promise<UserBatch[]>;
  eventStatus(sToken: string, eventId: string): Promise<EventStatus>;
  users(sToken: string, query: UsersQuery): Promise<UsersPage>;
}

/** A multi-batch call that failed after some batches were accepted. */
export class AppleBatchError extends AppleError {
  constructor(
    cause: AppleError,
    readonly accepted: UserBatch[],
  ) {
    super(cause.message, cause.errorNumber, cause.httpStatus, cause.retryAfterMs, { cause });
  }
}

/** `Retry-After`: seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | null {
  if (value === undefined || value.trim() === '') return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, at - now) : null;
}

export function invitationUrlFrom(template: string, inviteCode: string): string {
  const code = encodeURIComponent(inviteCode);
  return template.replaceAll('%25inviteCode%25', code).replaceAll('%inviteCode%', code);
}

export interface HttpAppsAndBooksOptions {
  /** e.g. `https://vpp.itunes.apple.com/mdm/v2` */
  baseUrl: string;
  /** extra CA certificates (PEM) for a non-Apple service, e.g. the development CA for the simulator */
  extraCaPems?: readonly string[];
  log: Logger;
  timeoutMs?: number;
  serviceConfigTtlMs?: number;
  now?: () => number;
}

const SERVICE_CONFIG_TTL_MS = 60 * 60 * 1000;
const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_RESPONSE_BYTES = 20 * 1024 * 1024;

/** `AppsAndBooks` over node's `https` (or `http` for a plain-HTTP test service), keep-alive. */
export class HttpAppsAndBooks implements AppsAndBooks {
  private readonly base: URL;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;
  private cached: { at: number; config: ServiceConfig } | null = null;
  private inflight: Promise<ServiceConfig> | null = null;

  constructor(private readonly opts: HttpAppsAndBooksOptions) {
    this.base = new URL(opts.baseUrl.replace(/\/+$/, '') + '/');
    const tls = this.base.protocol === 'https:';
    this.transport = tls ? https : http;
    const ca = outboundCa(opts.extraCaPems ?? []);
    this.agent = tls
      ? new https.Agent({
          keepAlive: true,
          maxSockets: 16,
          ...(ca ? { ca } : {}),
        })
      : new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  close(): void {
    this.agent.destroy();
  }

  async serviceConfig(): Promise<ServiceConfig> {
    const ttl = this.opts.serviceConfigTtlMs ?? SERVICE_CONFIG_TTL_MS;
    if (this.cached && this.now() - this.cached.at < ttl) return this.cached.config;
    if (!this.inflight) {
      this.inflight = this.call('GET', 'service/config', null, undefined, serviceConfigSchema)
        .then((config) => {
          this.cached = { at: this.now(), config };
          return config;
        })
        .finally(() => {
          this.inflight = null;
        });
    }
    try {
      return await this.inflight;
    } catch (err) {
      // Apple unreachable: the last known configuration is good enough.
      if (this.cached) return this.cached.config;
      throw err;
    }
  }

  clientConfig(sToken: string): Promise<ClientConfig> {
    return this.call('GET', 'client/config', sToken, undefined, clientConfigSchema);
  }

  setClientConfig(sToken: string, config: SetClientConfig): Promise<ClientConfig> {
    return this.call('POST', 'client/config', sToken, config, clientConfigSchema);
  }

  createUsers(sToken: string, users: readonly ManagedUserInput[]): Promise<UserBatch[]> {
    return this.manage('users/create', sToken, users);
  }

  updateUsers(sToken: string, users: readonly ManagedUserInput[]): Promise<UserBatch[]> {
    return this.manage('users/update', sToken, users);
  }

  retireUsers(sToken: string, clientUserIds: readonly string[]): Promise<UserBatch[]> {
    return this.manage(
      'users/retire',
      sToken,
      clientUserIds.map((clientUserId) => ({ clientUserId })),
    );
  }

  async eventStatus(sToken: string, eventId: string): Promise<EventStatus> {
    const s = await this.call(
      'GET',
      `status?eventId=${encodeURIComponent(eventId)}`,
      sToken,
      undefined,
      eventStatusSchema,
    );
    return {
      eventStatus: s.eventStatus,
      eventType: s.eventType ?? null,
      numCompleted: s.numCompleted ?? null,
      numRequested: s.numRequested ?? null,
      failures: flattenFailures(s.failures),
    };
  }

  users(sToken: string, query: UsersQuery): Promise<UsersPage> {
    const q = new URLSearchParams();
    if ('clientUserId' in query) q.set('clientUserId', query.clientUserId);
    if ('sinceVersionId' in query) q.set('sinceVersionId', query.sinceVersionId);
    if ('pageIndex' in query && query.pageIndex !== undefined && query.pageIndex > 0) {
      q.set('pageIndex', String(query.pageIndex));
    }
    const qs = q.toString();
    return this.call('GET', qs ? `users?${qs}` : 'users', sToken, undefined, usersPageSchema);
  }

  private async manage(
    path: string,
    sToken: string,
    users: readonly ManagedUserInput[],
  ): Promise<UserBatch[]> {
    if (users.length === 0) return [];
    const { limits } = await this.serviceConfig();
    const size = Math.max(1, limits.maxUsers);
    const accepted: UserBatch[] = [];
    for (let i = 0; i < users.length; i += size) {
      const part = users.slice(i, i + size);
      try {
        const ref = await this.call('POST', path, sToken, { users: part }, eventRefSchema);
        accepted.push({ eventId: ref.eventId, clientUserIds: part.map((u) => u.clientUserId) });
      } catch (err) {
        if (accepted.length > 0 && err instanceof AppleError) throw new AppleBatchError(err, accepted);
        throw err;
      }
    }
    return accepted;
  }

  private call<S extends z.ZodType>(
    method: 'GET' | 'POST',
    path: string,
    sToken: string | null,
    body: unknown,
    schema: S,
  ): Promise<z.output<S>> {
    const url = new URL(path, this.base);
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body), 'utf8');
    const route = `${method} ${url.pathname}`;
    const started = this.now();
    return new Promise<z.output<S>>((resolve, reject) => {
      const headers: Record<string, string> = { accept: 'application/json' };
      if (sToken !== null) headers.authorization = `Bearer ${sToken}`;
      if (payload) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(payload.length);
      }
      const req = this.transport.request(
        url,
        { method, headers, agent: this.agent, timeout: this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy(new Error('response too large'));
              return;
            }
            chunks.push(c);
          });
          res.on('error', (err) =>
            reject(new AppleError(`Apple ${route}: ${err.message}`, null, null, null, { cause: err })),
          );
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const retryAfterHeader = res.headers['retry-after'];
            this.opts.log.debug({ route, status, ms: this.now() - started }, 'Apple call');
            let json: unknown = undefined;
            try {
              json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              json = undefined;
            }
            if (status >= 200 && status < 300) {
              const parsed = schema.safeParse(json);
              if (parsed.success) {
                resolve(parsed.data);
                return;
              }
              // Apple sometimes answers 200 with an error body.
              const apple = errorBodySchema.safeParse(json);
              if (apple.success) {
                reject(
                  new AppleError(
                    apple.data.errorMessage || `Apple error ${apple.data.errorNumber}`,
                    apple.data.errorNumber,
                    status,
                  ),
                );
                return;
              }
              reject(
                new AppleError(
                  `Apple ${route}: unexpected response (${parsed.error.issues[0]?.message ?? 'invalid'})`,
                  null,
                  status,
                ),
              );
              return;
            }
            const retryAfterMs =
              status === 429 || status === 503
                ? (parseRetryAfter(typeof retryAfterHeader === 'string' ? retryAfterHeader : undefined) ??
                  null)
                : null;
            const apple = errorBodySchema.safeParse(json);
            if (apple.success) {
              reject(
                new AppleError(
                  apple.data.errorMessage || `Apple error ${apple.data.errorNumber}`,
                  apple.data.errorNumber,
                  status,
                  retryAfterMs,
                ),
              );
            } else {
              reject(new AppleError(`Apple ${route}: HTTP ${status}`, null, status, retryAfterMs));
            }
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(new Error(`no answer in ${this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`)),
      );
      req.on('error', (err) => {
        this.opts.log.debug({ route, err: err.message }, 'Apple call failed');
        reject(new AppleError(`Apple ${route}: ${err.message}`, null, null, null, { cause: err }));
      });
      req.end(payload ?? undefined);
    });
  }
}
