/**
 * Pushes waiting for their device: at most one per token (a newer push replaces the older one, as APNs
 * keeps only the last notification for an offline device), each until its `apns-expiration`.
 */

/** What a subscriber receives for each push. */
export interface ApnsPush {
  /** device token, 64 lower-case hex digits */
  token: string;
  /** the PushMagic from `{"mdm": ...}` */
  mdm: string;
  topic: string;
  /** the apns-id of the request (echoed or generated) */
  id: string;
}

/** A push the gateway accepted but has not delivered yet. */
export interface PendingPush extends ApnsPush {
  /** apns-expiration, seconds since epoch; 0 = not stored */
  expiration: number;
  /** ms since epoch */
  receivedAt: number;
}

export function isExpired(push: PendingPush, nowMs: number): boolean {
  return push.expiration * 1000 <= nowMs;
}

export class PendingPushes {
  private readonly byToken = new Map<string, PendingPush>();

  get size(): number {
    return this.byToken.size;
  }

  /** Stores `push`; returns the push it replaced, if any. */
  put(push: PendingPush): PendingPush | undefined {
    const previous = this.byToken.get(push.token);
    this.byToken.set(push.token, push);
    return previous;
  }

  /** The pending push of a token that has not expired (an expired one is removed and reported). */
  peek(token: string, nowMs: number, onExpired: (p: PendingPush) => void): PendingPush | undefined {
    const push = this.byToken.get(token);
    if (push === undefined) return undefined;
    if (isExpired(push, nowMs)) {
      this.byToken.delete(token);
      onExpired(push);
      return undefined;
    }
    return push;
  }

  /** Removes and returns the token's pending push if it has not expired. */
  take(token: string, nowMs: number, onExpired: (p: PendingPush) => void): PendingPush | undefined {
    const push = this.peek(token, nowMs, onExpired);
    if (push !== undefined) this.byToken.delete(token);
    return push;
  }

  /** Removes every expired push. */
  sweep(nowMs: number, onExpired: (p: PendingPush) => void): void {
    for (const [token, push] of this.byToken) {
      if (isExpired(push, nowMs)) {
        this.byToken.delete(token);
        onExpired(push);
      }
    }
  }
}
