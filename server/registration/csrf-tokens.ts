import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * CSRF synchronizer tokens for the registration page's login form: a random token is issued with
 * the form and stored server-side, bound to the page (the registration code and the browser's
 * session cookie); a POST must bring it back. Each token is single-use: the form shown again after
 * a failed login carries a new one.
 */
export interface CsrfTokens {
  /** A new random token (256 bits, base64url) bound to `binding`. */
  issue(binding: string): Promise<string>;
  /**
   * True once per token, when it was issued for this binding and has not expired. The token is
   * spent whatever the answer (a token presented with another binding is not tried again).
   */
  consume(binding: string, token: string): Promise<boolean>;
}

export interface InMemoryCsrfTokensOptions {
  /** How long a form stays usable (default 30 minutes). */
  ttlMs?: number;
  /** Bound on memory: the oldest tokens are dropped beyond this many (default 100,000). */
  maxTokens?: number;
  now?: () => number;
}

const sha256 = (value: string) => createHash('sha256').update(value, 'utf8').digest();

/**
 * Tokens in this process's memory. Only hashes are kept. With several server instances a POST may
 * reach another instance than the GET that issued the form: use a database-backed `CsrfTokens`
 * (same contract) there, or sticky sessions.
 */
export class InMemoryCsrfTokens implements CsrfTokens {
  private readonly tokens = new Map<string, { binding: Buffer; expiresAt: number }>();
  private readonly ttlMs: number;
  private readonly maxTokens: number;
  private readonly now: () => number;

  constructor(options: InMemoryCsrfTokensOptions = {}) {
    this.ttlMs = options.ttlMs ?? 30 * 60_000;
    this.maxTokens = options.maxTokens ?? 100_000;
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.tokens.size;
  }

  async issue(binding: string): Promise<string> {
    this.prune();
    const token = randomBytes(32).toString('base64url');
    this.tokens.set(sha256(token).toString('hex'), {
      binding: sha256(binding),
      expiresAt: this.now() + this.ttlMs,
    });
    return token;
  }

  async consume(binding: string, token: string): Promise<boolean> {
    if (!token || token.length > 256) return false;
    const key = sha256(token).toString('hex');
    const entry = this.tokens.get(key);
    if (!entry) return false;
    this.tokens.delete(key);
    return entry.expiresAt > this.now() && timingSafeEqual(entry.binding, sha256(binding));
  }

  /** Insertion order is expiry order (one TTL for all): drop expired ones from the front, then any excess. */
  private prune(): void {
    const now = this.now();
    for (const [key, entry] of this.tokens) {
      if (entry.expiresAt > now && this.tokens.size < this.maxTokens) break;
      this.tokens.delete(key);
    }
  }
}
