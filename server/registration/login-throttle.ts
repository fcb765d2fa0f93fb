/**
 * Throttling of the registration page's login: failed attempts are counted per registration code
 * and per client address over a sliding window. An attempt is counted when it starts (`acquire`),
 * so concurrent attempts cannot slip past the limit; a successful one is taken back (`succeeded`),
 * and so is one that could not be judged (`forget`, e.g. the directory was down).
 */
export interface ThrottleKey {
  code: string;
  /** The client's address (`req.ip`). */
  address: string;
}

export type ThrottleDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export interface LoginThrottle {
  /** Counts an attempt against the code and the address, unless either has reached its limit. */
  acquire(key: ThrottleKey): Promise<ThrottleDecision>;
  /** The attempt logged in: it is taken back, and the code's earlier failures are forgotten. */
  succeeded(key: ThrottleKey): Promise<void>;
  /** The attempt could not be judged: it is taken back. */
  forget(key: ThrottleKey): Promise<void>;
}

export interface ThrottleLimits {
  /** Failures allowed per code within the window (api.md: at least 5 per 15 minutes). */
  perCode: number;
  /** Failures allowed per client address within the window, across codes. */
  perAddress: number;
  windowMs: number;
}

export const DEFAULT_THROTTLE_LIMITS: ThrottleLimits = { perCode: 5, perAddress: 30, windowMs: 15 * 60_000 };

/**
 * Sliding-window log in this process's memory, bounded in size. With several server instances each
 * keeps its own counts (the limits then apply per instance): a database-backed `LoginThrottle`
 * (same contract) makes them global.
 */
export class InMemoryLoginThrottle implements LoginThrottle {
  private readonly attempts = new Map<string, number[]>();
  private readonly limits: ThrottleLimits;
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(options: { limits?: Partial<ThrottleLimits>; now?: () => number; maxKeys?: number } = {}) {
    this.limits = { ...DEFAULT_THROTTLE_LIMITS, ...options.limits };
    this.now = options.now ?? Date.now;
    this.maxKeys = options.maxKeys ?? 100_000;
  }

  private recent(key: string, now: number): number[] {
    const list = this.attempts.get(key);
    if (!list) return [];
    const from = now - this.limits.windowMs;
    const kept = list.filter((t) => t > from);
    if (kept.length === 0) this.attempts.delete(key);
    else if (kept.length !== list.length) this.attempts.set(key, kept);
    return kept;
  }

  async acquire(key: ThrottleKey): Promise<ThrottleDecision> {
    const now = this.now();
    const codeKey = `c:${key.code}`;
    const addressKey = `a:${key.address}`;
    const byCode = this.recent(codeKey, now);
    const byAddress = this.recent(addressKey, now);
    const blockedUntil = Math.max(
      byCode.length >= this.limits.perCode ? this.freeAt(byCode, this.limits.perCode) : 0,
      byAddress.length >= this.limits.perAddress ? this.freeAt(byAddress, this.limits.perAddress) : 0,
    );
    if (blockedUntil > now) {
      return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((blockedUntil - now) / 1000)) };
    }
    this.prune();
    // Re-inserted so that the Map's order is least recently touched first.
    this.attempts.delete(codeKey);
    this.attempts.delete(addressKey);
    this.attempts.set(codeKey, [...byCode, now]);
    this.attempts.set(addressKey, [...byAddress, now]);
    return { allowed: true };
  }

  async succeeded(key: ThrottleKey): Promise<void> {
    this.attempts.delete(`c:${key.code}`);
    this.dropLatest(`a:${key.address}`);
  }

  async forget(key: ThrottleKey): Promise<void> {
    this.dropLatest(`c:${key.code}`);
    this.dropLatest(`a:${key.address}`);
  }

  /** When the window will hold one fewer than `limit` attempts again. */
  private freeAt(times: number[], limit: number): number {
    const oldestThatMatters = times[times.length - limit] ?? times[0] ?? 0;
    return oldestThatMatters + this.limits.windowMs;
  }

  private dropLatest(key: string): void {
    const list = this.attempts.get(key);
    if (!list) return;
    list.pop();
    if (list.length === 0) this.attempts.delete(key);
  }

  /** Bounded memory: past the key limit, the least recently touched keys go first. */
  private prune(): void {
    if (this.attempts.size < this.maxKeys) return;
    const now = this.now();
    for (const key of [...this.attempts.keys()]) this.recent(key, now);
    for (const key of this.attempts.keys()) {
      if (this.attempts.size < this.maxKeys - 2) break;
      this.attempts.delete(key);
    }
  }
}
