import { randomBytes } from 'node:crypto';
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import { LoginUnavailableError, type LoginVerifier } from '../directory/login-service.ts';
import type { Logger } from '../log.ts';
import type { CsrfTokens } from './csrf-tokens.ts';
import type { LoginThrottle } from './login-throttle.ts';
import {
  LOGIN_FAILED_MESSAGE,
  LOGIN_UNAVAILABLE_MESSAGE,
  renderErrorPage,
  renderExpiredPage,
  renderLoginPage,
  renderNotFoundPage,
  renderNotReadyPage,
  renderRegisteredPage,
  renderThrottledPage,
} from './pages.ts';
import { allowFormActionTo, cspNonce, securityHeaders } from './security-headers.ts';
import { REGISTRATION_CODE_PATTERN, type RegistrationTarget, type RegistrationTargets } from './targets.ts';

export interface RegistrationRouterDeps {
  targets: RegistrationTargets;
  login: LoginVerifier;
  csrf: CsrfTokens;
  throttle: LoginThrottle;
  log: Logger;
  /** `Secure` on the session cookie; default: when the request came over HTTPS (`req.secure`). */
  secureCookies?: boolean;
}

/** The browser session the CSRF tokens are bound to (with the code). */
export const SESSION_COOKIE = 'mdm_reg';
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

const loginForm = z.object({
  username: z.string().max(256),
  password: z.string().max(1024),
});
const csrfField = z.object({ csrfToken: z.string().min(1).max(256) });

