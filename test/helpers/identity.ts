import { extractAttachedContent, readPkcs12, signDetached } from '../../shared/crypto/index.ts';
import { decodePlistDict, encodePlist, type PlistDict, type PlistValue } from '../../shared/plist/index.ts';
import type { HttpAnswer, TestServer } from './test-server.ts';

export interface EnrolledIdentity {
  certPem: string;
  keyPem: string;
  profile: PlistDict;
}

/** Makes an enrollment token, fetches the real profile and takes the identity out of its PKCS#12 payload. */
export async function enrollIdentity(ts: TestServer): Promise<EnrolledIdentity> {
  const created = await ts.api('POST', '/enrollment-tokens', {});
  if (created.status !== 201) throw new Error(`enrollment token: ${created.status} ${created.text}`);
  const { enrollUrl } = created.json<{ enrollUrl: string }>();
  const res = await ts.request('GET', new URL(enrollUrl).pathname + new URL(enrollUrl).search);
  if (res.status !== 200) throw new Error(`profile: ${res.status} ${res.text}`);
  const content = res.body[0] === 0x30 ? extractAttachedContent(res.body) : res.body;
  if (!content) throw new Error('signed profile without content');
  const profile = decodePlistDict(content);
  const payloads = profile.PayloadContent as PlistDict[];
  const p12 = payloads.find((p) => p.PayloadType === 'com.apple.security.pkcs12');
  if (!p12) throw new Error('no identity payload');
  const identity = readPkcs12(p12.PayloadContent as Uint8Array, p12.Password as string);
  return { certPem: identity.certPem, keyPem: identity.keyPem, profile };
}

export function mdmPayload(profile: PlistDict): PlistDict {
  const payloads = profile.PayloadContent as PlistDict[];
  const mdm = payloads.find((p) => p.PayloadType === 'com.apple.mdm');
  if (!mdm) throw new Error('no com.apple.mdm payload');
  return mdm;
}

/** PUTs a plist message signed with the identity (Mdm-Signature). */
export function sendSigned(
  ts: TestServer,
  route: '/mdm/checkin' | '/mdm/connect',
  identity: { certPem: string; keyPem: string },
  message: PlistDict | Buffer | string,
  extraHeaders: Record<string, string> = {},
): Promise<HttpAnswer> {
  const body = Buffer.isBuffer(message)
    ? message
    : Buffer.from(typeof message === 'string' ? message : encodePlist(message as PlistValue), 'utf8');
  const sig = signDetached(body, identity.certPem, identity.keyPem).toString('base64');
  return ts.request('PUT', route, {
    body,
    headers: {
      'content-type': 'application/x-apple-aspen-mdm-checkin',
      'mdm-signature': sig,
      ...extraHeaders,
    },
  });
}
