/**
 * Subscribers in other processes: a token list registered with POST, then one server-sent-events stream
 * per subscription that carries the pushes for those tokens. The tokens count as reachable only while
 * the stream is open; a subscription whose stream closes is forgotten (the client registers again).
 */
import { randomUUID } from 'node:crypto';
import type { ServerHttp2Stream } from 'node:http2';
import type { ApnsPush } from './pending-pushes.ts';
import { SSE_KEEPALIVE, sseEvent } from './sse.ts';

export interface Subscriber {
  readonly kind: 'local' | 'remote';
  deliver(push: ApnsPush): void;
}

/** What the gateway offers a subscription: attach a subscriber to a token (pending pushes follow). */
export interface SubscriberHost {
  addSubscriber(token: string, subscriber: Subscriber): void;
  removeSubscriber(token: string, subscriber: Subscriber): void;
}

interface RemoteSubscription {
  id: string;
  tokens: Set<string>;
  stream: ServerHttp2Stream | null;
  subscriber: Subscriber;
  /** forgets a subscription whose stream was never opened */
  unopenedTimer: NodeJS.Timeout | null;
  keepalive: NodeJS.Timeout | null;
}

export type OpenResult = 'ok' | 'not_found' | 'already_open';

export class RemoteSubscriptions {
  private readonly subs = new Map<string, RemoteSubscription>();

  constructor(
    private readonly host: SubscriberHost,
    private readonly opts: { unopenedTtlMs: number; keepaliveMs: number },
  ) {}

  get count(): number {
    return this.subs.size;
  }

  create(tokens: readonly string[]): { id: string; tokens: number } {
    const id = randomUUID();
    const sub: RemoteSubscription = {
      id,
      tokens: new Set(tokens),
      stream: null,
      subscriber: {
        kind: 'remote',
        deliver: (push) => {
          const s = sub.stream;
          if (s !== null && !s.destroyed && s.writable) s.write(sseEvent('push', push, push.id));
        },
      },
      unopenedTimer: null,
      keepalive: null,
    };
    sub.unopenedTimer = setTimeout(() => {
      if (sub.stream === null) this.subs.delete(id);
    }, this.opts.unopenedTtlMs);
    sub.unopenedTimer.unref();
    this.subs.set(id, sub);
    return { id, tokens: sub.tokens.size };
  }

  /** Answers the event stream of a subscription on `stream`. */
  open(id: string, stream: ServerHttp2Stream): OpenResult {
    const sub = this.subs.get(id);
    if (sub === undefined) return 'not_found';
    if (sub.stream !== null) return 'already_open';
    if (sub.unopenedTimer !== null) clearTimeout(sub.unopenedTimer);
    sub.unopenedTimer = null;
    sub.stream = stream;
    stream.respond({
      ':status': 200,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
    });
    stream.write(sseEvent('ready', { id, tokens: sub.tokens.size }));
    sub.keepalive = setInterval(() => {
      if (!stream.destroyed && stream.writable) stream.write(SSE_KEEPALIVE);
    }, this.opts.keepaliveMs);
    sub.keepalive.unref();
    stream.once('close', () => this.forget(sub));
    for (const token of sub.tokens) this.host.addSubscriber(token, sub.subscriber);
    return 'ok';
  }

  /** Adds and removes tokens; returns the new count, or null for an unknown subscription. */
  update(id: string, add: readonly string[], remove: readonly string[]): number | null {
    const sub = this.subs.get(id);
    if (sub === undefined) return null;
    for (const token of remove) {
      if (sub.tokens.delete(token) && sub.stream !== null) this.host.removeSubscriber(token, sub.subscriber);
    }
    for (const token of add) {
      if (sub.tokens.has(token)) continue;
      sub.tokens.add(token);
      if (sub.stream !== null) this.host.addSubscriber(token, sub.subscriber);
    }
    return sub.tokens.size;
  }

  /** Ends a subscription (its stream, if open, is ended). */
  delete(id: string): boolean {
    const sub = this.subs.get(id);
    if (sub === undefined) return false;
    const stream = sub.stream;
    this.forget(sub);
    if (stream !== null && !stream.destroyed) stream.end();
    return true;
  }

  closeAll(): void {
    for (const sub of [...this.subs.values()]) {
      const stream = sub.stream;
      this.forget(sub);
      if (stream !== null && !stream.destroyed) stream.close();
    }
  }

  private forget(sub: RemoteSubscription): void {
    if (this.subs.get(sub.id) !== sub) return;
    this.subs.delete(sub.id);
    if (sub.unopenedTimer !== null) clearTimeout(sub.unopenedTimer);
    if (sub.keepalive !== null) clearInterval(sub.keepalive);
    if (sub.stream !== null)
      for (const token of sub.tokens) this.host.removeSubscriber(token, sub.subscriber);
    sub.stream = null;
  }
}
