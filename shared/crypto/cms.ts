/**
 * CMS SignedData (RFC 5652) as used by Apple MDM: the `Mdm-Signature` header (detached, over the HTTP
 * body) and signed enrollment profiles (attached).
 *
 * Parsing is done with the small Buffer-based DER reader in `der.ts` (exact byte slices, no re-encoding),
 * all RSA/ECDSA work with node's `crypto` (OpenSSL).
 */
import { X509Certificate, constants, createHash, createPrivateKey, sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { parseCertificateDer } from './certificate-der.ts';
import {
  DerError,
  Tag,
  bytesOf,
  childrenOf,
  contentOf,
  der,
  expectContext,
  expectUniversal,
  isContext,
  isUniversal,
  octetStringValue,
  oidOf,
  readRoot,
} from './der.ts';
import type { Tlv } from './der.ts';
import { SignatureError } from './errors.ts';

export { SignatureError } from './errors.ts';
export type { SignatureErrorCode } from './errors.ts';

const OID = {
  data: '1.2.840.113549.1.7.1',
  signedData: '1.2.840.113549.1.7.2',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingTime: '1.2.840.113549.1.9.5',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecdsaWithSha1: '1.2.840.10045.4.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  ecdsaWithSha512: '1.2.840.10045.4.3.4',
} as const;

type DigestName = 'sha1' | 'sha256' | 'sha384' | 'sha512';

const DIGEST_OIDS: Record<DigestName, string> = {
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
};

const DIGEST_BY_OID = new Map<string, DigestName>(
  Object.entries(DIGEST_OIDS).map(([name, oid]) => [oid, name as DigestName]),
);

interface SignatureAlgorithm {
  keyType: 'rsa' | 'ec';
  /** the digest the algorithm names, or null when it takes the SignerInfo's digestAlgorithm */
  digest: DigestName | null;
}

const SIGNATURE_ALGORITHMS = new Map<string, SignatureAlgorithm>([
  [OID.rsaEncryption, { keyType: 'rsa', digest: null }],
  ['1.2.840.113549.1.1.5', { keyType: 'rsa', digest: 'sha1' }],
  ['1.2.840.113549.1.1.11', { keyType: 'rsa', digest: 'sha256' }],
  ['1.2.840.113549.1.1.12', { keyType: 'rsa', digest: 'sha384' }],
  ['1.2.840.113549.1.1.13', { keyType: 'rsa', digest: 'sha512' }],
  ['1.2.840.10045.2.1', { keyType: 'ec', digest: null }], // id-ecPublicKey, used by some signers
  [OID.ecdsaWithSha1, { keyType: 'ec', digest: 'sha1' }],
  [OID.ecdsaWithSha256, { keyType: 'ec', digest: 'sha256' }],
  [OID.ecdsaWithSha384, { keyType: 'ec', digest: 'sha384' }],
  [OID.ecdsaWithSha512, { keyType: 'ec', digest: 'sha512' }],
]);

const ECDSA_OID_BY_DIGEST: Record<DigestName, string> = {
  sha1: OID.ecdsaWithSha1,
  sha256: OID.ecdsaWithSha256,
  sha384: OID.ecdsaWithSha384,
  sha512: OID.ecdsaWithSha512,
};

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** sha256 of a certificate's DER, lowercase hex */
export function fingerprint(certDer: Uint8Array): string {
  return createHash('sha256').update(certDer).digest('hex');
}

/**
 * A small LRU of parsed certificates keyed by sha256 of their DER: building an X509Certificate costs more
 * than the RSA verification itself, and a device sends the same certificate with every request.
 * Only public data is cached.
 */
class CertificateCache<T> {
  private readonly entries = new Map<string, T>();
  constructor(private readonly max: number) {}
  get(key: string, make: () => T): T {
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const value = make();
    this.entries.set(key, value);
    if (this.entries.size > this.max) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    return value;
  }
}

const verifiedCertificates = new CertificateCache<X509Certificate>(2048);
const signerCertificates = new CertificateCache<{ der: Buffer; issuer: Buffer; serial: Buffer }>(256);

// ---------------------------------------------------------------------------------------------------
// Signing

export interface SignOptions {
  /** default 'sha256' */
  digest?: 'sha256' | 'sha1';
  /** default true: contentType, messageDigest and signingTime are signed; false: the signature is over the content */
  signedAttributes?: boolean;
  /** default now */
  signingTime?: Date;
}

interface BuildOptions {
  content: Buffer;
  attach: boolean;
  signerCertPem: string;
  signerKey: KeyObject | string;
  chainPems: string[];
  digest: DigestName;
  signedAttributes: boolean;
  signingTime: Date;
}

function algorithmIdentifier(oid: string, withNullParameters: boolean): Buffer {
  return withNullParameters ? der.sequence(der.oid(oid), der.null()) : der.sequence(der.oid(oid));
}

function buildSignedData(o: BuildOptions): Buffer {
  const fields = signerCertificates.get(o.signerCertPem, () => {
    const raw = new X509Certificate(o.signerCertPem).raw;
    return { der: raw, ...parseCertificateDer(raw) };
  });
  const certDer = fields.der;
  const key = typeof o.signerKey === 'string' ? createPrivateKey(o.signerKey) : o.signerKey;
  if (key.type !== 'private') throw new TypeError('signerKey must be a private key');
  let signatureAlgorithm: Buffer;
  if (key.asymmetricKeyType === 'rsa') {
    signatureAlgorithm = algorithmIdentifier(OID.rsaEncryption, true);
  } else if (key.asymmetricKeyType === 'ec') {
    signatureAlgorithm = algorithmIdentifier(ECDSA_OID_BY_DIGEST[o.digest], false);
  } else {
    throw new TypeError(`unsupported signer key type ${String(key.asymmetricKeyType)}`);
  }
  const digestAlgorithm = algorithmIdentifier(DIGEST_OIDS[o.digest], true);

  let signedAttrs: Buffer | null = null;
  let signed: Buffer = o.content;
  if (o.signedAttributes) {
    const messageDigest = createHash(o.digest).update(o.content).digest();
    const attrs = der.setOf(
      der.sequence(der.oid(OID.contentType), der.set(der.oid(OID.data))),
      der.sequence(der.oid(OID.signingTime), der.set(der.time(o.signingTime))),
      der.sequence(der.oid(OID.messageDigest), der.set(der.octetString(messageDigest))),
    );
    signed = attrs; // the signature covers the SET OF encoding (tag 0x31)
    signedAttrs = Buffer.concat([Buffer.from([0xa0]), attrs.subarray(1)]); // stored as [0] IMPLICIT
  }
  const signature = sign(o.digest, signed, key);

  const signerInfo = der.sequence(
    der.smallInteger(1),
    der.sequence(fields.issuer, der.unsignedInteger(fields.serial)),
    digestAlgorithm,
    ...(signedAttrs ? [signedAttrs] : []),
    signatureAlgorithm,
    der.octetString(signature),
  );
  const encapContentInfo = o.attach
    ? der.sequence(der.oid(OID.data), der.explicit(0, der.octetString(o.content)))
    : der.sequence(der.oid(OID.data));
  const chain = o.chainPems.map((pem) => new X509Certificate(pem).raw);
  const signedData = der.sequence(
    der.smallInteger(1),
    der.set(digestAlgorithm),
    encapContentInfo,
    der.explicit(0, certDer, ...chain), // certificates [0] IMPLICIT SET OF Certificate
    der.set(signerInfo),
  );
  return der.sequence(der.oid(OID.signedData), der.explicit(0, signedData));
}

/**
 * A detached CMS SignedData (DER) over `body`, the signer certificate embedded. Default SHA-256 with
 * signed attributes (contentType, messageDigest, signingTime); `{ digest: 'sha1', signedAttributes: false }`
 * gives the signature over the body itself, as many iOS devices send.
 */
export function signDetached(
  body: Uint8Array,
  signerCertPem: string,
  signerKey: KeyObject | string,
  options: SignOptions = {},
): Buffer {
  return buildSignedData({
    content: asBuffer(body),
    attach: false,
    signerCertPem,
    signerKey,
    chainPems: [],
    digest: options.digest ?? 'sha256',
    signedAttributes: options.signedAttributes ?? true,
    signingTime: options.signingTime ?? new Date(),
  });
}

/** An attached CMS SignedData (DER, SHA-256 with signed attributes) carrying `content`, e.g. a signed profile. */
export function signAttached(
  content: Uint8Array,
  signerCertPem: string,
  signerKey: KeyObject | string,
  chainPems: string[] = [],
): Buffer {
  return buildSignedData({
    content: asBuffer(content),
    attach: true,
    signerCertPem,
    signerKey,
    chainPems,
    digest: 'sha256',
    signedAttributes: true,
    signingTime: new Date(),
  });
}

// ---------------------------------------------------------------------------------------------------
// Parsing and verifying

interface ParsedSignedData {
  buf: Buffer;
  eContentType: string;
  eContent: Buffer | null;
  certificates: Tlv[];
  signerInfos: Tlv[];
}

function parseSignedData(input: Uint8Array): ParsedSignedData {
  const buf = asBuffer(input);
  if (buf.length === 0) throw new SignatureError('malformed', 'empty signature');
  try {
    const contentInfo = childrenOf(buf, expectUniversal(readRoot(buf), Tag.sequence, 'ContentInfo'));
    if (oidOf(buf, contentInfo[0]) !== OID.signedData) {
      throw new SignatureError('malformed', 'not a CMS SignedData');
    }
    const [sdTlv] = childrenOf(buf, expectContext(contentInfo[1], 0, 'SignedData content'));
    const sd = childrenOf(buf, expectUniversal(sdTlv, Tag.sequence, 'SignedData'));
    expectUniversal(sd[0], Tag.integer, 'version');
    expectUniversal(sd[1], Tag.set, 'digestAlgorithms');
    const encap = childrenOf(buf, expectUniversal(sd[2], Tag.sequence, 'EncapsulatedContentInfo'));
    const eContentType = oidOf(buf, encap[0]);
    let eContent: Buffer | null = null;
    if (encap[1] !== undefined) {
      const [octets] = childrenOf(buf, expectContext(encap[1], 0, 'eContent'));
      eContent = octetStringValue(buf, expectUniversal(octets, Tag.octetString, 'eContent'));
    }
    let certificates: Tlv[] = [];
    let i = 3;
    if (isContext(sd[i], 0)) {
      certificates = childrenOf(buf, sd[i] as Tlv).filter((c) => isUniversal(c, Tag.sequence));
      i++;
    }
    if (isContext(sd[i], 1)) i++; // crls
    const signerInfos = childrenOf(buf, expectUniversal(sd[i], Tag.set, 'signerInfos'));
    return { buf, eContentType, eContent, certificates, signerInfos };
  } catch (err) {
    if (err instanceof DerError)
      throw new SignatureError('malformed', `malformed CMS: ${err.message}`, { cause: err });
    throw err;
  }
}

/** The encapsulated content of an attached SignedData, or null when it is detached. Throws SignatureError('malformed') on anything that is not CMS SignedData. */
export function extractAttachedContent(cmsDer: Uint8Array): Buffer | null {
  const { eContent } = parseSignedData(cmsDer);
  return eContent === null ? null : Buffer.from(eContent);
}

export interface VerifiedSigner {
  certificate: X509Certificate;
  /** DER of the signer certificate */
  der: Buffer;
  /** sha256 hex of `der` */
  fingerprint: string;
}

function findSignerCertificate(buf: Buffer, sid: Tlv, certificates: Tlv[]): Buffer | null {
  if (isUniversal(sid, Tag.sequence)) {
    const [issuer, serial] = childrenOf(buf, sid);
    const issuerBytes = bytesOf(buf, expectUniversal(issuer, Tag.sequence, 'issuer'));
    const serialBytes = contentOf(buf, expectUniversal(serial, Tag.integer, 'serialNumber'));
    for (const c of certificates) {
      const certDer = bytesOf(buf, c);
      const f = parseCertificateDer(certDer);
      if (f.serial.equals(serialBytes) && f.issuer.equals(issuerBytes)) return certDer;
    }
  } else if (isContext(sid, 0) && !sid.constructed) {
    const ski = contentOf(buf, sid);
    for (const c of certificates) {
      const certDer = bytesOf(buf, c);
      if (parseCertificateDer(certDer).subjectKeyIdentifier?.equals(ski)) return certDer;
    }
  } else {
    throw new DerError('bad SignerIdentifier');
  }
  // the identifier matched nothing: a lone certificate is taken as the signer's
  const [only] = certificates;
  return certificates.length === 1 && only !== undefined ? bytesOf(buf, only) : null;
}

function verifySignerInfo(sd: ParsedSignedData, signerInfo: Tlv, body: Buffer): VerifiedSigner {
  const { buf } = sd;
  const parts = childrenOf(buf, expectUniversal(signerInfo, Tag.sequence, 'SignerInfo'));
  expectUniversal(parts[0], Tag.integer, 'version');
  const sid = parts[1];
  if (sid === undefined) throw new DerError('missing sid');
  const digestOid = oidOf(
    buf,
    childrenOf(buf, expectUniversal(parts[2], Tag.sequence, 'digestAlgorithm'))[0],
  );
  let i = 3;
  let signedAttrs: Tlv | null = null;
  if (isContext(parts[i], 0)) signedAttrs = parts[i++] as Tlv;
  const sigAlgOid = oidOf(
    buf,
    childrenOf(buf, expectUniversal(parts[i++], Tag.sequence, 'signatureAlgorithm'))[0],
  );
  const signature = octetStringValue(buf, expectUniversal(parts[i], Tag.octetString, 'signature'));

  const digest = DIGEST_BY_OID.get(digestOid);
  if (digest === undefined)
    throw new SignatureError('unsupported_algorithm', `unsupported digest ${digestOid}`);
  const algorithm = SIGNATURE_ALGORITHMS.get(sigAlgOid);
  if (algorithm === undefined) {
    throw new SignatureError('unsupported_algorithm', `unsupported signature algorithm ${sigAlgOid}`);
  }

  const certDer = findSignerCertificate(buf, sid, sd.certificates);
  if (certDer === null)
    throw new SignatureError('no_signer', 'signer certificate not found in the signature');

  let signed: Buffer;
  if (signedAttrs !== null) {
    let messageDigest: Buffer | null = null;
    for (const attr of childrenOf(buf, signedAttrs)) {
      const [typeTlv, valuesTlv] = childrenOf(buf, expectUniversal(attr, Tag.sequence, 'Attribute'));
      const type = oidOf(buf, typeTlv);
      const values = childrenOf(buf, expectUniversal(valuesTlv, Tag.set, 'AttributeValues'));
      if (type === OID.messageDigest) {
        if (messageDigest !== null || values.length !== 1) throw new DerError('bad messageDigest attribute');
        messageDigest = contentOf(buf, expectUniversal(values[0], Tag.octetString, 'messageDigest'));
      } else if (type === OID.contentType) {
        if (values.length !== 1 || oidOf(buf, values[0]) !== sd.eContentType) {
          throw new DerError('contentType attribute does not match the content');
        }
      }
    }
    if (messageDigest === null) throw new DerError('signed attributes without messageDigest');
    if (!createHash(digest).update(body).digest().equals(messageDigest)) {
      throw new SignatureError('digest_mismatch', 'message digest does not match the body');
    }
    // the signature is over the DER of the attributes as a SET OF (tag 0x31), not the [0] IMPLICIT tag
    signed = Buffer.from(bytesOf(buf, signedAttrs));
    signed[0] = 0x31;
  } else {
    signed = body;
  }

  const ownDer = Buffer.from(certDer);
  const certFingerprint = fingerprint(ownDer);
  let certificate: X509Certificate;
  try {
    certificate = verifiedCertificates.get(certFingerprint, () => new X509Certificate(ownDer));
  } catch (err) {
    throw new SignatureError('malformed', 'signer certificate cannot be read', { cause: err });
  }
  const key = certificate.publicKey;
  if (key.asymmetricKeyType !== algorithm.keyType) {
    throw new SignatureError('bad_signature', 'signer key does not match the signature algorithm');
  }
  let ok = false;
  try {
    ok =
      algorithm.keyType === 'rsa'
        ? verify(algorithm.digest ?? digest, signed, { key, padding: constants.RSA_PKCS1_PADDING }, signature)
        : verify(algorithm.digest ?? digest, signed, { key, dsaEncoding: 'der' }, signature);
  } catch (err) {
    throw new SignatureError('bad_signature', 'signature does not verify', { cause: err });
  }
  if (!ok) throw new SignatureError('bad_signature', 'signature does not verify');
  return { certificate, der: ownDer, fingerprint: certFingerprint };
}

/**
 * Verifies a CMS SignedData over `body` (detached, or attached with content equal to `body`) and returns
 * the signer. Does not check the signer's chain or validity: use verifyIssuedBy for that.
 * Throws SignatureError.
 */
export function verifyDetached(cmsDer: Uint8Array, body: Uint8Array): VerifiedSigner {
  const sd = parseSignedData(cmsDer);
  const content = asBuffer(body);
  if (sd.eContent !== null && !sd.eContent.equals(content)) {
    throw new SignatureError('digest_mismatch', 'the signature carries content that differs from the body');
  }
  if (sd.signerInfos.length === 0) throw new SignatureError('no_signer', 'the signature has no signer');
  let first: SignatureError | null = null;
  for (const signerInfo of sd.signerInfos) {
    try {
      return verifySignerInfo(sd, signerInfo, content);
    } catch (err) {
      if (err instanceof DerError) {
        first ??= new SignatureError('malformed', `malformed SignerInfo: ${err.message}`, { cause: err });
      } else if (err instanceof SignatureError) {
        first ??= err;
      } else {
        throw err;
      }
    }
  }
  throw first ?? new SignatureError('no_signer', 'the signature has no signer');
}
