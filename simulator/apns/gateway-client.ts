/**
 * A subscriber in another process: registers its device tokens with the APNs gateway and receives the
 * pushes for them over the gateway's event stream (HTTP/2), reconnecting with backoff whenever the
 * stream or the connection ends (a gateway outage, a restart). On each reconnection it registers its
 * current token set again, and the gateway then delivers whatever waited for those tokens.
 */
import http2 from 'node:http2';
import type { ClientHttp2Session, OutgoingHttpHeaders } from 'node:http2';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { deviceTokenSchema } from './faults.ts';
import type { ApnsPush } from './pending-pushes.ts';
import {
  SUBSCRIPTIONS_PATH,
  SseParser,
  pushEventSchema,
  readyEventSchema,
  subscriptionAnswerSchema,
} from './sse.ts';
import type { SseMessage, SubscriptionAnswer } from './sse.ts';

export interface SubscribeRemoteOptions {
  /** CA certificate(s) to trust for the gateway's TLS certificate (the dev PKI's ca.pem) */
  ca?: string | string[];
  /** the gateway's admin token, when it has one */
  adminToken?: string;
  /** first reconnection delay (default 100 ms), doubled per failure up to maxBackoffMs (default 5 s) */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** called each time a stream is ready (first connection and every reconnection) */
  onReady?: (info: SubscriptionAnswer) => void;
  /** called when a connection attempt fails or an open stream ends */
  onDisconnect?: (err: Error | null) => void;
  logger?: Logger;
}

export interface RemoteSubscription {
  /** resolves when the first stream is ready; rejects if closed before that */
  readonly ready: Promise<void>;
  /** true while an event stream is open */
  readonly connected: boolean;
  /** adds tokens (sent at once when connected, else with the next registration) */
  addTokens(tokens: readonly string[]): Promise<void>;
  removeTokens(tokens: readonly string[]): Promise<void>;
  /** stops reconnecting and closes the connection */
  close(): Promise<void>;
}

interface JsonAnswer {
  status: number;
  json: unknown;
}

