/**
 * The simulator's own control endpoints (`/sim/...`, JSON), not part of Apple's API: mint and revoke
 * sTokens, inspect locations and users, inject faults, accept invitations without the page.
 */
import { timingSafeEqual } from 'node:crypto';
import express from 'express';
import type { NextFunction, Request, Response } from 'express';
import { z } from 'zod';
import type { FaultRule } from './faults.ts';
import { faultSpecSchema } from './faults.ts';
import type { AcceptResult, DeclineResult } from './vpp-state.ts';

export interface AdminDeps {
  /** when set, every `/sim` call needs `Authorization: Bearer <adminToken>` */
  adminToken?: string;
  mint: (opts: MintOptions) => { sToken: string; uId: string; expDate: string };
  revoke: (sToken: string) => boolean;
  locations: () => unknown[];
  users: (uId: string) => unknown[] | null;
  stats: () => unknown;
  faults: () => { faults: FaultRule[]; dropNotifications: number | 'all' };
  addFault: (spec: z.output<typeof faultSpecSchema>) => string;
  removeFault: (id: string) => boolean;
  clearFaults: () => void;
  dropNotifications: (n: number | boolean) => void;
  unreachableFor: (ms: number) => void;
  accept: (inviteCode: string, appleId: string) => AcceptResult;
  decline: (inviteCode: string) => DeclineResult;
  flushEvents: () => number;
}

export interface MintOptions {
  orgName: string;
  expDate?: string;
  locationName?: string;
  countryISO2ACode?: string;
}

const mintBody = z.object({
  orgName: z.string().min(1).max(200),
  expDate: z.string().min(1).max(64).optional(),
  locationName: z.string().min(1).max(200).optional(),
  countryISO2ACode: z
    .string()
    .regex(/^[A-Z]{2}$/)
    .optional(),
});
const revokeBody = z.object({ sToken: z.string().min(1).max(8192) });
const dropBody = z.object({ drop: z.union([z.boolean(), z.number().int().nonnegative()]) });
const unreachableBody = z.object({ ms: z.number().int().min(1).max(600_000) });
const acceptBody = z.object({
  inviteCode: z.string().min(1).max(200),
  appleId: z.string().trim().min(1).max(254),
});
const declineBody = z.object({ inviteCode: z.string().min(1).max(200) });

class BadRequest extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function parse<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  const r = schema.safeParse(body);
  if (!r.success) {
    const detail = r.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
    throw new BadRequest(400, 'invalid_request', detail);
  }
  return r.data;
}

export function adminRouter(deps: AdminDeps): express.Router {
  const router = express.Router();
  const expected = deps.adminToken === undefined ? null : Buffer.from(`Bearer ${deps.adminToken}`);

  router.use((req, _res, next) => {
    if (!expected) return next();
    const got = Buffer.from(req.headers.authorization ?? '');
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
      throw new BadRequest(401, 'unauthorized', 'admin token required');
    }
    next();
  });
  router.use(express.json({ limit: '64kb' }));

  router.post('/tokens', (req, res) => {
    const body = parse(mintBody, req.body);
    res.status(201).json(deps.mint(body));
  });
  router.post('/tokens/revoke', (req, res) => {
    const { sToken } = parse(revokeBody, req.body);
    if (!deps.revoke(sToken)) throw new BadRequest(404, 'not_found', 'unknown sToken');
    res.status(204).end();
  });

  router.get('/locations', (_req, res) => {
    res.json({ locations: deps.locations() });
  });
  router.get('/locations/:uId/users', (req, res) => {
    const users = deps.users(req.params.uId ?? '');
    if (!users) throw new BadRequest(404, 'not_found', 'unknown location');
    res.json({ users });
  });
  router.get('/stats', (_req, res) => {
    res.json(deps.stats());
  });

  router.get('/faults', (_req, res) => {
    res.json(deps.faults());
  });
  router.post('/faults', (req, res) => {
    const spec = parse(faultSpecSchema, req.body);
    res.status(201).json({ id: deps.addFault(spec) });
  });
  router.delete('/faults', (_req, res) => {
    deps.clearFaults();
    res.status(204).end();
  });
  router.delete('/faults/:id', (req, res) => {
    if (!deps.removeFault(req.params.id ?? '')) throw new BadRequest(404, 'not_found', 'unknown fault');
    res.status(204).end();
  });
  router.post('/faults/drop-notifications', (req, res) => {
    deps.dropNotifications(parse(dropBody, req.body).drop);
    res.status(204).end();
  });
  router.post('/faults/unreachable', (req, res) => {
    const { ms } = parse(unreachableBody, req.body);
    res.status(202).json({ unreachableForMs: ms });
    res.on('finish', () => deps.unreachableFor(ms));
  });

  router.post('/invitations/accept', (req, res) => {
    const { inviteCode, appleId } = parse(acceptBody, req.body);
    res.json(deps.accept(inviteCode, appleId));
  });
  router.post('/invitations/decline', (req, res) => {
    const { inviteCode } = parse(declineBody, req.body);
    res.json(deps.decline(inviteCode));
  });
  router.post('/events/flush', (_req, res) => {
    res.json({ completed: deps.flushEvents() });
  });

  router.use((_req: Request, _res: Response, next: NextFunction) => {
    next(new BadRequest(404, 'not_found', 'no such simulator endpoint'));
  });
  router.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    if (err instanceof BadRequest)
      return res.status(err.status).json({ error: err.code, message: err.message });
    const e = err as { type?: unknown };
    if (e.type === 'entity.parse.failed') {
      return res.status(400).json({ error: 'invalid_json', message: 'body is not JSON' });
    }
    return res.status(500).json({ error: 'internal_error', message: 'internal error' });
  });
  return router;
}
