import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import { UnauthorizedError } from '../errors.ts';
import { hashApiToken, type ApiTokenStore } from './api-tokens.ts';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Who is calling the admin API: the configured admin token, or a token made through `/api-tokens`. */
export type Principal =
  { kind: 'admin' } | { kind: 'api_token'; tokenId: string; name: string; siteId: string | null };

const PRINCIPAL = 'mdmPrincipal';

export interface AdminAuthOptions {
  adminToken: string;
  /** Tokens made through `/api/v1/api-tokens` (absent: only the admin token is accepted). */
  apiTokens?: Pick<ApiTokenStore, 'findByHash'>;
  now?: () => Date;
}

/**
 * `Authorization: Bearer <token>`: the admin token (compared in constant time), or an API token found
 * by its SHA-256 (an index lookup, so no secret comparison happens in JavaScript). Expired or revoked
 * tokens are `401`. The caller is left in `res.locals` for `principalOf` / `siteLimitOf`.
 */
export function requireAdmin(o: AdminAuthOptions): RequestHandler {
  const expected = digest(o.adminToken);
  const now = () => o.now?.() ?? new Date();
  return async (req, res, next) => {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const presented = m?.[1];
    if (!presented) throw new UnauthorizedError();
    if (timingSafeEqual(digest(presented), expected)) {
      res.locals[PRINCIPAL] = { kind: 'admin' } satisfies Principal;
      next();
      return;
    }
    const token = o.apiTokens ? await o.apiTokens.findByHash(hashApiToken(presented)) : null;
    if (!token || (token.expiresAt !== null && token.expiresAt.getTime() <= now().getTime())) {
      throw new UnauthorizedError();
    }
    res.locals[PRINCIPAL] = {
      kind: 'api_token',
      tokenId: token.id,
      name: token.name,
      siteId: token.siteId,
    } satisfies Principal;
    next();
  };
}

export function principalOf(res: Response): Principal {
  const p = res.locals[PRINCIPAL] as Principal | undefined;
  // Routes behind `requireAdmin` always have one; anything else is a wiring mistake, not a caller's.
  if (!p) throw new Error('admin route reached without authentication');
  return p;
}

/** The one site the caller is limited to, or null for an unrestricted caller. */
export function siteLimitOf(res: Response): string | null {
  const p = principalOf(res);
  return p.kind === 'api_token' ? p.siteId : null;
}
