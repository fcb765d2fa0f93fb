import { createHash, X509Certificate } from 'node:crypto';
import type { TopicSource } from '../enrollment/enrollment-service.ts';
import { ConflictError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { SecretBox } from '../security/secret-box.ts';
import {
  parsePushCertificate,
  pushCertificateFacts,
  type ApnsEnvironment,
  type PushCertificateUpload,
} from './push-certificate.ts';
import type { PushCertificateRecord, PushCertificateStore } from './store.ts';

export type PushCertificateSource = 'uploaded' | 'development';

/** The certificate pushes go out with, ready to use. */
export interface ActivePushCertificate {
  /** changes with every upload: `uploaded:<id>` or `development:<fingerprint>` */
  version: string;
  source: PushCertificateSource;
  topic: string;
  certPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
  uploadedAt: Date | null;
}

/** What the admin API shows about the certificate in use (never the key). */
export interface PushCertificateInfo {
  topic: string;
  notBefore: Date;
  notAfter: Date;
  source: PushCertificateSource;
  uploadedAt: Date | null;
  subject: string;
  issuer: string;
  serialNumber: string;
  fingerprint: string;
}

const DAY_MS = 24 * 60 * 60 * 1000;
/** How often an instance looks whether another one uploaded a new certificate. */
const DEFAULT_REFRESH_MS = 3000;
const WARN_BEFORE_MS = 30 * DAY_MS;

const sealPurpose = (certPem: string) =>
  `push-certificate:${createHash('sha256').update(new X509Certificate(certPem).raw).digest('hex')}`;

/**
 * The APNs push certificate: the uploaded one (kept in the database, key sealed with MDM_SECRET_KEY), or
 * the development one until the first upload. Every instance notices an upload made elsewhere within a
 * few seconds (it polls the active row's id). Also the source of the topic that profiles carry.
 */
export class PushCertificateService implements TopicSource {
  private cached: { checkedAt: number; id: string | null; cert: ActivePushCertificate | null } | null = null;
  private refreshing: Promise<ActivePushCertificate | null> | null = null;
  /** bumped by an upload here: a refresh that started before it must not store what it read */
  private epoch = 0;
  private readonly development: ActivePushCertificate | null;
  private expiryTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly deps: {
      store: PushCertificateStore;
      secretBox: SecretBox;
      /** the development push certificate, when the APNs endpoint is not Apple's */
      development: { certPem: string; keyPem: string } | null;
      /** what the configured APNs endpoint checks the certificate for */
      environment: ApnsEnvironment;
      log: Logger;
      now?: () => Date;
      refreshMs?: number;
    },
  ) {
    const dev = deps.development;
    if (dev) {
      const facts = pushCertificateFacts(dev.certPem);
      this.development = {
        version: `development:${facts.fingerprint}`,
        source: 'development',
        topic: facts.topic,
        certPem: dev.certPem,
        keyPem: dev.keyPem,
        notBefore: facts.notBefore,
        notAfter: facts.notAfter,
        uploadedAt: null,
      };
    } else {
      this.development = null;
    }
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  /** The certificate in use: the uploaded one, else the development one, else null. Cached a few seconds. */
  async active(): Promise<ActivePushCertificate | null> {
    const refreshMs = this.deps.refreshMs ?? DEFAULT_REFRESH_MS;
    const cached = this.cached;
    if (cached && Date.now() - cached.checkedAt < refreshMs) return cached.cert;
    this.refreshing ??= this.refresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  async currentTopic(): Promise<string | null> {
    return (await this.active())?.topic ?? null;
  }

  private async refresh(): Promise<ActivePushCertificate | null> {
    const epoch = this.epoch;
    const id = await this.deps.store.activeId();
    const previous = this.cached;
    if (previous && previous.id === id) {
      if (epoch === this.epoch) this.cached = { ...previous, checkedAt: Date.now() };
      return previous.cert;
    }
    const record = id === null ? null : await this.deps.store.getActive();
    const cert = record ? this.open(record) : this.development;
    if (epoch !== this.epoch) return cert;
    if (previous && previous.cert?.version !== cert?.version) {
      this.deps.log.info(
        { topic: cert?.topic ?? null, source: cert?.source ?? null, notAfter: cert?.notAfter ?? null },
        'push certificate changed',
      );
    }
    this.cached = { checkedAt: Date.now(), id: record?.id ?? null, cert };
    return cert;
  }

  private open(record: PushCertificateRecord): ActivePushCertificate | null {
    let keyPem: string;
    try {
      keyPem = this.deps.secretBox.open(record.keySealed, sealPurpose(record.certPem));
    } catch (err) {
      // Another MDM_SECRET_KEY sealed it: no push can go out until the instances share the key.
      this.deps.log.error(
        { err, certificateId: record.id },
        'cannot open the push certificate key: is MDM_SECRET_KEY the same on every instance?',
      );
      return null;
    }
    const facts = pushCertificateFacts(record.certPem);
    return {
      version: `uploaded:${record.id}`,
      source: 'uploaded',
      topic: record.topic,
      certPem: record.certPem,
      keyPem,
      notBefore: facts.notBefore,
      notAfter: record.notAfter,
      uploadedAt: record.uploadedAt,
    };
  }

  /** For `GET /push-certificate`: the certificate in use, or null. */
  async describe(): Promise<PushCertificateInfo | null> {
    const cert = await this.active();
    return cert ? describe(cert) : null;
  }

  /**
   * Validates and stores a certificate, which becomes the active one on every instance. A topic other
   * than the uploaded certificate's is refused (`push_topic_mismatch`) unless `force`: every device
   * enrolled with the old topic would become unreachable. Replacing the development certificate is free.
   */
  async upload(input: PushCertificateUpload, opts: { force: boolean }): Promise<PushCertificateInfo> {
    const now = this.now();
    const parsed = parsePushCertificate(input, { now, environment: this.deps.environment });
    const record = await this.deps.store.replace(
      {
        topic: parsed.topic,
        certPem: parsed.certPem,
        keySealed: this.deps.secretBox.seal(parsed.keyPem, sealPurpose(parsed.certPem)),
        notAfter: parsed.notAfter,
        uploadedAt: now,
      },
      (current) => {
        if (current && current.topic !== parsed.topic && !opts.force) {
          throw new ConflictError(
            'push_topic_mismatch',
            'the new certificate has another topic: devices enrolled with the current one could no longer be reached (add ?force=true to replace it anyway)',
            { currentTopic: current.topic, newTopic: parsed.topic },
          );
        }
        if (current && current.topic !== parsed.topic) {
          this.deps.log.warn(
            { previousTopic: current.topic, topic: parsed.topic },
            'push certificate replaced with another topic (forced): enrolled devices must enroll again',
          );
        }
      },
    );
    const active: ActivePushCertificate = {
      version: `uploaded:${record.id}`,
      source: 'uploaded',
      topic: record.topic,
      certPem: record.certPem,
      keyPem: parsed.keyPem,
      notBefore: parsed.notBefore,
      notAfter: record.notAfter,
      uploadedAt: record.uploadedAt,
    };
    // In use here at once (other instances notice the new row within a few seconds).
    this.epoch++;
    this.cached = { checkedAt: Date.now(), id: record.id, cert: active };
    this.deps.log.info(
      { topic: record.topic, notAfter: record.notAfter, certificateId: record.id },
      'push certificate uploaded',
    );
    this.warnIfExpiring(active);
    return describe(active);
  }

  /** Checks expiry now and then daily (a warning 30 days ahead, an error once expired). */
  start(): void {
    const check = () => {
      this.active()
        .then((cert) => this.warnIfExpiring(cert))
        .catch((err: unknown) => this.deps.log.error({ err }, 'push certificate check failed'));
    };
    check();
    this.expiryTimer = setInterval(check, DAY_MS);
    this.expiryTimer.unref();
  }

  stop(): void {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    this.expiryTimer = null;
  }

  private warnIfExpiring(cert: ActivePushCertificate | null): void {
    if (!cert) {
      this.deps.log.warn('no push certificate: upload one (PUT /api/v1/push-certificate) to reach devices');
      return;
    }
    const left = cert.notAfter.getTime() - this.now().getTime();
    const info = { topic: cert.topic, source: cert.source, notAfter: cert.notAfter.toISOString() };
    if (left <= 0) {
      this.deps.log.error(
        info,
        'the push certificate has expired: devices cannot be reached until it is renewed',
      );
    } else if (left <= WARN_BEFORE_MS) {
      this.deps.log.warn(
        { ...info, daysLeft: Math.floor(left / DAY_MS) },
        'the push certificate expires soon: renew it (same topic) and upload it',
      );
    }
  }
}

function describe(cert: ActivePushCertificate): PushCertificateInfo {
  const facts = pushCertificateFacts(cert.certPem);
  return {
    topic: cert.topic,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    source: cert.source,
    uploadedAt: cert.uploadedAt,
    subject: facts.subject,
    issuer: facts.issuer,
    serialNumber: facts.serialNumber,
    fingerprint: facts.fingerprint,
  };
}
