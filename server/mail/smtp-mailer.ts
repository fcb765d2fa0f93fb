import type { ConnectionOptions } from 'node:tls';
import nodemailer, { type SMTPPoolOptions, type SMTPPoolSentMessageInfo, type Transporter } from 'nodemailer';
import { z } from 'zod';
import type { Logger } from '../log.ts';
import { MailError, toMailError, type Mailer, type OutgoingMail, type SentMail } from './mailer.ts';

/**
 * `MDM_SMTP_URL`: `smtp://[user:password@]host[:port][?requireTLS=true]` (STARTTLS whenever the
 * server offers it; `requireTLS=true` refuses to go on without it) or `smtps://...` (TLS from the
 * first byte, port 465 by default). User and password are percent-decoded. Certificates are checked
 * against Node's trust (`NODE_EXTRA_CA_CERTS` adds a private CA); nothing here turns that off.
 */
export interface SmtpSettings {
  host: string;
  port: number;
  secure: boolean;
  requireTLS: boolean;
  auth: { user: string; pass: string } | null;
}

const querySchema = z
  .object({
    requireTLS: z.enum(['true', 'false']).optional(),
  })
  .strict();

export function parseSmtpUrl(raw: string): SmtpSettings {
  let u: URL;
  try {
    u = new URL(raw);
  } catch (err) {
    throw new Error('MDM_SMTP_URL: not a URL', { cause: err });
  }
  if (u.protocol !== 'smtp:' && u.protocol !== 'smtps:')
    throw new Error('MDM_SMTP_URL: must be smtp:// or smtps://');
  if (!u.hostname) throw new Error('MDM_SMTP_URL: host missing');
  const query = querySchema.safeParse(Object.fromEntries(u.searchParams));
  if (!query.success) {
    throw new Error(`MDM_SMTP_URL: unsupported query (only requireTLS=true|false): ${u.search}`);
  }
  const secure = u.protocol === 'smtps:';
  const user = decodeURIComponent(u.username);
  return {
    // `new URL` keeps IPv6 literals in brackets; sockets want them bare.
    host: u.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: u.port ? Number(u.port) : secure ? 465 : 587,
    secure,
    requireTLS: !secure && query.data.requireTLS === 'true',
    auth: user ? { user, pass: decodeURIComponent(u.password) } : null,
  };
}

export interface SmtpMailerOptions {
  /** `MDM_SMTP_URL`. */
  url: string;
  /** `MDM_MAIL_FROM`: the envelope sender when a message names none (else the `From:` address). */
  mailFrom?: string | null;
  log?: Logger;
  /** Pooled connections (default 2) and messages per connection before it is replaced (default 100). */
  maxConnections?: number;
  maxMessagesPerConnection?: number;
  /** Pacing: at most this many messages per second over the whole pool (default: no limit). */
  maxMessagesPerSecond?: number;
  /** TCP connect (default 15 s), greeting (default 15 s), and inactivity (default 60 s) timeouts. */
  connectionTimeoutMs?: number;
  greetingTimeoutMs?: number;
  socketTimeoutMs?: number;
  /** Extra TLS options (tests pass a `ca`); TLS 1.2 is the minimum whatever is given. */
  tls?: ConnectionOptions;
}

/**
 * `Mailer` over SMTP with a nodemailer connection pool. The pool never re-sends a message on its
 * own (`maxRequeues: 0`): a message whose connection dropped fails with a temporary `MailError`, and
 * the durable sender above decides whether and when to try again.
 */
export class SmtpMailer implements Mailer {
  private readonly transport: Transporter<SMTPPoolSentMessageInfo, SMTPPoolOptions>;
  private readonly mailFrom: string | null;
  private readonly log: Logger | undefined;
  private closed = false;

  constructor(options: SmtpMailerOptions) {
    const s = parseSmtpUrl(options.url);
    this.mailFrom = options.mailFrom ?? null;
    this.log = options.log;
    const poolOptions: SMTPPoolOptions & { pool: true } = {
      pool: true,
      host: s.host,
      port: s.port,
      secure: s.secure,
      requireTLS: s.requireTLS,
      ...(s.auth ? { auth: s.auth } : {}),
      maxConnections: options.maxConnections ?? 2,
      maxMessages: options.maxMessagesPerConnection ?? 100,
      maxRequeues: 0,
      ...(options.maxMessagesPerSecond ? { rateLimit: options.maxMessagesPerSecond, rateDelta: 1000 } : {}),
      connectionTimeout: options.connectionTimeoutMs ?? 15_000,
      greetingTimeout: options.greetingTimeoutMs ?? 15_000,
      socketTimeout: options.socketTimeoutMs ?? 60_000,
      dnsTimeout: 15_000,
      tls: { ...options.tls, minVersion: 'TLSv1.2', servername: options.tls?.servername ?? s.host },
      disableFileAccess: true,
      disableUrlAccess: true,
      logger: false,
    };
    this.transport = nodemailer.createTransport(poolOptions);
  }

  async send(message: OutgoingMail): Promise<SentMail> {
    if (this.closed) throw new MailError('mailer closed', { permanent: false, code: 'ECLOSED' });
    const to = typeof message.to === 'string' ? message.to : message.to.address;
    const envelopeFrom = message.envelopeFrom ?? this.mailFrom ?? message.from.address;
    if (message.messageId !== undefined && !/^<[!-;=?-~]+@[!-;=?-~]+>$/.test(message.messageId)) {
      throw new MailError('invalid Message-ID', { permanent: true, code: 'EHEADER' });
    }
    for (const [name, value] of Object.entries(message.headers ?? {})) {
      if (!/^[!-9;-~]+$/.test(name) || /[\r\n]/.test(value)) {
        throw new MailError(`invalid header ${JSON.stringify(name)}`, { permanent: true, code: 'EHEADER' });
      }
    }
    try {
      const info = await this.transport.sendMail({
        from: { name: message.from.name, address: message.from.address },
        to:
          typeof message.to === 'string'
            ? message.to
            : { name: message.to.name, address: message.to.address },
        subject: message.subject,
        text: message.text,
        html: message.html,
        headers: message.headers ?? {},
        ...(message.messageId !== undefined ? { messageId: message.messageId } : {}),
        envelope: { from: envelopeFrom, to: [to] },
      });
      this.log?.debug({ messageId: info.messageId, response: info.response }, 'mail accepted');
      return { messageId: info.messageId, response: info.response };
    } catch (err) {
      const e = toMailError(err);
      this.log?.debug(
        { code: e.code, responseCode: e.responseCode, response: e.response, permanent: e.permanent },
        'mail refused',
      );
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.transport.close();
  }
}
