/**
 * PKCS#12 with node-forge: 3DES-shrouded key (pbeWithSHAAnd3-KeyTripleDES-CBC), certificates in clear,
 * SHA-1 HMAC, 2048 iterations. Apple devices and OpenSSL 3 (without -legacy) accept it. RSA keys only.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import forge from 'node-forge';

const ITERATIONS = 2048;
const OID_KEY_BAG = '1.2.840.113549.1.12.10.1.1';
const OID_SHROUDED_KEY_BAG = '1.2.840.113549.1.12.10.1.2';
const OID_CERT_BAG = '1.2.840.113549.1.12.10.1.3';

function toBinary(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('binary');
}

export interface MakePkcs12Options {
  certPem: string;
  keyPem: string;
  /** issuer certificates to include after the identity's own */
  chainPems?: string[];
  password: string;
  friendlyName?: string;
}

/** A password-protected PKCS#12 (DER) holding the identity `certPem` + `keyPem` and optional chain. */
export function makePkcs12(opts: MakePkcs12Options): Buffer {
  const nodeKey = createPrivateKey(opts.keyPem);
  if (nodeKey.asymmetricKeyType !== 'rsa') throw new TypeError('makePkcs12 supports RSA keys only');
  const ownCert = new X509Certificate(opts.certPem);
  if (!ownCert.checkPrivateKey(nodeKey)) throw new TypeError('keyPem does not belong to certPem');
  const key = forge.pki.privateKeyFromPem(nodeKey.export({ type: 'pkcs1', format: 'pem' }).toString());
  const certs = [opts.certPem, ...(opts.chainPems ?? [])].map((pem) => forge.pki.certificateFromPem(pem));
  const asn1 = forge.pkcs12.toPkcs12Asn1(key, certs, opts.password, {
    algorithm: '3des',
    count: ITERATIONS,
    generateLocalKeyId: true,
    // forge tests `'friendlyName' in options`: only pass it when given
    ...(opts.friendlyName !== undefined ? { friendlyName: opts.friendlyName } : {}),
  });
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
}

/**
 * Reads a PKCS#12: the certificate whose public key matches the private key, that key (PKCS#8 PEM) and
 * the other certificates. Throws on a wrong password (MAC check) or a file without exactly that identity.
 */
export function readPkcs12(
  der: Uint8Array,
  password: string,
): { certPem: string; keyPem: string; chainPems: string[] } {
  let p12: forge.pkcs12.Pkcs12Pfx;
  try {
    p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(toBinary(der)), false, password);
  } catch (err) {
    throw new Error(`cannot read PKCS#12: ${(err as Error).message}`, { cause: err });
  }
  const keyBags = [
    ...(p12.getBags({ bagType: OID_SHROUDED_KEY_BAG })[OID_SHROUDED_KEY_BAG] ?? []),
    ...(p12.getBags({ bagType: OID_KEY_BAG })[OID_KEY_BAG] ?? []),
  ];
  const keys = keyBags.flatMap((b) => (b.key ? [b.key] : []));
  const [forgeKey] = keys;
  if (forgeKey === undefined || keys.length !== 1)
    throw new Error('PKCS#12 must hold exactly one private key');
  const privateKey = createPrivateKey(forge.pki.privateKeyToPem(forgeKey));
  const publicDer = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });

  const certPems = (p12.getBags({ bagType: OID_CERT_BAG })[OID_CERT_BAG] ?? []).map((bag) => {
    if (bag.cert) return forge.pki.certificateToPem(bag.cert);
    // forge could not parse it (e.g. a non-RSA key): keep the DER it captured
    const b64 = Buffer.from(forge.asn1.toDer(bag.asn1).getBytes(), 'binary').toString('base64');
    return `-----BEGIN CERTIFICATE-----\r\n${b64.replace(/.{1,64}/g, '$&\r\n')}-----END CERTIFICATE-----\r\n`;
  });
  const index = certPems.findIndex((pem) =>
    new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' }).equals(publicDer),
  );
  const certPem = certPems[index];
  if (certPem === undefined) throw new Error('PKCS#12 holds no certificate for its private key');
  return {
    certPem,
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    chainPems: certPems.filter((_, i) => i !== index),
  };
}
