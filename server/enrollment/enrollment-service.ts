import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import { generateKeyPair, issueCertificate, makePkcs12, signAttached } from '../../shared/crypto/index.ts';
import { encodePlist, type PlistDict } from '../../shared/plist/index.ts';
import { AppError, BadRequestError, ForbiddenError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { UnknownIdsError } from '../directory/errors.ts';
import type { SiteStore } from '../directory/store.ts';
import type { EnrollmentToken, EnrollmentTokenStore } from './store.ts';

/** The push topic devices must use; from the push certificate in use. */
export interface TopicSource {
  currentTopic(): Promise<string | null>;
}

export interface EnrollmentPki {
  deviceCaCertPem: string;
  deviceCaKeyPem: string;
  /** Certificate shipped in the profile's root payload so the device trusts the server (the dev CA). */
  profileCaCertPem: string;
  /** When set, profiles are CMS-signed with this identity (the server's TLS certificate). */
  signer: { certPem: string; keyPem: string; chainPems: string[] } | null;
}

export class PushCertificateMissingError extends AppError {
  constructor() {
    super(409, 'push_certificate_missing', 'no push certificate: upload one before enrolling devices');
  }
}

const IDENTITY_DAYS = 730;
const PROFILE_ORG = 'VPP MDM';

/** Enrollment tokens and the enrollment profile with a freshly issued identity. */
export class EnrollmentService {
  constructor(
    private readonly deps: {
      tokens: EnrollmentTokenStore;
      /** to refuse an unknown `siteId` on a new token (400 unknown_ids) */
      sites?: Pick<SiteStore, 'missing'>;
      pki: EnrollmentPki;
      topics: TopicSource;
      publicUrl: string;
      log: Logger;
      now?: () => Date;
    },
  ) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  async createToken(input: {
    expiresAt: Date | null;
    maxUses: number | null;
    siteId: string | null;
  }): Promise<EnrollmentToken & { enrollUrl: string }> {
    if (input.expiresAt && input.expiresAt.getTime() <= this.now().getTime()) {
      throw new BadRequestError('invalid request', { expiresAt: 'must be in the future' });
    }
    if (
      input.siteId !== null &&
      this.deps.sites &&
      (await this.deps.sites.missing([input.siteId])).length > 0
    ) {
      throw new UnknownIdsError({ siteId: [input.siteId] });
    }
    const token = await this.deps.tokens.create({ token: randomBytes(24).toString('base64url'), ...input });
    return { ...token, enrollUrl: this.enrollUrl(token.token) };
  }

  enrollUrl(token: string): string {
    return `${this.deps.publicUrl}/mdm/enroll?token=${encodeURIComponent(token)}`;
  }

  /** Builds the profile for one enrollment: counts a use of the token, issues a device identity. */
  async profile(token: string): Promise<{ body: Buffer; signed: boolean }> {
    const invalid = () =>
      new ForbiddenError('enrollment token is invalid, expired or used up', 'invalid_enrollment_token');
    // The token first (without using it up): a bad token is 403 whatever else is missing.
    const known = await this.deps.tokens.get(token);
    const now = this.now();
    if (
      !known ||
      (known.expiresAt !== null && known.expiresAt.getTime() <= now.getTime()) ||
      (known.maxUses !== null && known.uses >= known.maxUses)
    ) {
      throw invalid();
    }
    const topic = await this.deps.topics.currentTopic();
    if (!topic) throw new PushCertificateMissingError();
    const used = await this.deps.tokens.consume(token, now);
    if (!used) throw invalid();

    const { pki } = this.deps;
    const keys = await generateKeyPair(2048);
    const identityId = randomUUID().toUpperCase();
    const certPem = issueCertificate({
      kind: 'client',
      subject: { CN: `MDM identity ${identityId}`, O: PROFILE_ORG },
      publicKeyPem: keys.publicKeyPem,
      issuerCertPem: pki.deviceCaCertPem,
      issuerKeyPem: pki.deviceCaKeyPem,
      days: IDENTITY_DAYS,
    });
    const password = randomBytes(18).toString('base64url');
    const p12 = makePkcs12({
      certPem,
      keyPem: keys.privateKeyPem,
      password,
      friendlyName: 'MDM identity',
    });
    const identityUuid = randomUUID().toUpperCase();
    const caUuid = randomUUID().toUpperCase();
    const mdmUuid = randomUUID().toUpperCase();
    const base = this.deps.publicUrl;
    const caCert = new X509Certificate(pki.profileCaCertPem);
    const profile: PlistDict = {
      PayloadType: 'Configuration',
      PayloadVersion: 1,
      PayloadIdentifier: `com.vppmdm.enroll.${identityId}`,
      PayloadUUID: randomUUID().toUpperCase(),
      PayloadDisplayName: 'MDM enrollment',
      PayloadDescription: 'Enrolls this device in device management.',
      PayloadOrganization: PROFILE_ORG,
      PayloadScope: 'System',
      PayloadContent: [
        {
          PayloadType: 'com.apple.security.pkcs12',
          PayloadVersion: 1,
          PayloadIdentifier: `com.vppmdm.enroll.${identityId}.identity`,
          PayloadUUID: identityUuid,
          PayloadDisplayName: 'MDM identity',
          PayloadCertificateFileName: 'identity.p12',
          PayloadContent: new Uint8Array(p12),
          Password: password,
        },
        {
          PayloadType: 'com.apple.security.root',
          PayloadVersion: 1,
          PayloadIdentifier: `com.vppmdm.enroll.${identityId}.ca`,
          PayloadUUID: caUuid,
          PayloadDisplayName: 'MDM server CA',
          PayloadCertificateFileName: 'ca.cer',
          PayloadContent: new Uint8Array(caCert.raw),
        },
        {
          PayloadType: 'com.apple.mdm',
          PayloadVersion: 1,
          PayloadIdentifier: `com.vppmdm.enroll.${identityId}.mdm`,
          PayloadUUID: mdmUuid,
          PayloadDisplayName: 'Device management',
          IdentityCertificateUUID: identityUuid,
          Topic: topic,
          ServerURL: `${base}/mdm/connect`,
          CheckInURL: `${base}/mdm/checkin`,
          SignMessage: true,
          AccessRights: 8191,
          CheckOutWhenRemoved: true,
          ServerCapabilities: ['com.apple.mdm.per-user-connections'],
        },
      ],
    };
    const xml = Buffer.from(encodePlist(profile), 'utf8');
    this.deps.log.info({ identity: identityId }, 'enrollment profile issued');
    if (!pki.signer) return { body: xml, signed: false };
    return {
      body: signAttached(xml, pki.signer.certPem, pki.signer.keyPem, pki.signer.chainPems),
      signed: true,
    };
  }
}
