import { randomBytes } from 'node:crypto';
import type { RequestHandler, Response } from 'express';

/**
 * Security headers of the pages end users see. The only inline resource is the page's `<style>`,
 * allowed by a per-response nonce; nothing else may load, the page cannot be framed, and the
 * registration code in the URL never leaks through a `Referer`.
 */
export function contentSecurityPolicy(nonce: string, formActionOrigins: readonly string[] = []): string {
  return [
    "default-src 'none'",
    `style-src 'nonce-${nonce}'`,
    // Chromium applies form-action to the redirects that follow a POST too: the origin the login
    // redirects to (Apple's invitation page) must be listed, not only 'self'.
    `form-action ${["'self'", ...formActionOrigins].join(' ')}`,
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join('; ');
}

const NONCE_KEY = 'cspNonce';

/** Sets the headers on every answer of the router it is mounted on; the nonce goes to `res.locals`. */
export function securityHeaders(): RequestHandler {
  return (_req, res, next) => {
    const nonce = randomBytes(16).toString('base64');
    res.locals[NONCE_KEY] = nonce;
    res.set({
      'Content-Security-Policy': contentSecurityPolicy(nonce),
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      'Cache-Control': 'no-store',
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Resource-Policy': 'same-origin',
      'Permissions-Policy': 'camera=(), microphone=(), geolocation=()',
      'X-Robots-Tag': 'noindex, nofollow',
    });
    next();
  };
}

/** The nonce `securityHeaders()` made for this response. */
export function cspNonce(res: Response): string {
  const nonce: unknown = res.locals[NONCE_KEY];
  if (typeof nonce !== 'string') throw new Error('securityHeaders() is not mounted before this handler');
  return nonce;
}

/** Lets the page's form lead (through a redirect) to these origins as well as its own. */
export function allowFormActionTo(res: Response, origins: readonly string[]): void {
  res.set('Content-Security-Policy', contentSecurityPolicy(cspNonce(res), origins));
}
