import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import {
  CertificateError,
  OID_APNS_DEVELOPMENT,
  OID_APNS_PRODUCTION,
  pushTopicOf,
  readPkcs12,
} from '../../shared/crypto/index.ts';
import {
  childrenOf,
  DerError,
  expectUniversal,
  isContext,
  oidOf,
  readRoot,
  Tag,
  type Tlv,
} from '../../shared/crypto/der.ts';
import { BadRequestError } from '../errors.ts';

/** What an admin uploads: a PEM certificate and its key, or a PKCS#12 (as exported from Keychain). */
export type PushCertificateUpload =
  { certificatePem: string; privateKeyPem: string } | { pkcs12Base64: string; passphrase: string };

/** Which APNs environments a certificate may use (Apple's extensions on the certificate). */
export interface ApnsEnvironments {
  production: boolean;
  sandbox: boolean;
}

/** The facts about a push certificate that the server shows and checks. */
export interface PushCertificateFacts {
  topic: string;
  notBefore: Date;
  notAfter: Date;
  subject: string;
  issuer: string;
  serialNumber: string;
  /** SHA-256 of the DER, hex */
  fingerprint: string;
  environments: ApnsEnvironments;
}

export interface ParsedPushCertificate extends PushCertificateFacts {
  /** the certificate alone (a chain given with it is dropped) */
  certPem: string;
  /** PKCS#8 PEM, unencrypted */
  keyPem: string;
}

/** The environment the configured APNs endpoint needs: Apple's production host, or any other (sandbox check). */
export type ApnsEnvironment = keyof ApnsEnvironments;

export const MDM_TOPIC_PREFIX = 'com.apple.mgmt.';

const OID_BY_ENVIRONMENT: Record<ApnsEnvironment, string> = {
  production: OID_APNS_PRODUCTION,
  sandbox: OID_APNS_DEVELOPMENT,
};

export class InvalidPushCertificateError extends BadRequestError {
  constructor(details: Record<string, string>) {
    super('invalid push certificate', details, 'invalid_push_certificate');
  }
}

/** The APNs environment extensions present on a certificate (DER). */
export function apnsEnvironmentsOf(certDer: Buffer): ApnsEnvironments {
  const oids = new Set<string>();
  try {
    const cert = expectUniversal(readRoot(certDer), Tag.sequence, 'Certificate');
    const [tbsTlv] = childrenOf(certDer, cert);
    const tbs = childrenOf(certDer, expectUniversal(tbsTlv, Tag.sequence, 'TBSCertificate'));
    for (const field of tbs) {
      if (!isContext(field, 3)) continue;
      const [extensions] = childrenOf(certDer, field);
      for (const ext of childrenOf(certDer, expectUniversal(extensions, Tag.sequence, 'Extensions'))) {
        const [id] = childrenOf(certDer, expectUniversal(ext, Tag.sequence, 'Extension'));
        oids.add(oidOf(certDer, id as Tlv));
      }
    }
  } catch (err) {
    if (err instanceof DerError) return { production: false, sandbox: false };
    throw err;
  }
  return { production: oids.has(OID_APNS_PRODUCTION), sandbox: oids.has(OID_APNS_DEVELOPMENT) };
}

/** Topic, validity and names of a push certificate (PEM). Throws when it is not a certificate. */
export function pushCertificateFacts(certPem: string): PushCertificateFacts & { x509: X509Certificate } {
  const x509 = new X509Certificate(certPem);
  return {
    x509,
    topic: pushTopicOf(certPem) ?? '',
    notBefore: new Date(x509.validFrom),
    notAfter: new Date(x509.validTo),
    subject: x509.subject.replace(/\n/g, ', '),
    issuer: x509.issuer.replace(/\n/g, ', '),
    serialNumber: x509.serialNumber,
    fingerprint: createHash('sha256').update(x509.raw).digest('hex'),
    environments: apnsEnvironmentsOf(x509.raw),
  };
}

/**
 * Reads and checks an uploaded push certificate: it must be a certificate whose key is the one given, be
 * valid now, carry an MDM topic (subject UID `com.apple.mgmt.…`) and the APNs extension the configured
 * endpoint needs. Every problem found is a 400 naming the field.
 */
