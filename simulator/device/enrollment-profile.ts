/**
 * Reads an MDM enrollment profile as a device does: unwraps a CMS-signed profile (checking its signature),
 * finds the identity (PKCS#12), CA and `com.apple.mdm` payloads, and opens the identity with its password.
 */
import { X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { extractAttachedContent, readPkcs12, verifyDetached } from '../../shared/crypto/index.ts';
import { decodePlistDict, isPlistDict } from '../../shared/plist/index.ts';
import type { PlistDict } from '../../shared/plist/index.ts';

export class ProfileError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ProfileError';
  }
}

const httpUrl = z.string().refine((v) => {
  try {
    const u = new URL(v);
    return u.protocol === 'https:' || u.protocol === 'http:';
  } catch {
    return false;
  }
}, 'must be an http(s) URL');

const data = z.instanceof(Uint8Array);

const profileSchema = z.looseObject({
  PayloadType: z.literal('Configuration'),
  PayloadIdentifier: z.string().optional(),
  PayloadContent: z.array(z.custom<PlistDict>(isPlistDict, 'payload must be a dictionary')).min(1),
});

const payloadSchema = z.looseObject({ PayloadType: z.string().min(1), PayloadUUID: z.string().min(1) });

const pkcs12Schema = z.looseObject({
  PayloadType: z.literal('com.apple.security.pkcs12'),
  PayloadUUID: z.string().min(1),
  PayloadContent: data,
  Password: z.string().optional(),
});

const rootSchema = z.looseObject({ PayloadType: z.literal('com.apple.security.root'), PayloadContent: data });

const mdmSchema = z.looseObject({
  PayloadType: z.literal('com.apple.mdm'),
  ServerURL: httpUrl,
  CheckInURL: httpUrl.optional(),
  Topic: z.string().min(1),
  IdentityCertificateUUID: z.string().min(1),
  SignMessage: z.boolean().optional(),
  CheckOutWhenRemoved: z.boolean().optional(),
  AccessRights: z.number().int().optional(),
  ServerCapabilities: z.array(z.string()).optional(),
});

export interface EnrollmentProfile {
  /** whether the profile came CMS-signed (and its signature verified) */
  signed: boolean;
  /** the signer's certificate, when signed */
  signerCertPem: string | null;
  identity: { certPem: string; keyPem: string; chainPems: string[] };
  /** certificates from `com.apple.security.root` payloads, PEM */
  caPems: string[];
  serverUrl: string;
  checkInUrl: string;
  topic: string;
  signMessage: boolean;
  checkOutWhenRemoved: boolean;
  serverCapabilities: string[];
}

const DER_SEQUENCE = 0x30;

/** The plist inside a profile body: plain XML/binary plist, or the content of a CMS SignedData (verified). */
export function unwrapProfile(body: Uint8Array): {
  plist: Buffer;
  signed: boolean;
  signerCertPem: string | null;
} {
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (bytes[0] !== DER_SEQUENCE) return { plist: bytes, signed: false, signerCertPem: null };
  let content: Buffer | null;
  try {
    content = extractAttachedContent(bytes);
  } catch (err) {
    throw new ProfileError('the profile is neither a property list nor CMS SignedData', { cause: err });
  }
  if (content === null) throw new ProfileError('the signed profile carries no content');
  try {
    const signer = verifyDetached(bytes, content);
    return { plist: content, signed: true, signerCertPem: signer.certificate.toString() };
  } catch (err) {
    throw new ProfileError('the profile signature does not verify', { cause: err });
  }
}

function parse<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new ProfileError(
      `${what}: ${issue ? `${issue.path.join('.') || '(root)'} ${issue.message}` : 'invalid'}`,
    );
  }
  return r.data;
}

function derToPem(der: Uint8Array): string {
  try {
    return new X509Certificate(der).toString();
  } catch (err) {
    throw new ProfileError('a certificate payload cannot be read', { cause: err });
  }
}

/** Reads an enrollment profile body (as served by `GET /mdm/enroll`). Throws ProfileError. */
export function readEnrollmentProfile(body: Uint8Array): EnrollmentProfile {
  const { plist, signed, signerCertPem } = unwrapProfile(body);
  let dict: PlistDict;
  try {
    dict = decodePlistDict(plist);
  } catch (err) {
    throw new ProfileError('the profile is not a property list', { cause: err });
  }
  const profile = parse(profileSchema, dict, 'profile');
  const payloads = profile.PayloadContent.map((p, i) => ({
    dict: p,
    head: parse(payloadSchema, p, `payload ${i}`),
  }));
  const mdmPayloads = payloads.filter((p) => p.head.PayloadType === 'com.apple.mdm');
  if (mdmPayloads.length !== 1)
    throw new ProfileError(`expected one com.apple.mdm payload, found ${mdmPayloads.length}`);
  const mdm = parse(mdmSchema, mdmPayloads[0]?.dict, 'com.apple.mdm payload');
  const identityPayload = payloads.find((p) => p.head.PayloadUUID === mdm.IdentityCertificateUUID);
  if (!identityPayload) {
    throw new ProfileError(
      `IdentityCertificateUUID ${mdm.IdentityCertificateUUID} names no payload of the profile`,
    );
  }
  const p12 = parse(pkcs12Schema, identityPayload.dict, 'identity payload');
  let identity: EnrollmentProfile['identity'];
  try {
    identity = readPkcs12(p12.PayloadContent, p12.Password ?? '');
  } catch (err) {
    throw new ProfileError('the identity (PKCS#12) cannot be opened with its password', { cause: err });
  }
  const caPems = payloads
    .filter((p) => p.head.PayloadType === 'com.apple.security.root')
    .map((p, i) => derToPem(parse(rootSchema, p.dict, `root payload ${i}`).PayloadContent));
  return {
    signed,
    signerCertPem,
    identity,
    caPems,
    serverUrl: mdm.ServerURL,
    checkInUrl: mdm.CheckInURL ?? mdm.ServerURL,
    topic: mdm.Topic,
    signMessage: mdm.SignMessage ?? false,
    checkOutWhenRemoved: mdm.CheckOutWhenRemoved ?? false,
    serverCapabilities: mdm.ServerCapabilities ?? [],
  };
}
