/**
 * The Self Service client a simulated device runs: it lists the invitations of the device's assigned
 * user (`GET /selfservice/v1/invitations`) and taps one (`POST /selfservice/v1/invitations/{id}/accept`),
 * authenticated by the device's enrollment identity certificate as the TLS client certificate (the leaf
 * only, no chain), trusting the server's CA. It can poll on an interval with jitter and reports each
 * listing as an event. See api.md, "Device-facing endpoints".
 */
import { EventEmitter } from 'node:events';
import type https from 'node:https';
import { z } from 'zod';
import type { Rng } from '../device/device-spec.ts';
import { httpRequest } from '../device/http-client.ts';
import type { HttpResponse } from '../device/http-client.ts';
import type { SimulatedDevice } from '../device/sim-device.ts';

export const SELF_SERVICE_PATH = '/selfservice/v1/invitations';

export const selfServiceInvitationSchema = z.object({
  /** the user's usage id (the per-user invitation ID): what `accept` takes */
  id: z.string().min(1),
  invitationId: z.string().min(1),
  name: z.string(),
  locationName: z.string(),
  status: z.enum(['pending', 'registered']),
  invitationUrl: z.url(),
});
export type SelfServiceInvitation = z.infer<typeof selfServiceInvitationSchema>;

export const selfServiceListingSchema = z.object({ invitations: z.array(selfServiceInvitationSchema) });
export const selfServiceAcceptSchema = z.object({ invitationUrl: z.url() });

/** Why a Self Service call failed. */
export type SelfServiceErrorCode =
  /** `403`: no or an unaccepted identity */
  | 'forbidden'
  /** `404`: another user's invitation, or an unknown id */
  | 'not_found'
  /** any other HTTP status */
  | 'http_error'
  /** a `200` whose body is not the contract's JSON */
  | 'invalid_response'
  /** network, TLS or timeout: no HTTP answer */
  | 'transport'
  /** the device has no identity or server yet (not enrolled) */
  | 'not_enrolled';

export class SelfServiceError extends Error {
  constructor(
    readonly code: SelfServiceErrorCode,
    readonly operation: 'list' | 'accept',
    readonly status: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`Self Service ${operation}: ${message}`, options);
    this.name = 'SelfServiceError';
  }
}

export interface SelfServiceIdentity {
  /** the enrollment identity certificate (the leaf only) and its key, PEM */
  certPem: string;
  keyPem: string;
}

export interface SelfServiceClientOptions {
  /** the server's public URL, e.g. `https://mdm.example:8443` (no trailing path) */
  baseUrl: string;
  /** CA certificate(s) (PEM) trusted for the server's HTTPS certificate */
  ca: string | string[];
  /** the identity, read at each request (a device that re-enrolls gets a new one) */
  identity: SelfServiceIdentity | (() => SelfServiceIdentity | null);
  /** connection pool (a shared one keys connections by client certificate). Default: a new connection each call */
  agent?: https.Agent;
  /** per request (default 30 s) */
  timeoutMs?: number;
  /** names the device in events and errors */
  udid?: string;
}

export interface PollOptions {
  /** mean time between two polls (the next poll starts this long after the previous one ended) */
  intervalMs: number;
  /** each interval is multiplied by a factor drawn in [1 - jitter, 1 + jitter] (default 0.2) */
  jitter?: number;
  /**
   * delay of the first poll: `random` (default, uniform in [0, intervalMs), so a fleet does not poll in
   * step), `now`, or a number of milliseconds
   */
  firstPoll?: 'random' | 'now' | number;
  rng?: Rng;
}

export interface SelfServiceListing {
  udid: string | null;
  invitations: SelfServiceInvitation[];
  /** pending invitations this client had not seen pending before */
  newlyPending: SelfServiceInvitation[];
  durationMs: number;
}

export interface SelfServiceStats {
  polls: number;
  failures: number;
  accepts: number;
  byError: Partial<Record<SelfServiceErrorCode, number>>;
}

/** The leaf certificate of a PEM bundle (a Self Service client presents no chain). */
export function leafCertificate(pem: string): string {
  const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new Error('no PEM certificate');
  return `${m[0]}\n`;
}

/** The server's public URL from a device's enrollment: its ServerURL without `/mdm/connect`. */
export function serverBaseUrl(serverUrl: string): string {
  const u = new URL(serverUrl);
  const base = u.pathname.replace(/\/mdm\/connect\/?$/, '').replace(/\/+$/, '');
  return `${u.origin}${base}`;
}

