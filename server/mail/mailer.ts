/**
 * Outgoing mail, behind one small interface (`SmtpMailer` implements it over SMTP). Failures are
 * `MailError`s that say whether trying again later can help (`permanent: false`) or not.
 */

export interface MailAddress {
  name: string;
  address: string;
}

export interface OutgoingMail {
  /** The `From:` header (the invitation's sender name and address). */
  from: MailAddress;
  to: string | MailAddress;
  subject: string;
  text: string;
  html: string;
  /** SMTP envelope sender (`MAIL FROM`); defaults to the mailer's own, then to `from.address`. */
  envelopeFrom?: string;
  /** Extra headers (e.g. `Auto-Submitted`); names and values must be single-line. */
  headers?: Record<string, string>;
  /**
   * The Message-ID, with its angle brackets (default: a random one). A caller that may send the same
   * message again (a retry after a crash) passes a stable one, so that a duplicate is recognisable.
   */
  messageId?: string;
}

export interface SentMail {
  /** The Message-ID header, with its angle brackets. */
  messageId: string;
  /** The server's final answer to the message (e.g. `250 2.0.0 Ok: queued as ...`). */
  response: string;
}

export interface Mailer {
  /** Sends one message; throws `MailError`. */
  send(message: OutgoingMail): Promise<SentMail>;
  /** Closes pooled connections (idempotent). */
  close(): Promise<void>;
}

export class MailError extends Error {
  /** True when sending the same message again would be refused again (an SMTP 5xx answer). */
  readonly permanent: boolean;
  /** The SMTP reply code, when the server answered (e.g. 550); null for network failures. */
  readonly responseCode: number | null;
  /** The server's answer text (e.g. `550 5.1.1 <bob@example.com>: Recipient address rejected`). */
  readonly response: string | null;
  /** The client's failure code (`ECONNECTION`, `ETIMEDOUT`, `EENVELOPE`, ...), when there is one. */
  readonly code: string | null;

  constructor(
    message: string,
    fields: {
      permanent: boolean;
      responseCode?: number | null;
      response?: string | null;
      code?: string | null;
    },
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MailError';
    this.permanent = fields.permanent;
    this.responseCode = fields.responseCode ?? null;
    this.response = fields.response ?? null;
    this.code = fields.code ?? null;
  }

  /** A short reason to store with a failed usage: the server's answer, or the failure's message. */
  get reason(): string {
    return (this.response ?? this.message).slice(0, 500);
  }
}

/** Client failures that can never succeed on a retry, even without an SMTP answer. */
const PERMANENT_CODES = new Set(['EENVELOPE', 'EMAXRECIPIENTS', 'ECONFIG']);

/**
 * Turns whatever the transport threw into a `MailError`.
 * - An SMTP answer decides: 5xx → permanent, 4xx → temporary. 503 (bad sequence of commands) is
 *   about the session, not the message, and is temporary (a new connection can send it).
 * - No answer: an envelope the client itself refused (no valid recipient) is permanent; network
 *   failures (refused, reset, timeouts, TLS, DNS) and anything unknown are temporary.
 */
export function toMailError(err: unknown): MailError {
  if (err instanceof MailError) return err;
  const e = (typeof err === 'object' && err !== null ? err : {}) as {
    message?: unknown;
    code?: unknown;
    responseCode?: unknown;
    response?: unknown;
  };
  const message = typeof e.message === 'string' && e.message ? e.message : String(err);
  const code = typeof e.code === 'string' ? e.code : null;
  const responseCode =
    typeof e.responseCode === 'number' && e.responseCode >= 200 && e.responseCode <= 599
      ? e.responseCode
      : null;
  const response = typeof e.response === 'string' && e.response ? e.response.trim() : null;
  let permanent: boolean;
  if (responseCode !== null && responseCode >= 400) {
    permanent = responseCode >= 500 && responseCode !== 503;
  } else {
    permanent = code !== null && PERMANENT_CODES.has(code);
  }
  return new MailError(message, { permanent, responseCode, response, code }, { cause: err });
}
