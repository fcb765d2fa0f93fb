import { Router } from 'express';
import { z } from 'zod';
import { BadRequestError, ForbiddenError, NotFoundError } from '../errors.ts';
import { principalOf } from './auth.ts';
import { hashApiToken, newApiTokenSecret, type ApiToken, type ApiTokenStore } from './api-tokens.ts';
import { listQuery, parse } from './validate.ts';

export interface ApiTokenRouteDeps {
  tokens: ApiTokenStore;
  now?: () => Date;
}

const tokenCreate = z
  .object({
    // api.md names no fields: a label is welcome but not required.
    name: z.string().trim().min(1, 'must not be empty').max(255).default('API token'),
    siteId: z.string().min(1).max(64).nullable().optional(),
    expiresAt: z.iso.datetime({ offset: true }).nullable().optional(),
  })
  .strict();

function presentApiToken(token: ApiToken) {
  return {
    id: token.id,
    name: token.name,
    siteId: token.siteId,
    expiresAt: token.expiresAt ? token.expiresAt.toISOString() : null,
    createdAt: token.createdAt.toISOString(),
  };
}

/**
 * `/api/v1/api-tokens`: admin API tokens, optionally limited to one site. The secret is in the answer
 * to `POST` only (as `token`); later reads show everything else. `DELETE` revokes at once, on every
 * instance (tokens are looked up in the database on each call). Site-limited callers get `403`
 * (see `site-scope.ts`).
 */
export function apiTokenRoutes(deps: ApiTokenRouteDeps): Router {
  const r = Router();
  const now = () => deps.now?.() ?? new Date();

  // Tokens are managed with the admin token only: a token must not outlive or widen the one that made
  // it (an expiring token making a permanent one), nor revoke its peers.
  r.use('/api-tokens', (_req, res, next) => {
    if (principalOf(res).kind !== 'admin') {
      throw new ForbiddenError('API tokens are managed with the admin token only', 'admin_token_required');
    }
    next();
  });

  r.post('/api-tokens', async (req, res) => {
    const body = parse(tokenCreate, req.body ?? {});
    const expiresAt = body.expiresAt ? new Date(body.expiresAt) : null;
    if (expiresAt && expiresAt.getTime() <= now().getTime()) {
      throw new BadRequestError('invalid body', { expiresAt: 'must be in the future' });
    }
    const secret = newApiTokenSecret();
    const token = await deps.tokens.create(
      { name: body.name, siteId: body.siteId ?? null, expiresAt, tokenHash: hashApiToken(secret) },
      now(),
    );
    res.status(201).json({ ...presentApiToken(token), token: secret });
  });

  r.get('/api-tokens', async (req, res) => {
    const q = parse(listQuery, req.query, 'query');
    const page = await deps.tokens.list({ limit: q.limit, cursor: q.cursor ?? null, q: q.q ?? null });
    res.json({
      items: page.items.map(presentApiToken),
      ...(page.nextCursor !== null ? { nextCursor: page.nextCursor } : {}),
    });
  });

  r.get('/api-tokens/:id', async (req, res) => {
    const token = await deps.tokens.get(req.params.id);
    if (!token) throw new NotFoundError('API token');
    res.json(presentApiToken(token));
  });

  r.delete('/api-tokens/:id', async (req, res) => {
    if (!(await deps.tokens.delete(req.params.id))) throw new NotFoundError('API token');
    res.status(204).end();
  });

  return r;
}
