import { X509Certificate } from 'node:crypto';
import {
  CertificateError,
  SignatureError,
  fingerprint as certFingerprint,
  verifyDetached,
  verifyIssuedBy,
} from '../../shared/crypto/index.ts';
import { ForbiddenError } from '../errors.ts';

/** How a device request proved who it is. */
export interface DeviceIdentity {
  source: 'signature' | 'tls' | 'proxy';
  certificate: X509Certificate;
  /** SHA-256 of the certificate's DER, lowercase hex. */
  fingerprint: string;
}

export interface IdentityRequest {
  /** Header values as node gives them (lower-case names). */
  headers: Record<string, string | string[] | undefined>;
  body: Uint8Array;
  /** DER of the TLS client certificate, when the client sent one. */
  tlsPeerCertificate: Buffer | null;
}

/** 403 for every way a device can fail to prove itself: never 401, a real device removes its profile on 401. */
export class DeviceAuthError extends ForbiddenError {
  constructor(message: string, code = 'device_auth_failed') {
    super(message, code);
  }
}

const CHAIN_CACHE_LIMIT = 10_000;

/**
 * Finds the device's identity certificate (Mdm-Signature, else TLS client certificate, else the trusted
 * proxy's RFC 9440 Client-Cert header) and checks that it chains to the device CA and is valid now.
 */
export class DeviceIdentityVerifier {
  /** fingerprint → the certificate's notAfter (ms): chain checks are cached until the certificate expires. */
  private readonly chainOk = new Map<string, number>();

  constructor(
    private readonly deviceCa: X509Certificate,
    private readonly options: { trustProxyCertHeader: boolean; now?: () => Date },
  ) {}

  identify(req: IdentityRequest): DeviceIdentity {
    const identity = this.fromSignature(req) ?? this.fromTls(req) ?? this.fromProxy(req);
    if (!identity) {
      throw new DeviceAuthError(
        'no device identity: send Mdm-Signature or a TLS client certificate',
        'no_identity',
      );
    }
    this.checkChain(identity);
    return identity;
  }

  /** Identity from the TLS client certificate (or trusted proxy header) only, for endpoints that are not signed. */
  identifyByCertificate(req: Omit<IdentityRequest, 'body'>): DeviceIdentity {
    const identity =
      this.fromTls({ ...req, body: new Uint8Array() }) ?? this.fromProxy({ ...req, body: new Uint8Array() });
    if (!identity)
      throw new DeviceAuthError(
        'no device identity: present the enrollment identity certificate',
        'no_identity',
      );
    this.checkChain(identity);
    return identity;
  }

  private fromSignature(req: IdentityRequest): DeviceIdentity | null {
    const header = single(req.headers['mdm-signature']);
    if (header === undefined) return null;
    const der = Buffer.from(header.replace(/\s+/g, ''), 'base64');
    if (der.length === 0) throw new DeviceAuthError('Mdm-Signature is empty or not base64', 'bad_signature');
    try {
      const signer = verifyDetached(der, req.body);
      return { source: 'signature', certificate: signer.certificate, fingerprint: signer.fingerprint };
    } catch (err) {
      if (err instanceof SignatureError) {
        throw new DeviceAuthError(`Mdm-Signature does not verify (${err.code})`, 'bad_signature');
      }
      throw err;
    }
  }

  private fromTls(req: IdentityRequest): DeviceIdentity | null {
    if (!req.tlsPeerCertificate || req.tlsPeerCertificate.length === 0) return null;
    return this.fromDer(req.tlsPeerCertificate, 'tls');
  }

  private fromProxy(req: IdentityRequest): DeviceIdentity | null {
    if (!this.options.trustProxyCertHeader) return null;
    const header = single(req.headers['client-cert']);
    if (header === undefined) return null;
    // RFC 9440: the DER certificate as an RFC 8941 byte sequence, `:base64:`.
    const m = /^\s*:([A-Za-z0-9+/=]+):\s*$/.exec(header);
    if (!m?.[1])
      throw new DeviceAuthError('Client-Cert header is not an RFC 9440 byte sequence', 'bad_certificate');
    return this.fromDer(Buffer.from(m[1], 'base64'), 'proxy');
  }

  private fromDer(der: Buffer, source: 'tls' | 'proxy'): DeviceIdentity {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(der);
    } catch {
      throw new DeviceAuthError('client certificate cannot be parsed', 'bad_certificate');
    }
    return { source, certificate, fingerprint: certFingerprint(certificate.raw) };
  }

  private checkChain(identity: DeviceIdentity): void {
    const now = (this.options.now?.() ?? new Date()).getTime();
    const cachedUntil = this.chainOk.get(identity.fingerprint);
    if (cachedUntil !== undefined && now < cachedUntil) return;
    try {
      verifyIssuedBy(identity.certificate, this.deviceCa, new Date(now));
    } catch (err) {
      if (err instanceof CertificateError) {
        throw new DeviceAuthError(`device certificate rejected (${err.code})`, 'untrusted_certificate');
      }
      throw err;
    }
    if (this.chainOk.size >= CHAIN_CACHE_LIMIT) this.chainOk.clear();
    this.chainOk.set(identity.fingerprint, new Date(identity.certificate.validTo).getTime());
  }
}

function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
