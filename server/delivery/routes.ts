import type { TLSSocket } from 'node:tls';
import { Router, type Request } from 'express';
import { z } from 'zod';
import { NotFoundError } from '../errors.ts';
import type { DeviceIdentity, DeviceIdentityVerifier } from '../transport/device-identity.ts';
import type { SelfService } from './self-service.ts';

export interface SelfServiceRouteDeps {
  verifier: DeviceIdentityVerifier;
  selfService: SelfService;
}

/** A usage id: canonical decimal digits (anything else names nothing: 404). */
const usageId = z.string().regex(/^[1-9][0-9]{0,15}$/);

/** The TLS client certificate (leaf, DER) of the request, or null. */
function peerCertificate(req: Request): Buffer | null {
  const socket = req.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerCertificate !== 'function') return null;
  const cert = socket.getPeerCertificate(false);
  return cert && Buffer.isBuffer(cert.raw) && cert.raw.length > 0 ? cert.raw : null;
}

function identity(verifier: DeviceIdentityVerifier, req: Request): DeviceIdentity {
  return verifier.identifyByCertificate({ headers: req.headers, tlsPeerCertificate: peerCertificate(req) });
}

/**
 * Self Service (`api.md`): `GET /selfservice/v1/invitations` and
 * `POST /selfservice/v1/invitations/{id}/accept`, authenticated by the device's identity certificate
 * (TLS client certificate, or the trusted proxy's `Client-Cert` header). JSON answers; 403, never 401.
 */
export function selfServiceRoutes(deps: SelfServiceRouteDeps): Router {
  const r = Router();

  r.get('/selfservice/v1/invitations', async (req, res) => {
    const invitations = await deps.selfService.list(identity(deps.verifier, req));
    res.set('Cache-Control', 'no-store').json({ invitations });
  });

  r.post('/selfservice/v1/invitations/:id/accept', async (req, res) => {
    const who = identity(deps.verifier, req);
    const id = usageId.safeParse(req.params.id);
    if (!id.success) {
      await deps.selfService.device(who); // an unknown device is a 403 whatever the id
      throw new NotFoundError('invitation');
    }
    res.set('Cache-Control', 'no-store').json(await deps.selfService.accept(who, id.data));
  });

  return r;
}
