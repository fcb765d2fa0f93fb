import type { TLSSocket } from 'node:tls';
import express, { type ErrorRequestHandler, type Request, type Response } from 'express';
import { decodePlistDict, PlistError } from '../shared/plist/index.ts';
import { parseCheckin, parseCommandReport, ProtocolError } from '../shared/mdm/index.ts';
import { apiTokenRoutes } from './admin/api-token-routes.ts';
import type { ApiTokenStore } from './admin/api-tokens.ts';
import { requireAdmin } from './admin/auth.ts';
import { siteScope, type SiteScopeDeps } from './admin/site-scope.ts';
import { pushAdminRoutes, type PushAdminDeps } from './admin/push-routes.ts';
import { mdmAdminRoutes, type AdminDeps } from './admin/routes.ts';
import type { CheckinService } from './checkin/checkin-service.ts';
import type { ConnectService } from './commands/connect-service.ts';
import { directoryRoutes, type DirectoryDeps } from './directory/routes.ts';
import type { EnrollmentService } from './enrollment/enrollment-service.ts';
import { AppError, NotFoundError } from './errors.ts';
import type { Logger } from './log.ts';
import type { DeviceIdentity, DeviceIdentityVerifier } from './transport/device-identity.ts';
import { vppNotificationRoutes, vppRoutes, type VppDeps } from './vpp/routes.ts';
import { invitationRoutes, type InvitationRouteDeps } from './invitations/routes.ts';
import { registrationRouter, type RegistrationRouterDeps } from './registration/registration-router.ts';
import { selfServiceRoutes } from './delivery/routes.ts';
import type { SelfService } from './delivery/self-service.ts';

export interface AppDeps extends AdminDeps {
  log: Logger;
  adminToken: string;
  maxBodyBytes: number;
  verifier: DeviceIdentityVerifier;
  checkin: CheckinService;
  connect: ConnectService;
  enrollment: EnrollmentService;
  directory: DirectoryDeps;
  push: PushAdminDeps;
  vpp: VppDeps;
  invitations: InvitationRouteDeps;
  /** The registration page (`/register/{code}`) the invitation emails link to. */
  registration: RegistrationRouterDeps;
  /** Self Service on devices (`/selfservice/v1/...`, the device's identity certificate). */
  selfService: SelfService;
  /** Admin API tokens made through `/api/v1/api-tokens`. */
  apiTokens: ApiTokenStore;
  /** What the rules of site-limited API tokens look up. */
  siteScope: SiteScopeDeps;
}

/** The HTTP surface: device endpoints (plist, never 401) and the admin API (JSON). */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  const rawBody = express.raw({ type: () => true, limit: deps.maxBodyBytes });

  // ---- device-facing ----
  app.get('/mdm/enroll', async (req, res) => {
    const token = typeof req.query.token === 'string' ? req.query.token : '';
    if (!token) throw new AppError(403, 'invalid_enrollment_token', 'enrollment token missing');
    const profile = await deps.enrollment.profile(token);
    res
      .status(200)
      .type('application/x-apple-aspen-config')
      .set('Content-Disposition', 'attachment; filename="enroll.mobileconfig"')
      .send(profile.body);
  });

  app.put('/mdm/checkin', rawBody, async (req, res) => {
    const { identity, body } = identify(deps.verifier, req);
    const msg = parseCheckin(decodePlistDict(body, { maxBytes: deps.maxBodyBytes }));
    const answer = await deps.checkin.handle(msg, identity);
    res.status(answer.status);
    if (answer.body) res.type('application/xml').send(answer.body);
    else res.end();
  });

  app.put('/mdm/connect', rawBody, async (req, res) => {
    const { identity, body } = identify(deps.verifier, req);
    const report = parseCommandReport(decodePlistDict(body, { maxBytes: deps.maxBodyBytes }));
    const next = await deps.connect.handle(report, identity);
    if (next === null) {
      res.status(200).end();
    } else {
      res.status(200).type('application/xml').send(next);
    }
  });

  // ---- admin API ----
  const api = express.Router();
  api.use(requireAdmin({ adminToken: deps.adminToken, apiTokens: deps.apiTokens }));
  api.use(express.json({ limit: '1mb' }));
  api.use(siteScope(deps.siteScope));
  api.use(apiTokenRoutes({ tokens: deps.apiTokens }));
  api.use(mdmAdminRoutes(deps));
  api.use(directoryRoutes(deps.directory));
  api.use(pushAdminRoutes(deps.push));
  api.use(vppRoutes(deps.vpp));
  api.use(invitationRoutes(deps.invitations));
  api.use((_req, _res, next) => next(new NotFoundError('route')));
  app.use('/api/v1', api);
  // Apple's Apps and Books notifications (authenticated by each location's notification token).
  app.use(vppNotificationRoutes(deps.vpp));
  // The registration page of emailed links (HTML; its own security headers and error pages).
  app.use(registrationRouter(deps.registration));
  // Self Service on devices (JSON; the TLS client certificate or the trusted proxy's header; never 401).
  app.use(selfServiceRoutes({ verifier: deps.verifier, selfService: deps.selfService }));

  app.use((_req, _res, next) => next(new NotFoundError('route')));
  app.use(errorHandler(deps.log));
  return app;
}

function identify(
  verifier: DeviceIdentityVerifier,
  req: Request,
): { identity: DeviceIdentity; body: Buffer } {
  const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const socket = req.socket as Partial<TLSSocket>;
  let peer: Buffer | null = null;
  if (typeof socket.getPeerCertificate === 'function') {
    const cert = socket.getPeerCertificate(false);
    if (cert && Buffer.isBuffer(cert.raw)) peer = cert.raw;
  }
  // Identity before parsing: unauthenticated bodies never reach the XML parser.
  const identity = verifier.identify({ headers: req.headers, body, tlsPeerCertificate: peer });
  return { identity, body };
}

const isDevicePath = (req: Request) => req.path.startsWith('/mdm/');

interface BodyParserError {
  type?: string;
  status?: number;
}

function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const e = toAppError(err);
    if (e.status >= 500) log.error({ err, path: req.path, method: req.method }, 'request failed');
    else log.debug({ path: req.path, method: req.method, status: e.status, code: e.code }, e.message);
    if (res.headersSent) return;
    if (isDevicePath(req)) {
      sendDeviceError(res, e);
    } else {
      res.status(e.status).json({
        error: { code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) },
      });
    }
  };
}

function sendDeviceError(res: Response, e: AppError): void {
  // Never 401 to a device: it would remove its MDM profile.
  const status = e.status === 401 ? 403 : e.status;
  res.status(status).type('text/plain').send(`${e.message}\n`);
}

function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof PlistError) {
    if (err.code === 'too_large') return new AppError(413, 'payload_too_large', err.message);
    return new AppError(400, `plist_${err.code}`, `body is not a valid plist (${err.code})`);
  }
  if (err instanceof ProtocolError) {
    return new AppError(400, err.code, err.message);
  }
  const bp = err as BodyParserError;
  if (bp && typeof bp === 'object' && typeof bp.type === 'string') {
    if (bp.type === 'entity.too.large') return new AppError(413, 'payload_too_large', 'body too large');
    if (bp.type === 'entity.parse.failed') return new AppError(400, 'invalid_json', 'body is not valid JSON');
    if (typeof bp.status === 'number' && bp.status >= 400 && bp.status < 500) {
      return new AppError(bp.status, 'bad_request', 'request body could not be read');
    }
  }
  return new AppError(500, 'internal_error', 'internal error');
}
