/**
 * The gateway's own endpoints under /sim/ (not part of APNs): health, stats, faults, an outage switch,
 * a look at a token's pending push, and the remote subscriptions. JSON in and out; errors as
 * `{"error":{"code","message","details"?}}`. When an admin token is configured every call needs
 * `Authorization: Bearer <token>`.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { z } from 'zod';
import type { FaultsView } from './faults.ts';
import { deviceTokenSchema, faultPatchSchema } from './faults.ts';
import type { ApnsGatewayStats } from './gateway-stats.ts';
import type { PendingPush } from './pending-pushes.ts';
import type { RemoteSubscriptions } from './remote-subscriptions.ts';
import { SUBSCRIPTIONS_PATH, createSubscriptionSchema, updateSubscriptionSchema } from './sse.ts';

const MAX_SIM_BODY = 32 * 1024 * 1024;

export interface SimControl {
  stats(): ApnsGatewayStats;
  faults(): FaultsView;
  /** throws a ZodError for an invalid patch */
  setFaults(patch: unknown): void;
  resetFaults(): void;
  outage(durationMs: number): Promise<void>;
  pending(token: string): PendingPush | undefined;
  readonly subscriptions: RemoteSubscriptions;
}

const outageSchema = z.object({ durationMs: z.number().int().min(0).max(3_600_000) }).strict();

class SimError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

function answer(stream: ServerHttp2Stream, status: number, body?: unknown): void {
  if (stream.destroyed || stream.headersSent) return;
  if (body === undefined) {
    stream.respond({ ':status': status }, { endStream: true });
    return;
  }
  stream.respond({ ':status': status, 'content-type': 'application/json' });
  stream.end(JSON.stringify(body));
}

function readBody(stream: ServerHttp2Stream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_SIM_BODY) chunks.push(c);
    });
    stream.once('end', () => {
      if (size > MAX_SIM_BODY) reject(new SimError(413, 'too_large', `body over ${MAX_SIM_BODY} bytes`));
      else resolve(Buffer.concat(chunks));
    });
    stream.once('error', reject);
  });
}

async function jsonBody<T>(stream: ServerHttp2Stream, schema: z.ZodType<T>): Promise<T> {
  const raw = await readBody(stream);
  let value: unknown;
  try {
    value = raw.length === 0 ? {} : JSON.parse(raw.toString('utf8'));
  } catch {
    throw new SimError(400, 'invalid_input', 'body is not JSON');
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success)
    throw new SimError(
      400,
      'invalid_input',
      'invalid body',
      parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
    );
  return parsed.data;
}

function authorized(headers: IncomingHttpHeaders, adminToken: string | undefined): boolean {
  if (adminToken === undefined) return true;
  const header = headers.authorization;
  if (typeof header !== 'string' || !header.startsWith('Bearer ')) return false;
  const given = Buffer.from(header.slice('Bearer '.length));
  const expected = Buffer.from(adminToken);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export function handleSimRequest(
  control: SimControl,
  adminToken: string | undefined,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  path: string,
  onError: (err: unknown) => void,
): void {
  route(control, adminToken, stream, headers, path).catch((err: unknown) => {
    if (err instanceof SimError) {
      answer(stream, err.status, {
        error: {
          code: err.code,
          message: err.message,
          ...(err.details === undefined ? {} : { details: err.details }),
        },
      });
      return;
    }
    onError(err);
    answer(stream, 500, { error: { code: 'internal_error', message: 'internal error' } });
  });
}

async function route(
  control: SimControl,
  adminToken: string | undefined,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  fullPath: string,
): Promise<void> {
  const method = headers[':method'] ?? 'GET';
  const path = fullPath.split('?')[0] ?? fullPath;
  if (!authorized(headers, adminToken))
    throw new SimError(401, 'unauthorized', 'missing or wrong bearer token');
  const notAllowed = (): never => {
    throw new SimError(405, 'method_not_allowed', `${method} not allowed on ${path}`);
  };

  if (path === '/sim/health') {
    if (method !== 'GET') notAllowed();
    return answer(stream, 200, { ok: true });
  }
  if (path === '/sim/stats') {
    if (method !== 'GET') notAllowed();
    return answer(stream, 200, control.stats());
  }
  if (path === '/sim/faults') {
    if (method === 'GET') return answer(stream, 200, control.faults());
    if (method !== 'PUT' && method !== 'PATCH') notAllowed();
    const patch = await jsonBody(stream, faultPatchSchema);
    if (method === 'PUT') control.resetFaults();
    control.setFaults(patch);
    return answer(stream, 200, control.faults());
  }
  if (path === '/sim/outage') {
    if (method !== 'POST') notAllowed();
    const { durationMs } = await jsonBody(stream, outageSchema);
    answer(stream, 202, { durationMs });
    // the answer must leave before the listener and its sessions close
    stream.once('close', () => {
      void control.outage(durationMs);
    });
    return;
  }
  if (path.startsWith('/sim/pending/')) {
    if (method !== 'GET') notAllowed();
    const token = deviceTokenSchema.safeParse(path.slice('/sim/pending/'.length));
    const push = token.success ? control.pending(token.data) : undefined;
    if (push === undefined) throw new SimError(404, 'not_found', 'no pending push for this token');
    return answer(stream, 200, { ...push, expiresAt: new Date(push.expiration * 1000).toISOString() });
  }
  if (path === SUBSCRIPTIONS_PATH) {
    if (method !== 'POST') notAllowed();
    const { tokens } = await jsonBody(stream, createSubscriptionSchema);
    return answer(stream, 201, control.subscriptions.create(tokens));
  }
  if (path.startsWith(`${SUBSCRIPTIONS_PATH}/`)) {
    const rest = path.slice(SUBSCRIPTIONS_PATH.length + 1).split('/');
    const id = rest[0] ?? '';
    if (rest.length === 2 && rest[1] === 'events') {
      if (method !== 'GET') notAllowed();
      const result = control.subscriptions.open(id, stream);
      if (result === 'not_found') throw new SimError(404, 'not_found', 'unknown subscription');
      if (result === 'already_open')
        throw new SimError(409, 'conflict', 'this subscription already has a stream');
      return;
    }
    if (rest.length === 1) {
      if (method === 'PATCH') {
        const { add, remove } = await jsonBody(stream, updateSubscriptionSchema);
        const n = control.subscriptions.update(id, add ?? [], remove ?? []);
        if (n === null) throw new SimError(404, 'not_found', 'unknown subscription');
        return answer(stream, 200, { id, tokens: n });
      }
      if (method === 'DELETE') {
        if (!control.subscriptions.delete(id)) throw new SimError(404, 'not_found', 'unknown subscription');
        return answer(stream, 204);
      }
      notAllowed();
    }
  }
  throw new SimError(404, 'not_found', `no such endpoint: ${path}`);
}
