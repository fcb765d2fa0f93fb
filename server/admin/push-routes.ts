import { Router } from 'express';
import { z } from 'zod';
import { BadRequestError, NotFoundError } from '../errors.ts';
import type { PushNowResult } from '../push/apns-pusher.ts';
import type { PushCertificateUpload } from '../push/push-certificate.ts';
import type { PushCertificateInfo } from '../push/push-certificate-service.ts';
import { parse } from './validate.ts';

/** What the push part of the admin API needs (the push certificate service and the pusher). */
export interface PushAdminDeps {
  certificates: {
    describe(): Promise<PushCertificateInfo | null>;
    upload(input: PushCertificateUpload, opts: { force: boolean }): Promise<PushCertificateInfo>;
  };
  pusher: { pushNow(udid: string): Promise<PushNowResult[] | null> };
}

const MAX_PEM = 64 * 1024;

const pemBody = z
  .object({
    certificatePem: z.string().min(1, { message: 'required' }).max(MAX_PEM),
    privateKeyPem: z.string().min(1, { message: 'required' }).max(MAX_PEM),
  })
  .strict();

const pkcs12Body = z
  .object({
    pkcs12Base64: z
      .string()
      .min(1, { message: 'required' })
      .max(4 * MAX_PEM)
      .regex(/^[A-Za-z0-9+/=\s]+$/, { message: 'must be base64' }),
    passphrase: z.string().max(1024).default(''),
  })
  .strict();

const uploadQuery = z.object({ force: z.enum(['true', 'false', '1', '0']).optional() });

function presentCertificate(info: PushCertificateInfo) {
  return {
    topic: info.topic,
    notAfter: info.notAfter.toISOString(),
    notBefore: info.notBefore.toISOString(),
    source: info.source,
    uploadedAt: info.uploadedAt ? info.uploadedAt.toISOString() : null,
    subject: info.subject,
    issuer: info.issuer,
    serialNumber: info.serialNumber,
    fingerprint: info.fingerprint,
  };
}

/** `/push-certificate` and `POST /devices/{udid}/push`. */
export function pushAdminRoutes(deps: PushAdminDeps): Router {
  const r = Router();

  r.get('/push-certificate', async (_req, res) => {
    const info = await deps.certificates.describe();
    if (!info) throw new NotFoundError('push certificate');
    res.json(presentCertificate(info));
  });

  r.put('/push-certificate', async (req, res) => {
    const query = parse(uploadQuery, req.query, 'query');
    const body: unknown = req.body ?? {};
    let input: PushCertificateUpload;
    if (typeof body === 'object' && body !== null && 'pkcs12Base64' in body) {
      input = parse(pkcs12Body, body);
    } else if (
      typeof body === 'object' &&
      body !== null &&
      ('certificatePem' in body || 'privateKeyPem' in body)
    ) {
      input = parse(pemBody, body);
    } else {
      throw new BadRequestError('invalid body', {
        body: 'give {"certificatePem","privateKeyPem"} or {"pkcs12Base64","passphrase"}',
      });
    }
    const force = query.force === 'true' || query.force === '1';
    const info = await deps.certificates.upload(input, { force });
    res.json(presentCertificate(info));
  });

  r.post('/devices/:udid/push', async (req, res) => {
    const results = await deps.pusher.pushNow(req.params.udid);
    if (!results) throw new NotFoundError('device');
    res.json({ results });
  });

  return r;
}
