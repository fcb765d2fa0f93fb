/**
 * Who is pushing on a connection: the TLS client certificate, checked once per connection. The TLS
 * layer verified the chain against the configured CAs (`requestCert`, `rejectUnauthorized: false`), so
 * here the answer becomes an APNs-style error instead of a failed handshake. The topic allowed on the
 * connection is the certificate subject's UID; the APNs extensions say which environments it serves.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { OID_APNS_DEVELOPMENT, OID_APNS_PRODUCTION, pushTopicOf } from '../../shared/crypto/index.ts';
import { Tag, childrenOf, expectUniversal, isContext, oidOf, readRoot } from '../../shared/crypto/der.ts';
import type { ApnsReason } from './reasons.ts';

/** Which APNs environment the gateway plays: a push certificate must carry that extension. */
export type ApnsEnvironment = 'production' | 'development' | 'any';

export type ConnectionAuth =
  | { ok: true; topic: string; fingerprint: string }
  /** `none`: no client certificate (the reason then depends on an `authorization` header) */
  | { ok: false; reason: ApnsReason | 'none'; detail: string };

/** The OIDs of the extensions of a DER certificate. */
export function extensionOids(certDer: Buffer): string[] {
  const cert = expectUniversal(readRoot(certDer), Tag.sequence, 'Certificate');
  const [tbsTlv] = childrenOf(certDer, cert);
  const tbs = childrenOf(certDer, expectUniversal(tbsTlv, Tag.sequence, 'TBSCertificate'));
  const out: string[] = [];
  for (const t of tbs) {
    if (!isContext(t, 3)) continue;
    const [extsTlv] = childrenOf(certDer, t);
    for (const ext of childrenOf(certDer, expectUniversal(extsTlv, Tag.sequence, 'Extensions'))) {
      const [oid] = childrenOf(certDer, expectUniversal(ext, Tag.sequence, 'Extension'));
      out.push(oidOf(certDer, oid));
    }
  }
  return out;
}

/** Checks a push certificate already chain-verified (or not) by TLS. */
export function checkPushCertificate(
  certDer: Buffer | undefined,
  chainOk: boolean,
  chainError: string | null,
  environment: ApnsEnvironment,
): ConnectionAuth {
  if (certDer === undefined || certDer.length === 0)
    return { ok: false, reason: 'none', detail: 'no client certificate' };
  if (!chainOk)
    return {
      ok: false,
      reason: 'BadCertificate',
      detail: `untrusted client certificate: ${chainError ?? 'unknown'}`,
    };
  let x509: X509Certificate;
  let oids: string[];
  let topic: string | null;
  try {
    x509 = new X509Certificate(certDer);
    oids = extensionOids(certDer);
    topic = pushTopicOf(x509.toString());
  } catch (err) {
    return { ok: false, reason: 'BadCertificate', detail: `unreadable client certificate: ${String(err)}` };
  }
  const production = oids.includes(OID_APNS_PRODUCTION);
  const sandbox = oids.includes(OID_APNS_DEVELOPMENT);
  if (!production && !sandbox)
    return { ok: false, reason: 'BadCertificate', detail: 'not an APNs push certificate' };
  if ((environment === 'production' && !production) || (environment === 'development' && !sandbox))
    return { ok: false, reason: 'BadCertificateEnvironment', detail: `certificate not for ${environment}` };
  if (topic === null || topic.length === 0)
    return { ok: false, reason: 'BadCertificate', detail: 'certificate subject has no UID (topic)' };
  return { ok: true, topic, fingerprint: x509.fingerprint256 };
}

/** Reads and checks the client certificate of a TLS socket. */
export function authenticateSocket(socket: TLSSocket, environment: ApnsEnvironment): ConnectionAuth {
  const peer = socket.getPeerCertificate();
  const der = peer && 'raw' in peer && Buffer.isBuffer(peer.raw) ? peer.raw : undefined;
  const authError = socket.authorizationError;
  return checkPushCertificate(
    der,
    socket.authorized,
    authError === undefined || authError === null ? null : String(authError),
    environment,
  );
}
