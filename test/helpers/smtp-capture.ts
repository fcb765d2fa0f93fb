import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';

/**
 * A real SMTP server for tests (smtp-server on 127.0.0.1, a free port, no TLS): it keeps every
 * message it accepts, parsed, and can answer chosen recipients with a 4xx or 5xx, or be stopped to
 * play a server that is down.
 */
export interface CapturedMail {
  /** `MAIL FROM` and `RCPT TO` of the SMTP session. */
  envelopeFrom: string;
  recipients: string[];
  raw: string;
  /** First value of a header (name case-insensitive), RFC 2047 words decoded. */
  header(name: string): string | undefined;
  subject: string;
  from: { name: string; address: string };
  /** The text/plain and text/html parts, decoded (null when missing). */
  text: string | null;
  html: string | null;
  /** When the SMTP server accepted the message (ms since the epoch). */
  receivedAt: number;
}

export interface SmtpCapture {
  /** `smtp://127.0.0.1:<port>` */
  url: string;
  port: number;
  messages: CapturedMail[];
  /** Answers `RCPT TO:<address>` with `code message` from now on (e.g. 550, 452). */
  rejectRecipient(address: string, code: number, message: string): void;
  clearRejections(): void;
  /** Resolves once at least `count` messages were accepted (fails after the deadline). */
  waitForMessages(count: number, timeoutMs?: number): Promise<CapturedMail[]>;
  /** Stops listening and drops open connections (the server is then "down"). */
  stop(): Promise<void>;
}

/**
 * `port`: listen on this one, and `messages`: keep adding to this list (e.g. those of a capture that
 * was stopped: the same server "comes back").
 */
export async function startSmtpCapture(
  opts: { port?: number; messages?: CapturedMail[] } = {},
): Promise<SmtpCapture> {
  const messages: CapturedMail[] = opts.messages ?? [];
  const rejections = new Map<string, { code: number; message: string }>();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    size: 10 * 1024 * 1024,
    closeTimeout: 100,
    onRcptTo(address: SMTPServerAddress, _session, callback) {
      const rejection = rejections.get(address.address.toLowerCase());
      if (!rejection) return callback();
      return callback(Object.assign(new Error(rejection.message), { responseCode: rejection.code }));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const mailFrom = session.envelope.mailFrom;
        messages.push({
          ...parseMessage(
            raw,
            mailFrom ? mailFrom.address : '',
            session.envelope.rcptTo.map((r) => r.address),
          ),
          receivedAt: Date.now(),
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  server.on('error', () => undefined);
  const port = (server.server.address() as AddressInfo).port;
  let stopped = false;
  return {
    url: `smtp://127.0.0.1:${port}`,
    port,
    messages,
    rejectRecipient(address, code, message) {
      rejections.set(address.toLowerCase(), { code, message });
    },
    clearRejections() {
      rejections.clear();
    },
    async waitForMessages(count, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (messages.length < count) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} message(s)`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return messages;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      // Open (pooled) connections get `421` and are closed after `closeTimeout`.
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---- a small MIME reader (enough for what nodemailer writes) ----

interface Part {
  headers: Map<string, string[]>;
  body: string;
}

function splitHeaders(raw: string): Part {
  const sep = raw.search(/\r?\n\r?\n/);
  const head = sep < 0 ? raw : raw.slice(0, sep);
  const body = sep < 0 ? '' : raw.slice(sep).replace(/^\r?\n\r?\n/, '');
  const headers = new Map<string, string[]>();
  for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const values = headers.get(name) ?? [];
    values.push(line.slice(colon + 1).trim());
    headers.set(name, values);
  }
  return { headers, body };
}

/** RFC 2047 encoded words (`=?UTF-8?Q?...?=` and `=?UTF-8?B?...?=`). */
export function decodeWords(value: string): string {
  return value
    .replace(/(=\?[^?]+\?[QqBb]\?[^?]*\?=)\s+(?==\?)/g, '$1')
    .replace(/=\?([^?]+)\?([QqBb])\?([^?]*)\?=/g, (_m, _charset: string, enc: string, data: string) => {
      if (enc.toUpperCase() === 'B') return Buffer.from(data, 'base64').toString('utf8');
      const bytes = data
        .replace(/_/g, ' ')
        .replace(/=([0-9A-Fa-f]{2})/g, (_x, hex: string) => String.fromCharCode(parseInt(hex, 16)));
      return Buffer.from(bytes, 'latin1').toString('utf8');
    });
}

function param(headerValue: string, name: string): string | undefined {
  const m = new RegExp(`;\\s*${name}\\s*=\\s*(?:"([^"]*)"|([^;\\s]+))`, 'i').exec(headerValue);
  return m ? (m[1] ?? m[2]) : undefined;
}

function decodeBody(part: Part): string {
  const encoding = (part.headers.get('content-transfer-encoding')?.[0] ?? '7bit').toLowerCase();
  if (encoding === 'base64') return Buffer.from(part.body.replace(/\s+/g, ''), 'base64').toString('utf8');
  if (encoding === 'quoted-printable') {
    const bytes = part.body
      .replace(/=\r?\n/g, '')
      .replace(/=([0-9A-Fa-f]{2})/g, (_x, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    return Buffer.from(bytes, 'latin1').toString('utf8');
  }
  return part.body;
}

function leaves(part: Part): Part[] {
  const type = part.headers.get('content-type')?.[0] ?? 'text/plain';
  if (!/^multipart\//i.test(type)) return [part];
  const boundary = param(type, 'boundary');
  if (!boundary) return [];
  const out: Part[] = [];
  const pieces = part.body.split(`--${boundary}`);
  for (const piece of pieces.slice(1)) {
    if (piece.startsWith('--')) break;
    out.push(...leaves(splitHeaders(piece.replace(/^\r?\n/, '').replace(/\r?\n$/, ''))));
  }
  return out;
}

function parseAddress(value: string): { name: string; address: string } {
  const decoded = decodeWords(value);
  const m = /^(.*?)\s*<([^>]+)>\s*$/.exec(decoded);
  if (!m) return { name: '', address: decoded.trim() };
  let name = (m[1] ?? '').trim();
  if (name.startsWith('"') && name.endsWith('"')) name = name.slice(1, -1).replace(/\\(.)/g, '$1');
  return { name, address: m[2] ?? '' };
}

function parseMessage(
  raw: string,
  envelopeFrom: string,
  recipients: string[],
): Omit<CapturedMail, 'receivedAt'> {
  const top = splitHeaders(raw);
  const parts = leaves(top);
  const find = (type: string) => {
    const part = parts.find((p) => (p.headers.get('content-type')?.[0] ?? 'text/plain').startsWith(type));
    return part ? decodeBody(part).replace(/\r\n/g, '\n') : null;
  };
  const header = (name: string) => {
    const v = top.headers.get(name.toLowerCase())?.[0];
    return v === undefined ? undefined : decodeWords(v);
  };
  return {
    envelopeFrom,
    recipients,
    raw,
    header,
    subject: header('subject') ?? '',
    from: parseAddress(top.headers.get('from')?.[0] ?? ''),
    text: find('text/plain'),
    html: find('text/html'),
  };
}