export class SelfServiceClient extends EventEmitter<{
  listing: [SelfServiceListing];
  pollError: [SelfServiceError];
}> {
  readonly stats: SelfServiceStats = { polls: 0, failures: 0, accepts: 0, byError: {} };
  private readonly baseUrl: string;
  private readonly seenPending = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private inFlight: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: SelfServiceClientOptions) {
    super();
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
  }

  /** A client for an enrolled device: its server, and its enrollment identity read at each call. */
  static forDevice(
    device: SimulatedDevice,
    options: Omit<SelfServiceClientOptions, 'baseUrl' | 'identity' | 'udid'> & { baseUrl?: string },
  ): SelfServiceClient {
    const state = device.snapshot();
    const baseUrl = options.baseUrl ?? (state.server ? serverBaseUrl(state.server.serverUrl) : null);
    if (baseUrl === null) {
      throw new SelfServiceError('not_enrolled', 'list', 0, `${device.udid} has no enrollment profile`);
    }
    return new SelfServiceClient({
      ...options,
      baseUrl,
      udid: device.udid,
      identity: () => {
        const s = device.snapshot();
        return s.enrolled && s.identity ? s.identity : null;
      },
    });
  }

  get udid(): string | null {
    return this.options.udid ?? null;
  }

  /** `GET /selfservice/v1/invitations`: the assigned user's invitations (empty for a device with none). */
  async list(): Promise<SelfServiceInvitation[]> {
    const res = await this.call('list', 'GET', SELF_SERVICE_PATH);
    return this.parse('list', res, selfServiceListingSchema).invitations;
  }

  /** `POST /selfservice/v1/invitations/{id}/accept`: the user taps it; answers the URL to open. */
  async accept(id: string): Promise<string> {
    const res = await this.call('accept', 'POST', `${SELF_SERVICE_PATH}/${encodeURIComponent(id)}/accept`);
    const url = this.parse('accept', res, selfServiceAcceptSchema).invitationUrl;
    this.stats.accepts++;
    return url;
  }

  /** One listing, reported as a `listing` event (errors as `pollError`); never rejects. */
  pollOnce(): Promise<SelfServiceListing | null> {
    const run = this.doPoll();
    this.inFlight = run;
    return run;
  }

  private async doPoll(): Promise<SelfServiceListing | null> {
    const started = performance.now();
    this.stats.polls++;
    try {
      const invitations = await this.list();
      const newlyPending: SelfServiceInvitation[] = [];
      for (const inv of invitations) {
        if (inv.status === 'pending' && !this.seenPending.has(inv.id)) {
          this.seenPending.add(inv.id);
          newlyPending.push(inv);
        }
      }
      const listing: SelfServiceListing = {
        udid: this.udid,
        invitations,
        newlyPending,
        durationMs: performance.now() - started,
      };
      this.emit('listing', listing);
      return listing;
    } catch (err) {
      const error =
        err instanceof SelfServiceError
          ? err
          : new SelfServiceError('transport', 'list', 0, String(err), { cause: err });
      this.stats.failures++;
      this.stats.byError[error.code] = (this.stats.byError[error.code] ?? 0) + 1;
      this.emit('pollError', error);
      return null;
    }
  }

  /** Polls until `stop()`: the next poll is scheduled when the previous one has ended. */
  start(options: PollOptions): void {
    if (this.polling) return;
    if (!(options.intervalMs > 0)) throw new RangeError('intervalMs must be positive');
    this.polling = true;
    const rng = options.rng ?? Math.random;
    const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.2));
    const next = () => options.intervalMs * (1 - jitter + 2 * jitter * rng());
    const first =
      options.firstPoll === 'now'
        ? 0
        : typeof options.firstPoll === 'number'
          ? options.firstPoll
          : rng() * options.intervalMs;
    const schedule = (delay: number) => {
      if (!this.polling) return;
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.pollOnce().then(() => schedule(next()));
      }, delay);
      this.timer.unref();
    };
    schedule(first);
  }

  get running(): boolean {
    return this.polling;
  }

  /** Stops polling; resolves once a poll in flight has ended. */
  async stop(): Promise<void> {
    this.polling = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.inFlight;
  }

  private identity(operation: 'list' | 'accept'): SelfServiceIdentity {
    const id = typeof this.options.identity === 'function' ? this.options.identity() : this.options.identity;
    if (!id)
      throw new SelfServiceError('not_enrolled', operation, 0, `${this.udid ?? 'device'} is not enrolled`);
    return id;
  }

  private async call(
    operation: 'list' | 'accept',
    method: 'GET' | 'POST',
    path: string,
  ): Promise<HttpResponse> {
    const identity = this.identity(operation);
    let res: HttpResponse;
    try {
      res = await httpRequest({
        method,
        url: `${this.baseUrl}${path}`,
        headers: {
          accept: 'application/json',
          ...(method === 'POST' ? { 'content-type': 'application/json' } : {}),
        },
        ...(method === 'POST' ? { body: Buffer.from('{}') } : {}),
        ca: this.options.ca,
        cert: leafCertificate(identity.certPem),
        key: identity.keyPem,
        ...(this.options.agent ? { agent: this.options.agent } : {}),
        timeoutMs: this.options.timeoutMs ?? 30_000,
        maxResponseBytes: 4 * 1024 * 1024,
      });
    } catch (err) {
      throw new SelfServiceError('transport', operation, 0, (err as Error).message, { cause: err });
    }
    if (res.status >= 200 && res.status < 300) return res;
    const text = res.body.toString('utf8').slice(0, 200).trim();
    const detail = `HTTP ${res.status}${text ? ` (${text})` : ''}`;
    if (res.status === 403) throw new SelfServiceError('forbidden', operation, 403, detail);
    if (res.status === 404) throw new SelfServiceError('not_found', operation, 404, detail);
    throw new SelfServiceError('http_error', operation, res.status, detail);
  }

  private parse<T>(operation: 'list' | 'accept', res: HttpResponse, schema: z.ZodType<T>): T {
    let json: unknown;
    try {
      json = JSON.parse(res.body.toString('utf8'));
    } catch (err) {
      throw new SelfServiceError('invalid_response', operation, res.status, 'the answer is not JSON', {
        cause: err,
      });
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issues = parsed.error.issues
        .slice(0, 3)
        .map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
        .join('; ');
      throw new SelfServiceError('invalid_response', operation, res.status, `unexpected answer: ${issues}`);
    }
    return parsed.data;
  }
}
