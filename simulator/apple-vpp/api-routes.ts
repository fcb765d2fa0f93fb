/**
 * Apple's Apps and Books API v2, the user-management subset, mounted at `/mdm/v2`: service and
 * client config, users create/update/retire, event status and users. Errors are Apple's
 * `{errorNumber, errorMessage}` with Apple's HTTP statuses.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';
import { z } from 'zod';
import { APPLE_ERROR_CODES, VppApiError } from './errors.ts';
import type { FaultInjector } from './faults.ts';
import { NOTIFICATION_TYPES, presentUser } from './model.ts';
import type {
  ClientConfig,
  EventRecord,
  EventType,
  LocationRecord,
  NotificationType,
  RequestUser,
} from './model.ts';
import type { PostResult } from './notifier.ts';
import { decodeSToken, parseAppleDate } from './s-token.ts';
import type { VppState } from './vpp-state.ts';

export interface VppLimits {
  maxAssets: number;
  maxUsers: number;
  maxNotificationLength: number;
  maxRevokeClientUserIds: number;
  maxClientUserIds: number;
  maxSerialNumbers: number;
  maxRevokeSerialNumbers: number;
  maxRequestPerSecond: number;
  maxSubscriptions: number;
  maxSubscriptionClientUserIds: number;
  maxMdmNameLength: number;
  maxMdmMetadataLength: number;
  maxMdmIdLength: number;
}

/** Apple's documented values. */
export const DEFAULT_LIMITS: Readonly<VppLimits> = Object.freeze({
  maxAssets: 25,
  maxUsers: 100,
  maxNotificationLength: 512,
  maxRevokeClientUserIds: 100,
  maxClientUserIds: 1000,
  maxSerialNumbers: 1000,
  maxRevokeSerialNumbers: 100,
  maxRequestPerSecond: 15,
  maxSubscriptions: 25,
  maxSubscriptionClientUserIds: 1000,
  maxMdmNameLength: 100,
  maxMdmMetadataLength: 255,
  maxMdmIdLength: 100,
});

/** What `service/config` lists as `notificationTypes` (Apple's example). */
const SERVICE_NOTIFICATION_TYPES = ['ASSET_MANAGEMENT', 'USER_MANAGEMENT', 'USER_ASSOCIATED', 'ASSET_COUNT'];

export interface ApiDeps {
  state: VppState;
  faults: FaultInjector;
  logger: Logger;
  now: () => number;
  limits: VppLimits;
  usersPageSize: number;
  /** accept `http:` notification URLs (Apple requires HTTPS: 9712) */
  allowHttpNotificationUrl: boolean;
  /** enforce `limits.maxRequestPerSecond` per location with 9646 */
  enforceRateLimit: boolean;
  /** the API base (`https://host:port/mdm/v2`) and the invitation URL template */
  urls: () => { apiBase: string; invitationEmail: string };
  sendTestNotification: (loc: LocationRecord, url: string, authToken: string) => Promise<PostResult>;
  startEvent: (loc: LocationRecord, type: EventType, users: RequestUser[]) => EventRecord;
  changed: () => void;
  countRequest: (route: string, status: number) => void;
  countFault: () => void;
}

const ROUTES: Record<string, readonly string[]> = {
  '/service/config': ['GET'],
  '/client/config': ['GET', 'POST'],
  '/users/create': ['POST'],
  '/users/update': ['POST'],
  '/users/retire': ['POST'],
  '/users': ['GET'],
  '/status': ['GET'],
};

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const MAX_ID_LENGTH = 256;

const clientConfigBody = z.object({
  mdmInfo: z
    .object({
      id: z.string().optional(),
      name: z.string().optional(),
      metadata: z.string().optional(),
    })
    .optional(),
  notificationUrl: z.string().optional(),
  notificationAuthToken: z.string().optional(),
  notificationTypes: z.array(z.string()).optional(),
});

const manageUsersBody = z.object({
  users: z.array(
    z.object({
      clientUserId: z.string().min(1).max(MAX_ID_LENGTH),
      email: z.string().max(254).optional(),
      managedAppleId: z.string().min(1).max(254).optional(),
    }),
  ),
});

const boolParam = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

