import apn from '@parse/node-apn';
import type { Logger } from '../log.ts';
import type { ActivePushCertificate } from './push-certificate-service.ts';
import { outboundCa } from '../security/outbound-trust.ts';

/** One MDM push: the device token (hex) and the enrollment's PushMagic. */
export interface MdmPush {
  token: string;
  pushMagic: string;
}

/** What APNs answered to one push. `status` is null when no HTTP answer came (connection, timeout). */
export type PushOutcome =
  { ok: true; status: 200; apnsId: string | null } | { ok: false; status: number | null; reason: string };

/** Sends MDM pushes to APNs. The implementation is `NodeApnsSender`; tests may use their own. */
export interface ApnsSender {
  /** One outcome per push, in order. Never throws for a push's failure. */
  send(cert: ActivePushCertificate, pushes: readonly MdmPush[]): Promise<PushOutcome[]>;
  close(): Promise<void>;
}

export const APPLE_APNS_HOST = 'api.push.apple.com';

/** How long APNs keeps an undelivered push (`apns-expiration`): without it APNs tries once and stores nothing. */
const EXPIRY_SECONDS = 24 * 60 * 60;
/** Streams in flight on one HTTP/2 connection; far more at once makes APNs (and nghttp2) refuse them all. */
const DEFAULT_MAX_IN_FLIGHT = 500;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const CLOSE_WAIT_MS = 2000;

/** What the configured APNs URL means for node-apn: Apple's production host, or a custom address. */
export function apnsEndpoint(apnsUrl: string): { apple: boolean; host: string; port: number } {
  const url = new URL(apnsUrl);
  const port = url.port === '' ? 443 : Number(url.port);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return { apple: host === APPLE_APNS_HOST && port === 443, host, port };
}

/** The notification node-apn sends: body `{"mdm":"<PushMagic>"}` only, push type `mdm`, expiry now + 24 h. */
export function mdmNotification(topic: string, pushMagic: string, now: Date): apn.Notification {
  const note = new apn.Notification();
  note.mdm = pushMagic;
  note.pushType = 'mdm';
  note.topic = topic;
  note.expiry = Math.floor(now.getTime() / 1000) + EXPIRY_SECONDS;
  return note;
}

/**
 * APNs through `@parse/node-apn` (HTTP/2 + TLS, client certificate). One provider (one HTTP/2 connection)
 * per certificate version: a renewed certificate gets a new connection, the old one closes gracefully.
 * node-apn's own immediate retries are off: the durable queue retries with back-off.
 */
export class NodeApnsSender implements ApnsSender {
  private current: { version: string; provider: apn.Provider } | null = null;
  private readonly endpoint: ReturnType<typeof apnsEndpoint>;

  constructor(
    private readonly opts: {
      apnsUrl: string;
      /** extra CA certificates (PEM) to trust for a non-Apple endpoint, e.g. the development CA */
      extraCaPems?: readonly string[];
      log: Logger;
      maxInFlight?: number;
      requestTimeoutMs?: number;
      now?: () => Date;
    },
  ) {
    this.endpoint = apnsEndpoint(opts.apnsUrl);
  }

  private provider(cert: ActivePushCertificate): apn.Provider {
    if (this.current?.version === cert.version) return this.current.provider;
    const previous = this.current;
    const base: apn.ProviderOptions = {
      cert: cert.certPem,
      key: cert.keyPem,
      connectionRetryLimit: 0,
      requestTimeout: this.opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    };
    const ca = outboundCa(this.opts.extraCaPems ?? []);
    // Apple's host: production (real MDM certificates carry only the production extension). Any other
    // address makes node-apn check for the sandbox extension; it gets the development CA to trust.
    const options: apn.ProviderOptions = this.endpoint.apple
      ? { ...base, production: true }
      : {
          ...base,
          address: this.endpoint.host,
          port: this.endpoint.port,
          ...(ca ? { ca } : {}),
        };
    const provider = new apn.Provider(options);
    this.current = { version: cert.version, provider };
    if (previous) {
      // Streams in flight on the old connection finish; then it closes.
      previous.provider.shutdown();
      this.opts.log.info({ topic: cert.topic }, 'APNs connection renewed for a new push certificate');
    }
    return provider;
  }

  async send(cert: ActivePushCertificate, pushes: readonly MdmPush[]): Promise<PushOutcome[]> {
    const outcomes: PushOutcome[] = new Array<PushOutcome>(pushes.length);
    let provider: apn.Provider;
    try {
      provider = this.provider(cert);
    } catch (err) {
      // node-apn refused the certificate (e.g. expired, wrong environment): every push fails alike.
      const reason = err instanceof Error ? err.message : String(err);
      return pushes.map(() => ({ ok: false, status: null, reason }));
    }
    const now = this.opts.now?.() ?? new Date();
    const limit = Math.max(1, this.opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    let next = 0;
    const worker = async () => {
      for (;;) {
        const i = next++;
        const push = pushes[i];
        if (push === undefined) return;
        outcomes[i] = await sendOne(provider, mdmNotification(cert.topic, push.pushMagic, now), push.token);
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, pushes.length) }, worker));
    return outcomes;
  }

  async close(): Promise<void> {
    const current = this.current;
    this.current = null;
    if (!current) return;
    // node-apn's shutdown waits for the session to close, which never happens to a session that failed
    // to connect: give it a moment, no more.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, CLOSE_WAIT_MS);
      timer.unref();
      current.provider.shutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

async function sendOne(provider: apn.Provider, note: apn.Notification, token: string): Promise<PushOutcome> {
  try {
    const { sent, failed } = await provider.send(note, token);
    if (sent.length > 0) return { ok: true, status: 200, apnsId: apnsIdOf(sent[0]) };
    const f = failed[0];
    if (!f) return { ok: false, status: null, reason: 'no answer' };
    return {
      ok: false,
      status: typeof f.status === 'number' ? f.status : null,
      reason: f.response?.reason ?? (f.error instanceof Error ? f.error.message : 'unknown error'),
    };
  } catch (err) {
    return { ok: false, status: null, reason: err instanceof Error ? err.message : String(err) };
  }
}

function apnsIdOf(sent: unknown): string | null {
  if (typeof sent !== 'object' || sent === null) return null;
  const id = (sent as Record<string, unknown>)['apns-id'];
  return typeof id === 'string' ? id : null;
}
