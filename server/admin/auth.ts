import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { UnauthorizedError } from '../errors.ts';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** `Authorization: Bearer <token>` against the admin token (compared in constant time). */
export function requireAdmin(adminToken: string): RequestHandler {
  const expected = digest(adminToken);
  return (req, _res, next) => {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m?.[1] || !timingSafeEqual(digest(m[1]), expected)) {
      next(new UnauthorizedError());
      return;
    }
    next();
  };
}