export function parsePushCertificate(
  input: PushCertificateUpload,
  opts: { now: Date; environment: ApnsEnvironment },
): ParsedPushCertificate {
  let certPem: string;
  let key: KeyObject;
  let certField: string;
  let keyField: string;
  if ('pkcs12Base64' in input) {
    certField = 'pkcs12Base64';
    keyField = 'pkcs12Base64';
    const der = Buffer.from(input.pkcs12Base64.replace(/\s+/g, ''), 'base64');
    let p12: { certPem: string; keyPem: string };
    try {
      p12 = readPkcs12(der, input.passphrase);
    } catch (err) {
      const message = err instanceof Error ? err.message : 'unreadable';
      const wrongPassword = /MAC could not be verified|decrypt|Invalid password/i.test(message);
      throw new InvalidPushCertificateError(
        wrongPassword
          ? { passphrase: 'wrong passphrase, or a PKCS#12 this server cannot read' }
          : {
              pkcs12Base64: `not a readable PKCS#12 with one identity (${message.replace(/^cannot read PKCS#12: /, '')})`,
            },
      );
    }
    certPem = p12.certPem;
    key = createPrivateKey(p12.keyPem);
  } else {
    certField = 'certificatePem';
    keyField = 'privateKeyPem';
    const problems: Record<string, string> = {};
    let parsedCert: string | null = null;
    try {
      parsedCert = new X509Certificate(input.certificatePem).toString();
    } catch {
      problems['certificatePem'] = 'not a PEM certificate';
    }
    let parsedKey: KeyObject | null = null;
    try {
      parsedKey = createPrivateKey(input.privateKeyPem);
    } catch {
      problems['privateKeyPem'] = /ENCRYPTED/.test(input.privateKeyPem)
        ? 'an encrypted key: give it unencrypted, or upload a PKCS#12 with its passphrase'
        : 'not a PEM private key';
    }
    if (parsedCert === null || parsedKey === null) throw new InvalidPushCertificateError(problems);
    certPem = parsedCert;
    key = parsedKey;
  }

  let facts: ReturnType<typeof pushCertificateFacts>;
  try {
    facts = pushCertificateFacts(certPem);
  } catch (err) {
    if (err instanceof CertificateError || err instanceof Error) {
      throw new InvalidPushCertificateError({ [certField]: 'certificate cannot be read' });
    }
    throw err;
  }
  const problems: Record<string, string> = {};
  if (!facts.x509.checkPrivateKey(key)) {
    problems[keyField] = 'the private key does not belong to the certificate';
  }
  const certProblems: string[] = [];
  if (opts.now.getTime() > facts.notAfter.getTime()) {
    certProblems.push(`expired on ${facts.notAfter.toISOString()}`);
  } else if (opts.now.getTime() < facts.notBefore.getTime()) {
    certProblems.push(`not valid before ${facts.notBefore.toISOString()}`);
  }
  if (facts.topic === '') {
    certProblems.push('no topic: the subject has no UID (an MDM push certificate has com.apple.mgmt.…)');
  } else if (!facts.topic.startsWith(MDM_TOPIC_PREFIX)) {
    certProblems.push(`topic ${facts.topic} is not an MDM topic (${MDM_TOPIC_PREFIX}…)`);
  }
  // A certificate with neither of Apple's APNs extensions is taken as is (a private APNs-compatible
  // gateway, or a test's own certificate): Apple's APNs itself refuses it at the first push. One made for
  // the other environment only is refused here, where the admin can still do something about it.
  const { production, sandbox } = facts.environments;
  if (!facts.environments[opts.environment] && (production || sandbox)) {
    certProblems.push(
      opts.environment === 'production'
        ? `lacks the APNs production extension (${OID_BY_ENVIRONMENT.production})`
        : `lacks the APNs development extension (${OID_BY_ENVIRONMENT.sandbox}), which APNs endpoints other than Apple's production one require`,
    );
  }
  if (certProblems.length > 0) problems[certField] = certProblems.join('; ');
  if (Object.keys(problems).length > 0) throw new InvalidPushCertificateError(problems);

  const { x509: _x509, ...rest } = facts;
  return {
    ...rest,
    certPem,
    keyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}