function request(
  session: ClientHttp2Session,
  headers: OutgoingHttpHeaders,
  body: unknown,
): Promise<JsonAnswer> {
  return new Promise((resolve, reject) => {
    const req = session.request({
      ...headers,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    });
    let status = 0;
    let text = '';
    req.setEncoding('utf8');
    req.on('response', (h) => {
      status = Number(h[':status'] ?? 0);
    });
    req.on('data', (chunk: string) => {
      text += chunk;
    });
    req.once('end', () => {
      let json: unknown = null;
      try {
        json = text.length > 0 ? JSON.parse(text) : null;
      } catch {
        json = text;
      }
      resolve({ status, json });
    });
    req.once('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

class RemoteSubscriber implements RemoteSubscription {
  readonly ready: Promise<void>;
  private resolveReady: () => void = () => undefined;
  private rejectReady: (err: Error) => void = () => undefined;
  private readonly tokens: Set<string>;
  private readonly log: Logger;
  private readonly minBackoff: number;
  private readonly maxBackoff: number;
  private session: ClientHttp2Session | null = null;
  private subscriptionId: string | null = null;
  private streamReady = false;
  private closed = false;
  private failures = 0;
  /** bumped per connection so handlers of an old one do nothing */
  private generation = 0;
  private retryTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly url: string,
    tokens: readonly string[],
    private readonly onPush: (push: ApnsPush) => void,
    private readonly options: SubscribeRemoteOptions,
  ) {
    this.tokens = new Set(tokens.map((t) => deviceTokenSchema.parse(t)));
    this.log = (options.logger ?? pino({ enabled: false })).child({ component: 'apns-subscriber' });
    this.minBackoff = options.minBackoffMs ?? 100;
    this.maxBackoff = options.maxBackoffMs ?? 5000;
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => undefined);
  }

  get connected(): boolean {
    return this.streamReady;
  }

  start(): void {
    void this.connect();
  }

  async addTokens(tokens: readonly string[]): Promise<void> {
    const fresh = tokens.map((t) => deviceTokenSchema.parse(t)).filter((t) => !this.tokens.has(t));
    for (const t of fresh) this.tokens.add(t);
    if (fresh.length > 0) await this.sync({ add: fresh });
  }

  async removeTokens(tokens: readonly string[]): Promise<void> {
    const gone = tokens.map((t) => deviceTokenSchema.parse(t)).filter((t) => this.tokens.delete(t));
    if (gone.length > 0) await this.sync({ remove: gone });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.streamReady = false;
    this.rejectReady(new Error('subscription closed'));
    const session = this.session;
    this.session = null;
    if (session !== null && !session.destroyed) {
      await new Promise<void>((resolve) => {
        session.once('close', () => resolve());
        session.destroy();
      });
    }
  }

  private authHeader(): OutgoingHttpHeaders {
    return this.options.adminToken === undefined
      ? {}
      : { authorization: `Bearer ${this.options.adminToken}` };
  }

  /** Sends a token change for the open subscription (a later registration carries it otherwise). */
  private async sync(change: { add?: string[]; remove?: string[] }): Promise<void> {
    const session = this.session;
    const id = this.subscriptionId;
    if (session === null || id === null || session.destroyed) return;
    try {
      const answer = await request(
        session,
        { ':method': 'PATCH', ':path': `${SUBSCRIPTIONS_PATH}/${id}`, ...this.authHeader() },
        change,
      );
      if (answer.status !== 200) this.log.debug({ status: answer.status }, 'token update refused');
    } catch (err) {
      this.log.debug({ err }, 'token update failed');
    }
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const generation = ++this.generation;
    const current = (): boolean => generation === this.generation && !this.closed;
    const ca = this.options.ca;
    const session = http2.connect(this.url, ca === undefined ? {} : { ca });
    this.session = session;
    this.subscriptionId = null;
    session.on('error', (err) => this.disconnected(generation, err));
    session.once('close', () => this.disconnected(generation, null));
    try {
      const posted = [...this.tokens];
      const answer = await request(
        session,
        { ':method': 'POST', ':path': SUBSCRIPTIONS_PATH, ...this.authHeader() },
        { tokens: posted },
      );
      if (answer.status !== 201)
        throw new Error(`subscription refused: ${answer.status} ${JSON.stringify(answer.json)}`);
      const { id } = subscriptionAnswerSchema.parse(answer.json);
      if (!current()) return;
      this.subscriptionId = id;
      const stream = session.request({
        ':method': 'GET',
        ':path': `${SUBSCRIPTIONS_PATH}/${id}/events`,
        accept: 'text/event-stream',
        ...this.authHeader(),
      });
      stream.setEncoding('utf8');
      const parser = new SseParser();
      stream.on('response', (h) => {
        const status = Number(h[':status'] ?? 0);
        if (status !== 200) this.disconnected(generation, new Error(`event stream refused: ${status}`));
      });
      stream.on('data', (chunk: string) => {
        if (current()) parser.push(chunk, (m) => this.onMessage(m, generation));
      });
      stream.on('error', (err) => this.disconnected(generation, err));
      stream.once('close', () => this.disconnected(generation, null));
      stream.end();
      // tokens added or removed while registering
      const postedSet = new Set(posted);
      const add = [...this.tokens].filter((t) => !postedSet.has(t));
      const remove = posted.filter((t) => !this.tokens.has(t));
      if (add.length > 0 || remove.length > 0) await this.sync({ add, remove });
    } catch (err) {
      this.disconnected(generation, err instanceof Error ? err : new Error(String(err)));
    }
  }

  private onMessage(m: SseMessage, generation: number): void {
    if (generation !== this.generation) return;
    let data: unknown;
    try {
      data = JSON.parse(m.data);
    } catch {
      this.log.warn({ event: m.event }, 'unreadable event from the gateway');
      return;
    }
    if (m.event === 'push') {
      const push = pushEventSchema.safeParse(data);
      if (!push.success) {
        this.log.warn('malformed push event from the gateway');
        return;
      }
      try {
        this.onPush(push.data);
      } catch (err) {
        this.log.warn({ err }, 'push handler threw');
      }
    } else if (m.event === 'ready') {
      const info = readyEventSchema.safeParse(data);
      if (!info.success) return;
      this.failures = 0;
      this.streamReady = true;
      this.resolveReady();
      this.options.onReady?.(info.data);
    }
  }

  /** Ends the connection of `generation` (once) and schedules the next attempt. */
  private disconnected(generation: number, err: Error | null): void {
    if (generation !== this.generation || this.closed) return;
    this.generation++;
    this.streamReady = false;
    this.subscriptionId = null;
    const session = this.session;
    this.session = null;
    if (session !== null && !session.destroyed) session.destroy();
    this.options.onDisconnect?.(err);
    const base = Math.min(this.maxBackoff, this.minBackoff * 2 ** Math.min(this.failures, 20));
    this.failures++;
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    this.log.debug({ err, delay }, 'gateway subscription lost, reconnecting');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
  }
}

/**
 * Subscribes to the pushes for `tokens` at the gateway `url` (https://host:port) from another process.
 * Keeps reconnecting (with backoff) until `close()`.
 */
export function subscribeRemote(
  url: string,
  tokens: readonly string[],
  onPush: (push: ApnsPush) => void,
  options: SubscribeRemoteOptions = {},
): RemoteSubscription {
  const subscriber = new RemoteSubscriber(url, tokens, onPush, options);
  subscriber.start();
  return subscriber;
}