function readCookie(req: Request, name: string): string | null {
  const header = req.headers.cookie;
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

function codeOf(req: Request): string {
  const code: unknown = req.params.code;
  return typeof code === 'string' ? code : '';
}

function appleUrl(target: RegistrationTarget): URL | null {
  if (target.appleInvitationUrl === null) return null;
  try {
    const url = new URL(target.appleInvitationUrl);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url : null;
  } catch {
    return null;
  }
}

/**
 * `GET` and `POST /register/:code`, the page an invitation email links to (api.md):
 * - unknown code → 404 page; user already registered → 200 page saying so;
 * - no `requireLogin` → the link is recorded as opened and 303 to the user's Apple invitation URL;
 * - `requireLogin` → 200 login form (`username`, `password`, hidden `csrfToken`) posting to the same
 *   URL; the invited user's right credentials → recorded as opened, 303 to Apple; wrong ones → 200,
 *   the form again with a message that says nothing about which part was wrong; a POST without a
 *   valid CSRF token → 403; more than the allowed failures → 429 with `Retry-After`.
 */
export function registrationRouter(deps: RegistrationRouterDeps): Router {
  const r = Router();
  const log = deps.log.child({ component: 'registration' });
  r.use('/register', securityHeaders());
  const page = (res: Response, status: number, html: string) => res.status(status).type('html').send(html);
  const parseForm = express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 10 });
  // A body the parser refuses (too large, too many fields, bad encoding) gets a page, not JSON.
  const form: RequestHandler = (req, res, next) =>
    parseForm(req, res, (err?: unknown) => {
      if (err === undefined || err === null) return next();
      const status = (err as { status?: unknown }).status;
      page(
        res,
        typeof status === 'number' && status >= 400 && status < 500 ? status : 400,
        renderErrorPage({ nonce: cspNonce(res) }),
      );
    });

  const fail = (res: Response, err: unknown, code: string) => {
    log.error({ err, code: code.slice(0, 6) }, 'registration page failed');
    if (!res.headersSent) page(res, 500, renderErrorPage({ nonce: cspNonce(res) }));
  };

  /** Resolves the code into a target, or answers (404, 200 registered, 503 not ready) and returns null. */
  const lookup = async (req: Request, res: Response) => {
    const code = codeOf(req);
    if (!REGISTRATION_CODE_PATTERN.test(code)) {
      page(res, 404, renderNotFoundPage({ nonce: cspNonce(res) }));
      return null;
    }
    const target = await deps.targets.resolve(code);
    if (!target) {
      page(res, 404, renderNotFoundPage({ nonce: cspNonce(res) }));
      return null;
    }
    const nonce = cspNonce(res);
    if (target.alreadyRegistered) {
      page(
        res,
        200,
        renderRegisteredPage({ nonce, orgName: target.orgName, invitationName: target.invitationName }),
      );
      return null;
    }
    const apple = appleUrl(target);
    if (!apple) {
      if (target.appleInvitationUrl !== null)
        log.error({ code: code.slice(0, 6) }, 'Apple invitation URL is not http(s)');
      res.set('Retry-After', '300');
      page(
        res,
        503,
        renderNotReadyPage({ nonce, orgName: target.orgName, invitationName: target.invitationName }),
      );
      return null;
    }
    return { code, target, apple };
  };

  const toApple = async (req: Request, res: Response, code: string, apple: URL) => {
    if (req.method !== 'HEAD') {
      try {
        await deps.targets.recordOpened(code);
      } catch (err) {
        // The user still goes on to Apple; registration is learnt from Apple anyway.
        log.error({ err, code: code.slice(0, 6) }, 'could not record the opened link');
      }
    }
    res.redirect(303, apple.href);
  };

  const sessionId = (req: Request, res: Response): string => {
    const existing = readCookie(req, SESSION_COOKIE);
    if (existing && SESSION_ID.test(existing)) return existing;
    const id = randomBytes(32).toString('base64url');
    res.cookie(SESSION_COOKIE, id, {
      httpOnly: true,
      sameSite: 'strict',
      secure: deps.secureCookies ?? req.secure,
      path: '/register',
    });
    return id;
  };

  const showForm = async (
    req: Request,
    res: Response,
    found: { code: string; target: RegistrationTarget; apple: URL },
    status: number,
    extra: { error?: string; username?: string } = {},
  ) => {
    const token = await deps.csrf.issue(`${found.code}\n${sessionId(req, res)}`);
    allowFormActionTo(res, [found.apple.origin]);
    page(
      res,
      status,
      renderLoginPage({
        nonce: cspNonce(res),
        orgName: found.target.orgName,
        invitationName: found.target.invitationName,
        csrfToken: token,
        ...extra,
      }),
    );
  };

  r.get('/register/:code', async (req, res) => {
    try {
      const found = await lookup(req, res);
      if (!found) return;
      if (!found.target.requireLogin) return await toApple(req, res, found.code, found.apple);
      await showForm(req, res, found, 200);
    } catch (err) {
      fail(res, err, codeOf(req));
    }
  });

  r.post('/register/:code', form, async (req, res) => {
    try {
      const found = await lookup(req, res);
      if (!found) return;
      const { code, target } = found;
      if (!target.requireLogin) return await toApple(req, res, code, found.apple);

      const body: unknown = req.body;
      const csrf = csrfField.safeParse(body);
      const sid = readCookie(req, SESSION_COOKIE);
      if (
        !csrf.success ||
        !sid ||
        !SESSION_ID.test(sid) ||
        !(await deps.csrf.consume(`${code}\n${sid}`, csrf.data.csrfToken))
      ) {
        page(res, 403, renderExpiredPage({ nonce: cspNonce(res), orgName: target.orgName }));
        return;
      }

      const key = { code, address: req.ip ?? req.socket.remoteAddress ?? 'unknown' };
      const decision = await deps.throttle.acquire(key);
      if (!decision.allowed) {
        log.warn({ code: code.slice(0, 6), address: key.address }, 'registration login throttled');
        res.set('Retry-After', String(decision.retryAfterSeconds));
        page(
          res,
          429,
          renderThrottledPage({
            nonce: cspNonce(res),
            orgName: target.orgName,
            retryAfterSeconds: decision.retryAfterSeconds,
          }),
        );
        return;
      }

      const fields = loginForm.safeParse(body);
      const attempt = fields.success ? fields.data : { username: '', password: '' };
      let result;
      try {
        result =
          attempt.username && attempt.password
            ? await deps.login.login({ id: target.userId, username: target.username }, attempt)
            : { ok: false as const };
      } catch (err) {
        if (!(err instanceof LoginUnavailableError)) throw err;
        await deps.throttle.forget(key);
        await showForm(req, res, found, 503, {
          error: LOGIN_UNAVAILABLE_MESSAGE,
          username: attempt.username,
        });
        return;
      }
      if (result.ok) {
        await deps.throttle.succeeded(key);
        log.info({ userId: target.userId, method: result.method }, 'registration login');
        return await toApple(req, res, code, found.apple);
      }
      await showForm(req, res, found, 200, { error: LOGIN_FAILED_MESSAGE, username: attempt.username });
    } catch (err) {
      fail(res, err, codeOf(req));
    }
  });

  return r;
}