const usersQuery = z.object({
  clientUserId: z.string().min(1).max(MAX_ID_LENGTH).optional(),
  sinceVersionId: z.string().max(200).optional(),
  pageIndex: z
    .string()
    .regex(/^-?\d{1,9}$/)
    .transform(Number)
    .optional(),
  activeOnly: boolParam.optional(),
  retiredOnly: boolParam.optional(),
  includeRetired: boolParam.optional(),
});

const statusQuery = z.object({ eventId: z.string().min(1).max(200) });

type AuthedRequest = Request & { vppLocation?: LocationRecord };

function location(req: Request): LocationRecord {
  const loc = (req as AuthedRequest).vppLocation;
  if (!loc) throw new VppApiError(9601);
  return loc;
}

function bearer(req: Request): string | null {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1] ?? null;
}

function sendError(res: Response, err: VppApiError): void {
  if (err.retryAfterSeconds !== undefined) res.set('Retry-After', String(err.retryAfterSeconds));
  res.status(err.status).json(err.body());
}

function common(loc: LocationRecord): { tokenExpirationDate: string; uId: string } {
  return { tokenExpirationDate: loc.expDate, uId: loc.uId };
}

function withMdmInfo(loc: LocationRecord): { mdmInfo?: ClientConfig['mdmInfo'] } {
  return loc.clientConfig.mdmInfo ? { mdmInfo: loc.clientConfig.mdmInfo } : {};
}

export function presentClientConfig(loc: LocationRecord): Record<string, unknown> {
  const c = loc.clientConfig;
  return {
    countryISO2ACode: loc.countryISO2ACode,
    defaultPlatform: 'volumestore',
    locationName: loc.locationName,
    ...withMdmInfo(loc),
    ...(c.notificationAuthToken !== undefined ? { notificationAuthToken: c.notificationAuthToken } : {}),
    ...(c.notificationUrl !== undefined ? { notificationUrl: c.notificationUrl } : {}),
    subscribedNotificationTypes: c.notificationTypes.filter((t) => t !== 'TEST_NOTIFICATION'),
    ...common(loc),
    websiteURL: loc.websiteURL,
  };
}

