import {
  Tag,
  bytesOf,
  childrenOf,
  contentOf,
  expectUniversal,
  DerError,
  isContext,
  oidOf,
  octetStringValue,
  readRoot,
  readTlv,
  stringValue,
  timeValue,
} from './der.ts';
import type { Tlv } from './der.ts';

export const OID_SUBJECT_KEY_IDENTIFIER = '2.5.29.14';
export const OID_USER_ID = '0.9.2342.19200300.100.1.1';

/** The fields of an X.509 certificate that this module needs, read straight from its DER. */
export interface CertificateFields {
  /** the exact bytes of the issuer Name */
  issuer: Buffer;
  /** the exact bytes of the subject Name */
  subject: Buffer;
  /** the content octets of the serialNumber INTEGER */
  serial: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** keyIdentifier of the subjectKeyIdentifier extension, when present */
  subjectKeyIdentifier: Buffer | null;
}

/** Parses the TBSCertificate of a DER certificate. Throws DerError when it is not one. */
export function parseCertificateDer(certDer: Buffer): CertificateFields {
  const cert = expectUniversal(readRoot(certDer), Tag.sequence, 'Certificate');
  const [tbsTlv] = childrenOf(certDer, cert);
  const tbs = childrenOf(certDer, expectUniversal(tbsTlv, Tag.sequence, 'TBSCertificate'));
  let i = 0;
  if (isContext(tbs[0], 0)) i++; // [0] EXPLICIT version
  const serial = expectUniversal(tbs[i++], Tag.integer, 'serialNumber');
  expectUniversal(tbs[i++], Tag.sequence, 'signature');
  const issuer = expectUniversal(tbs[i++], Tag.sequence, 'issuer');
  const validity = childrenOf(certDer, expectUniversal(tbs[i++], Tag.sequence, 'validity'));
  const subject = expectUniversal(tbs[i++], Tag.sequence, 'subject');
  expectUniversal(tbs[i++], Tag.sequence, 'subjectPublicKeyInfo');
  const [nb, na] = validity;
  if (nb === undefined || na === undefined) throw new DerError('bad validity');
  let subjectKeyIdentifier: Buffer | null = null;
  for (; i < tbs.length; i++) {
    const t = tbs[i] as Tlv;
    if (!isContext(t, 3)) continue;
    const [extsTlv] = childrenOf(certDer, t);
    const exts = childrenOf(certDer, expectUniversal(extsTlv, Tag.sequence, 'Extensions'));
    for (const ext of exts) {
      const parts = childrenOf(certDer, expectUniversal(ext, Tag.sequence, 'Extension'));
      if (oidOf(certDer, parts[0]) !== OID_SUBJECT_KEY_IDENTIFIER) continue;
      const value = parts[parts.length - 1];
      const inner = octetStringValue(certDer, expectUniversal(value, Tag.octetString, 'extnValue'));
      const ski = readRoot(inner);
      subjectKeyIdentifier = contentOf(inner, expectUniversal(ski, Tag.octetString, 'keyIdentifier'));
    }
  }
  return {
    issuer: bytesOf(certDer, issuer),
    subject: bytesOf(certDer, subject),
    serial: contentOf(certDer, serial),
    notBefore: timeValue(certDer, nb),
    notAfter: timeValue(certDer, na),
    subjectKeyIdentifier,
  };
}

/** The attributes of a Name (RDNSequence), in order, as [OID, text] pairs; non-string values are skipped. */
export function nameAttributes(nameDer: Buffer): Array<[string, string]> {
  const name = expectUniversal(readTlv(nameDer, 0), Tag.sequence, 'Name');
  const out: Array<[string, string]> = [];
  for (const rdn of childrenOf(nameDer, name)) {
    for (const atv of childrenOf(nameDer, expectUniversal(rdn, Tag.set, 'RDN'))) {
      const [type, value] = childrenOf(nameDer, expectUniversal(atv, Tag.sequence, 'AttributeTypeAndValue'));
      if (value === undefined) continue;
      const oid = oidOf(nameDer, type);
      try {
        out.push([oid, stringValue(nameDer, value)]);
      } catch {
        // not a string attribute: ignore
      }
    }
  }
  return out;
}
