/**
 * Certificates: forge builds the TBSCertificate, node's crypto signs it and verifies chains.
 * Only RSA keys are supported for certificate subjects and issuers (a node-forge limitation).
 */
import {
  X509Certificate,
  createPrivateKey,
  createPublicKey,
  generateKeyPair as generateKeyPairCallback,
  randomBytes,
  sign,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { OID_USER_ID, nameAttributes, parseCertificateDer } from './certificate-der.ts';
import { DerError } from './der.ts';
import { CertificateError } from './errors.ts';

export { CertificateError } from './errors.ts';
export type { CertificateErrorCode } from './errors.ts';

const generateKeyPairAsync = promisify(generateKeyPairCallback);

/** Apple's APNs certificate extensions: development (sandbox) and production push. */
export const OID_APNS_DEVELOPMENT = '1.2.840.113635.100.6.3.1';
export const OID_APNS_PRODUCTION = '1.2.840.113635.100.6.3.2';
const OID_SHA256_WITH_RSA = '1.2.840.113549.1.1.11';
const DER_NULL = '\x05\x00';

/** forge exposes getTBSCertificate at run time; its type declarations omit it. */
const pki = forge.pki as typeof forge.pki & {
  getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1;
};

/** A new RSA key pair (PKCS#8 and SPKI PEM), generated on the libuv thread pool. */
export async function generateKeyPair(bits = 2048): Promise<{ privateKeyPem: string; publicKeyPem: string }> {
  const { privateKey, publicKey } = await generateKeyPairAsync('rsa', {
    modulusLength: bits,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { privateKeyPem: privateKey, publicKeyPem: publicKey };
}

export interface SubjectFields {
  CN: string;
  O?: string;
  OU?: string;
  C?: string;
  /** userId (0.9.2342.19200300.100.1.1); the topic of a push certificate */
  UID?: string;
}

// forge types valueTagClass as asn1.Class although it holds a universal tag number (asn1.Type)
const UTF8 = forge.asn1.Type.UTF8 as number as forge.asn1.Class;
const PRINTABLE = forge.asn1.Type.PRINTABLESTRING as number as forge.asn1.Class;

function subjectAttributes(s: SubjectFields): forge.pki.CertificateField[] {
  if (!s.CN) throw new TypeError('subject CN is required');
  const attrs: forge.pki.CertificateField[] = [];
  if (s.C !== undefined) {
    if (!/^[A-Z]{2}$/.test(s.C)) throw new TypeError('subject C must be a two-letter country code');
    attrs.push({ type: '2.5.4.6', value: s.C, valueTagClass: PRINTABLE });
  }
  if (s.O !== undefined) attrs.push({ type: '2.5.4.10', value: s.O, valueTagClass: UTF8 });
  if (s.OU !== undefined) attrs.push({ type: '2.5.4.11', value: s.OU, valueTagClass: UTF8 });
  attrs.push({ type: '2.5.4.3', value: s.CN, valueTagClass: UTF8 });
  if (s.UID !== undefined) attrs.push({ type: OID_USER_ID, value: s.UID, valueTagClass: UTF8 });
  return attrs;
}

function serialHex(serial: string | undefined): string {
  if (serial === undefined) {
    const bytes = randomBytes(16);
    bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40; // positive, and always 16 bytes long
    return bytes.toString('hex');
  }
  if (!/^[0-9a-fA-F]+$/.test(serial)) throw new TypeError('serialNumber must be hex');
  let hex = serial.toLowerCase().replace(/^0+/, '');
  if (hex === '') throw new TypeError('serialNumber must be positive');
  if (hex.length % 2) hex = `0${hex}`;
  if (parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`; // keep the INTEGER positive
  if (hex.length > 42) throw new TypeError('serialNumber longer than 20 bytes');
  return hex;
}

/** IPv4 / IPv6 text to the octets of an iPAddress GeneralName, as a forge binary string. */
function ipBytes(ip: string): string {
  const version = isIP(ip);
  if (version === 4) return String.fromCharCode(...ip.split('.').map(Number));
  if (version !== 6) throw new TypeError(`not an IP address: ${ip}`);
  const [head = '', tail] = ip.split('%')[0]?.split('::') ?? [];
  const groups = (part: string | undefined): number[] => {
    if (!part) return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const [a = 0, b = 0, c = 0, d = 0] = g.split('.').map(Number);
        out.push((a << 8) | b, (c << 8) | d);
      } else {
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const h = groups(head);
  const t = groups(tail);
  const words = tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  if (words.length !== 8) throw new TypeError(`not an IP address: ${ip}`);
  return String.fromCharCode(...words.flatMap((w) => [w >> 8, w & 0xff]));
}

function rsaPrivateKey(keyPem: string, what: string): KeyObject {
  const key = createPrivateKey(keyPem);
  if (key.asymmetricKeyType !== 'rsa') throw new TypeError(`${what} must be an RSA key`);
  return key;
}

function spkiDer(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

/** Sets the signature fields of a forge certificate, signing its TBS with node's crypto; returns PEM. */
function signCertificate(cert: forge.pki.Certificate, issuerKey: KeyObject): string {
  cert.signatureOid = OID_SHA256_WITH_RSA;
  cert.siginfo.algorithmOid = OID_SHA256_WITH_RSA;
  const tbs = Buffer.from(forge.asn1.toDer(pki.getTBSCertificate(cert)).getBytes(), 'binary');
  cert.signature = sign('sha256', tbs, issuerKey).toString('binary');
  return pki.certificateToPem(cert);
}

interface Validity {
  days: number;
  notBefore?: Date | undefined;
  notAfter?: Date | undefined;
}

function setValidity(cert: forge.pki.Certificate, v: Validity): void {
  // back-dated an hour for clocks that run slow
  const notBefore = v.notBefore ?? new Date(Date.now() - 60 * 60 * 1000);
  const notAfter = v.notAfter ?? new Date(Date.now() + v.days * 24 * 60 * 60 * 1000);
  if (!(notAfter > notBefore)) throw new RangeError('certificate notAfter must be after notBefore');
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
}

/** A self-signed CA certificate (basicConstraints CA, keyCertSign + cRLSign), PEM. */
export function createCaCertificate(opts: {
  subject: SubjectFields;
  keyPem: string;
  days: number;
  notBefore?: Date;
  notAfter?: Date;
}): string {
  const key = rsaPrivateKey(opts.keyPem, 'CA key');
  const cert = pki.createCertificate();
  cert.publicKey = pki.publicKeyFromPem(
    createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString(),
  );
  cert.serialNumber = serialHex(undefined);
  setValidity(cert, opts);
  const name = subjectAttributes(opts.subject);
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  return signCertificate(cert, key);
}

export type CertificateKind = 'server' | 'client' | 'push';

export interface IssueCertificateOptions {
  /** server: serverAuth + SANs; client: clientAuth (device identity); push: clientAuth + APNs extensions, subject UID = topic */
  kind: CertificateKind;
  subject: SubjectFields;
  publicKeyPem: string;
  issuerCertPem: string;
  issuerKeyPem: string;
  /** validity from now (ignored when notAfter is given) */
  days: number;
  /** DNS names and IP addresses */
  altNames?: string[];
  /** hex; default 16 random bytes, positive */
  serialNumber?: string;
  /** override the start of validity (default: an hour ago) */
  notBefore?: Date;
  /** override the end of validity (default: now + days); with notBefore, lets tests make expired certificates */
  notAfter?: Date;
  /** push: which of Apple's APNs environment extensions to carry (default both, as development certificates do) */
  apnsEnvironments?: readonly ('sandbox' | 'production')[];
}

/** A certificate for `publicKeyPem` issued by the given CA, PEM. */
export function issueCertificate(opts: IssueCertificateOptions): string {
  const issuerKey = rsaPrivateKey(opts.issuerKeyPem, 'issuer key');
  const issuerX509 = new X509Certificate(opts.issuerCertPem);
  if (!spkiDer(issuerX509.publicKey).equals(spkiDer(createPublicKey(issuerKey)))) {
    throw new TypeError('issuer key does not belong to the issuer certificate');
  }
  const subjectKey = createPublicKey(opts.publicKeyPem);
  if (subjectKey.asymmetricKeyType !== 'rsa') throw new TypeError('publicKeyPem must be an RSA key');
  const issuerCert = pki.certificateFromPem(opts.issuerCertPem);

  const cert = pki.createCertificate();
  cert.publicKey = pki.publicKeyFromPem(subjectKey.export({ type: 'spki', format: 'pem' }).toString());
  cert.serialNumber = serialHex(opts.serialNumber);
  setValidity(cert, opts);
  cert.setSubject(subjectAttributes(opts.subject));
  cert.setIssuer(issuerCert.subject.attributes);

  const issuerSki =
    parseCertificateDer(issuerX509.raw).subjectKeyIdentifier?.toString('binary') ??
    issuerCert.generateSubjectKeyIdentifier().getBytes();
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: issuerSki },
  ];
  switch (opts.kind) {
    case 'server':
      extensions.push(
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
      );
      break;
    case 'client':
      extensions.push(
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', clientAuth: true },
      );
      break;
    case 'push':
      if (!opts.subject.UID) throw new TypeError('a push certificate needs subject UID (the topic)');
      extensions.push(
        { name: 'keyUsage', digitalSignature: true, critical: true },
        { name: 'extKeyUsage', clientAuth: true },
      );
      for (const env of opts.apnsEnvironments ?? ['sandbox', 'production']) {
        extensions.push({
          id: env === 'sandbox' ? OID_APNS_DEVELOPMENT : OID_APNS_PRODUCTION,
          value: DER_NULL,
        });
      }
      break;
    default:
      throw new TypeError(`unknown certificate kind ${String(opts.kind)}`);
  }
  const altNames = opts.altNames ?? [];
  if (altNames.length > 0) {
    extensions.push({
      name: 'subjectAltName',
      altNames: altNames.map((n) => (isIP(n) ? { type: 7, value: ipBytes(n) } : { type: 2, value: n })),
    });
  }
  cert.setExtensions(extensions);
  return signCertificate(cert, issuerKey);
}

function readCertificate(cert: X509Certificate | string): { x509: X509Certificate; der: Buffer } {
  try {
    const x509 = typeof cert === 'string' ? new X509Certificate(cert) : cert;
    return { x509, der: x509.raw };
  } catch (err) {
    throw new CertificateError('malformed', 'certificate cannot be read', { cause: err });
  }
}

interface CertificateFacts {
  notBefore: Date;
  notAfter: Date;
  /** CAs this certificate's signature was checked against (results never change for a pair of objects) */
  issuedBy: WeakSet<X509Certificate>;
}

/** Per X509Certificate object: its validity and the issuers already verified (verifyDetached hands out cached objects). */
const facts = new WeakMap<X509Certificate, CertificateFacts>();

function factsOf(cert: X509Certificate): CertificateFacts {
  let f = facts.get(cert);
  if (f === undefined) {
    const { notBefore, notAfter } = validity(cert.raw);
    f = { notBefore, notAfter, issuedBy: new WeakSet() };
    facts.set(cert, f);
  }
  return f;
}

function validity(der: Buffer): { notBefore: Date; notAfter: Date } {
  try {
    return parseCertificateDer(der);
  } catch (err) {
    if (err instanceof DerError)
      throw new CertificateError('malformed', 'certificate cannot be read', { cause: err });
    throw err;
  }
}

/**
 * Checks that `cert` was issued by `ca` (names, CA flag, signature with node's crypto) and that both are
 * within their validity at `now`. Throws CertificateError. A successful signature check is remembered for
 * the pair of objects, so repeated checks of the same (cached) certificate cost no RSA operation.
 */
export function verifyIssuedBy(cert: X509Certificate, ca: X509Certificate, now: Date = new Date()): void {
  const certFacts = factsOf(cert);
  if (!certFacts.issuedBy.has(ca)) {
    if (!ca.ca) throw new CertificateError('untrusted', 'issuer is not a CA certificate');
    if (!cert.checkIssued(ca))
      throw new CertificateError('untrusted', 'certificate was not issued by this CA');
    let ok = false;
    try {
      ok = cert.verify(ca.publicKey);
    } catch (err) {
      throw new CertificateError('untrusted', 'certificate signature does not verify', { cause: err });
    }
    if (!ok) throw new CertificateError('untrusted', 'certificate signature does not verify');
    certFacts.issuedBy.add(ca);
  }
  for (const [which, v] of [
    ['certificate', certFacts],
    ['CA certificate', factsOf(ca)],
  ] as const) {
    if (now < v.notBefore) throw new CertificateError('not_yet_valid', `${which} is not valid yet`);
    if (now > v.notAfter) throw new CertificateError('expired', `${which} has expired`);
  }
}

/** The push topic of an APNs certificate: its subject UID, e.g. com.apple.mgmt.External.<uuid>; null if none. */
export function pushTopicOf(certPem: string): string | null {
  const { der } = readCertificate(certPem);
  try {
    const uid = nameAttributes(parseCertificateDer(der).subject).find(([oid]) => oid === OID_USER_ID);
    return uid ? uid[1] : null;
  } catch (err) {
    if (err instanceof DerError)
      throw new CertificateError('malformed', 'certificate cannot be read', { cause: err });
    throw err;
  }
}

export function certificateNotAfter(certPem: string): Date {
  return validity(readCertificate(certPem).der).notAfter;
}