export function apiRouter(deps: ApiDeps): express.Router {
  const router = express.Router();
  const rate = new Map<string, { second: number; count: number }>();

  // counting, faults, method check, auth, rate limit, body
  router.use((req, res, next) => {
    const route = ROUTES[req.path] ? req.path : 'other';
    res.on('finish', () => deps.countRequest(`${req.method} ${route}`, res.statusCode));
    next();
  });

  router.use(async (req, res, next) => {
    const action = deps.faults.take({ method: req.method, path: req.path, sToken: bearer(req) });
    if (!action) return next();
    deps.countFault();
    deps.logger.info({ path: req.path, fault: action.kind }, 'fault injected');
    switch (action.kind) {
      case 'latency':
        await sleep(action.ms);
        return next();
      case 'reset':
        req.socket.destroy();
        return undefined;
      case 'unavailable':
        return sendError(res, new VppApiError(9729, { retryAfterSeconds: action.retryAfterSeconds }));
      case 'tooManyRequests':
        return sendError(
          res,
          new VppApiError(
            9646,
            action.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: action.retryAfterSeconds },
          ),
        );
      case 'error': {
        const opts: { status?: number; errorMessage?: string; retryAfterSeconds?: number } = {};
        if (action.status !== undefined) opts.status = action.status;
        if (action.errorMessage !== undefined) opts.errorMessage = action.errorMessage;
        if (action.retryAfterSeconds !== undefined) opts.retryAfterSeconds = action.retryAfterSeconds;
        return sendError(res, new VppApiError(action.errorNumber, opts));
      }
    }
  });

  router.use((req, _res, next) => {
    const methods = ROUTES[req.path];
    if (!methods) throw new VppApiError(9602, { status: 404, errorMessage: 'Not found.' });
    if (!methods.includes(req.method)) throw new VppApiError(9726);
    next();
  });

  router.use((req, _res, next) => {
    // Service Config is the one call Apple serves without an sToken
    if (req.path === '/service/config') return next();
    const header = req.headers.authorization;
    if (header === undefined || header.trim() === '') throw new VppApiError(9601);
    const sToken = bearer(req);
    if (sToken === null) throw new VppApiError(9722);
    const content = decodeSToken(sToken);
    const loc = content ? deps.state.byToken(content.token) : undefined;
    if (!loc) throw new VppApiError(9601);
    if (loc.revoked) throw new VppApiError(9625);
    if (deps.now() >= parseAppleDate(loc.expDate)) throw new VppApiError(9621);
    if (deps.enforceRateLimit) {
      const second = Math.floor(deps.now() / 1000);
      const r = rate.get(loc.token);
      if (!r || r.second !== second) rate.set(loc.token, { second, count: 1 });
      else if (++r.count > deps.limits.maxRequestPerSecond) {
        throw new VppApiError(9646, { retryAfterSeconds: 1 });
      }
    }
    (req as AuthedRequest).vppLocation = loc;
    next();
  });

  router.use((req, _res, next) => {
    if (req.method !== 'POST') return next();
    if (!req.is('application/json')) throw new VppApiError(9727);
    next();
  });
  router.use(express.json({ limit: '1mb', strict: true }));

  // ---- configuration ----

  router.get('/service/config', (_req, res) => {
    const { apiBase, invitationEmail } = deps.urls();
    res.json({
      errorCodes: [...APPLE_ERROR_CODES.values()].map((c) => ({
        errorMessage: c.errorMessage,
        errorNumber: c.errorNumber,
      })),
      limits: { ...deps.limits },
      notificationTypes: SERVICE_NOTIFICATION_TYPES,
      urls: {
        invitationEmail,
        clientConfig: `${apiBase}/client/config`,
        createUsers: `${apiBase}/users/create`,
        getUsers: `${apiBase}/users`,
        eventStatus: `${apiBase}/status`,
        updateUsers: `${apiBase}/users/update`,
        retireUsers: `${apiBase}/users/retire`,
      },
    });
  });

  router.get('/client/config', (req, res) => {
    res.json(presentClientConfig(location(req)));
  });

  router.post('/client/config', async (req, res) => {
    const loc = location(req);
    const parsed = clientConfigBody.safeParse(req.body);
    if (!parsed.success) throw new VppApiError(9602);
    const body = parsed.data;
    const limits = deps.limits;
    const next: ClientConfig = { ...loc.clientConfig };

    if (body.mdmInfo !== undefined) {
      const { id, name, metadata } = body.mdmInfo;
      if (!id || !name || metadata === undefined) throw new VppApiError(9723);
      if (id.length > limits.maxMdmIdLength) throw new VppApiError(9724);
      if (name.length > limits.maxMdmNameLength) throw new VppApiError(9725);
      if (metadata.length > limits.maxMdmMetadataLength) throw new VppApiError(9713);
      next.mdmInfo = { id, name, metadata };
    }

    if (body.notificationTypes !== undefined) {
      const known = new Set<string>(NOTIFICATION_TYPES);
      if (!body.notificationTypes.every((t) => known.has(t))) throw new VppApiError(9602);
      next.notificationTypes = [...new Set(body.notificationTypes)] as NotificationType[];
    }

    const url = body.notificationUrl ?? '';
    const token = body.notificationAuthToken ?? '';
    let test: { url: string; token: string } | null = null;
    if (body.notificationUrl !== undefined || body.notificationAuthToken !== undefined) {
      if (url === '' && token === '') {
        delete next.notificationUrl;
        delete next.notificationAuthToken;
      } else {
        if (url === '' || token === '') throw new VppApiError(9710);
        if (url.length > limits.maxNotificationLength || token.length > limits.maxNotificationLength) {
          throw new VppApiError(9711);
        }
        let protocol = '';
        try {
          protocol = new URL(url).protocol;
        } catch {
          throw new VppApiError(9712);
        }
        if (protocol !== 'https:' && !(deps.allowHttpNotificationUrl && protocol === 'http:')) {
          throw new VppApiError(9712);
        }
        next.notificationUrl = url;
        next.notificationAuthToken = token;
        test = { url, token };
      }
    }

    if (test) {
      const r = await deps.sendTestNotification(loc, test.url, test.token);
      if (!r.ok) {
        deps.logger.info(
          { uId: loc.uId, status: r.status, error: r.error },
          'TEST_NOTIFICATION not delivered',
        );
        throw new VppApiError(9728);
      }
    }
    deps.state.setClientConfig(loc, next);
    deps.changed();
    res.json(presentClientConfig(loc));
  });

  // ---- users ----

  const manage = (type: EventType) => (req: Request, res: Response) => {
    const loc = location(req);
    const raw: unknown = req.body;
    if (
      typeof raw !== 'object' ||
      raw === null ||
      !('users' in raw) ||
      !Array.isArray(raw.users) ||
      raw.users.length === 0
    ) {
      throw new VppApiError(9720);
    }
    if (raw.users.length > deps.limits.maxUsers) throw new VppApiError(9714);
    const parsed = manageUsersBody.safeParse(raw);
    if (!parsed.success) throw new VppApiError(9602);
    const users = parsed.data.users;
    const ids = new Set(users.map((u) => u.clientUserId));
    if (ids.size !== users.length) throw new VppApiError(9715);
    let requested: RequestUser[];
    if (type === 'RETIRE') {
      requested = users.map((u) => ({ clientUserId: u.clientUserId }));
    } else {
      if (users.some((u) => u.email !== undefined && !EMAIL.test(u.email))) throw new VppApiError(9717);
      requested = users.map((u) => {
        const r: RequestUser = { clientUserId: u.clientUserId };
        if (u.email !== undefined) r.email = u.email;
        if (u.managedAppleId !== undefined) r.managedAppleId = u.managedAppleId;
        return r;
      });
    }
    const event = deps.startEvent(loc, type, requested);
    res.json({ eventId: event.eventId, ...common(loc) });
  };
  router.post('/users/create', manage('CREATE'));
  router.post('/users/update', manage('UPDATE'));
  router.post('/users/retire', manage('RETIRE'));

  router.get('/users', (req, res) => {
    const loc = location(req);
    const parsed = usersQuery.safeParse(req.query);
    if (!parsed.success) throw new VppApiError(9602);
    const q = parsed.data;
    let sinceVersion: number | undefined;
    if (q.sinceVersionId !== undefined) {
      const v = deps.state.parseVersionId(loc, q.sinceVersionId);
      if (v === null) throw new VppApiError(9721);
      sinceVersion = v;
    }
    // the version before reading: a change during paging shows in the next sinceVersionId query
    const versionId = deps.state.versionIdOf(loc);
    const page = deps.state.listUsers(loc, {
      ...(q.clientUserId !== undefined ? { clientUserId: q.clientUserId } : {}),
      activeOnly: q.activeOnly === true || q.includeRetired === false,
      retiredOnly: q.retiredOnly === true,
      ...(sinceVersion !== undefined ? { sinceVersion } : {}),
      pageIndex: q.pageIndex ?? 0,
      pageSize: deps.usersPageSize,
    });
    if ('pageOutOfRange' in page) throw new VppApiError(9650);
    res.json({
      currentPageIndex: page.currentPageIndex,
      ...(page.nextPageIndex !== undefined ? { nextPageIndex: page.nextPageIndex } : {}),
      size: page.users.length,
      totalPages: page.totalPages,
      users: page.users.map(presentUser),
      versionId,
      ...withMdmInfo(loc),
      ...common(loc),
    });
  });

  router.get('/status', (req, res) => {
    const loc = location(req);
    const parsed = statusQuery.safeParse(req.query);
    if (!parsed.success) throw new VppApiError(9600);
    const event = deps.state.event(loc, parsed.data.eventId);
    if (!event) throw new VppApiError(9708);
    res.json({
      eventStatus: event.eventStatus,
      eventType: event.type,
      failures: event.failures.map((f) => ({
        errorNumber: f.errorNumber,
        errorMessage: f.errorMessage,
        errorInfo: { clientUserIds: [f.clientUserId] },
        clientUserId: f.clientUserId,
      })),
      numCompleted: event.numCompleted,
      numRequested: event.users.length,
      ...withMdmInfo(loc),
      ...common(loc),
    });
  });

  router.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    if (err instanceof VppApiError) return sendError(res, err);
    const e = err as { type?: unknown; status?: unknown };
    if (e.type === 'entity.parse.failed' || e.type === 'entity.too.large' || e.status === 400) {
      return sendError(res, new VppApiError(9602, { status: e.type === 'entity.too.large' ? 413 : 400 }));
    }
    deps.logger.error({ err }, 'apple-vpp simulator: unexpected error');
    return sendError(res, new VppApiError(9603));
  });

  return router;
}
