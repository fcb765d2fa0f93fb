import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Transaction } from 'sequelize';
import type { CsrfTokens } from '../registration/csrf-tokens.ts';
import {
  DEFAULT_THROTTLE_LIMITS,
  type LoginThrottle,
  type ThrottleDecision,
  type ThrottleKey,
  type ThrottleLimits,
} from '../registration/login-throttle.ts';
import type { Database } from './database.ts';
import { toDate, toInt } from './models.ts';
import { execCount, select } from './sql-kit.ts';

/**
 * The registration page's CSRF tokens and login throttle in the database (migration `0007_email`), so
 * that every server instance sees the same tokens and counts: a form issued by one instance can be
 * posted to another, and the limits hold across instances.
 */

const sha256Hex = (value: string) => createHash('sha256').update(value, 'utf8').digest('hex');

/** Expired rows are removed at most this often per process (and then in one statement). */
const PRUNE_EVERY_MS = 60_000;

/**
 * `CsrfTokens` in `registration_csrf_tokens`: only SHA-256 hashes of the token and its binding are
 * stored. A token is spent by deleting its row: of two concurrent posts of one token (on any
 * instances) exactly one deletes it, so a token is accepted at most once.
 */
export class SqlCsrfTokens implements CsrfTokens {
  private readonly ttlMs: number;
  private readonly now: () => number;
  private lastPrune = 0;

  constructor(
    private readonly db: Database,
    options: { ttlMs?: number; now?: () => number } = {},
  ) {
    this.ttlMs = options.ttlMs ?? 30 * 60_000;
    this.now = options.now ?? Date.now;
  }

  async issue(binding: string): Promise<string> {
    const token = randomBytes(32).toString('base64url');
    const now = this.now();
    const prune = now - this.lastPrune >= PRUNE_EVERY_MS;
    if (prune) this.lastPrune = now;
    await this.db.write(async (t) => {
      if (prune) {
        await execCount(
          this.db.sequelize,
          t,
          'DELETE FROM registration_csrf_tokens WHERE expires_at < :now',
          {
            now: new Date(now),
          },
        );
      }
      await this.db.sequelize.getQueryInterface().bulkInsert(
        'registration_csrf_tokens',
        [
          {
            token_hash: sha256Hex(token),
            binding_hash: sha256Hex(binding),
            expires_at: new Date(now + this.ttlMs),
          },
        ],
        { transaction: t },
      );
    });
    return token;
  }

  async consume(binding: string, token: string): Promise<boolean> {
    if (!token || token.length > 256) return false;
    const tokenHash = sha256Hex(token);
    const row = await this.db.write(async (t) => {
      const rows = await select<{ binding_hash: string; expires_at: unknown }>(
        this.db.sequelize,
        'SELECT binding_hash, expires_at FROM registration_csrf_tokens WHERE token_hash = :tokenHash',
        { tokenHash },
        t,
      );
      const found = rows[0];
      if (!found) return null;
      const deleted = await execCount(
        this.db.sequelize,
        t,
        'DELETE FROM registration_csrf_tokens WHERE token_hash = :tokenHash',
        { tokenHash },
      );
      return deleted === 1 ? found : null;
    });
    if (!row) return false;
    const expected = Buffer.from(row.binding_hash, 'hex');
    const given = Buffer.from(sha256Hex(binding), 'hex');
    return (
      toDate(row.expires_at).getTime() > this.now() &&
      expected.length === given.length &&
      timingSafeEqual(expected, given)
    );
  }
}

/**
 * `LoginThrottle` in `registration_login_attempts`: one row per attempt and key (the SHA-256 of
 * `c:<code>` and of `a:<address>`), counted over the sliding window. The check and the insert run in
 * one transaction that first updates the single row of `registration_throttle_lock`, so checks are
 * serialised across instances and concurrent attempts cannot slip past the limit (login attempts are
 * few: one lock is enough).
 */
export class SqlLoginThrottle implements LoginThrottle {
  private readonly limits: ThrottleLimits;
  private readonly now: () => number;
  private lastPrune = 0;

  constructor(
    private readonly db: Database,
    options: { limits?: Partial<ThrottleLimits>; now?: () => number } = {},
  ) {
    this.limits = { ...DEFAULT_THROTTLE_LIMITS, ...options.limits };
    this.now = options.now ?? Date.now;
  }

  async acquire(key: ThrottleKey): Promise<ThrottleDecision> {
    const codeKey = sha256Hex(`c:${key.code}`);
    const addressKey = sha256Hex(`a:${key.address}`);
    const now = this.now();
    const from = new Date(now - this.limits.windowMs);
    const prune = now - this.lastPrune >= PRUNE_EVERY_MS;
    if (prune) this.lastPrune = now;
    const sequelize = this.db.sequelize;
    return this.db.write(async (t) => {
      await execCount(sequelize, t, 'UPDATE registration_throttle_lock SET n = n + 1 WHERE id = 1', {});
      if (prune) {
        await execCount(sequelize, t, 'DELETE FROM registration_login_attempts WHERE attempted_at <= :from', {
          from,
        });
      }
      const times = async (hash: string) =>
        (
          await select<{ attempted_at: unknown }>(
            sequelize,
            `SELECT attempted_at FROM registration_login_attempts
              WHERE key_hash = :hash AND attempted_at > :from ORDER BY attempted_at, id`,
            { hash, from },
            t,
          )
        ).map((r) => toDate(r.attempted_at).getTime());
      const byCode = await times(codeKey);
      const byAddress = await times(addressKey);
      const blockedUntil = Math.max(
        byCode.length >= this.limits.perCode ? this.freeAt(byCode, this.limits.perCode) : 0,
        byAddress.length >= this.limits.perAddress ? this.freeAt(byAddress, this.limits.perAddress) : 0,
      );
      if (blockedUntil > now) {
        return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((blockedUntil - now) / 1000)) };
      }
      const at = new Date(now);
      await sequelize.getQueryInterface().bulkInsert(
        'registration_login_attempts',
        [
          { key_hash: codeKey, attempted_at: at },
          { key_hash: addressKey, attempted_at: at },
        ],
        { transaction: t },
      );
      return { allowed: true };
    });
  }

  async succeeded(key: ThrottleKey): Promise<void> {
    const codeKey = sha256Hex(`c:${key.code}`);
    await this.db.write(async (t) => {
      await execCount(
        this.db.sequelize,
        t,
        'DELETE FROM registration_login_attempts WHERE key_hash = :codeKey',
        {
          codeKey,
        },
      );
      await this.dropLatest(t, sha256Hex(`a:${key.address}`));
    });
  }

  async forget(key: ThrottleKey): Promise<void> {
    await this.db.write(async (t) => {
      await this.dropLatest(t, sha256Hex(`c:${key.code}`));
      await this.dropLatest(t, sha256Hex(`a:${key.address}`));
    });
  }

  /** When the window will hold one fewer than `limit` attempts again. */
  private freeAt(times: number[], limit: number): number {
    const oldestThatMatters = times[times.length - limit] ?? times[0] ?? 0;
    return oldestThatMatters + this.limits.windowMs;
  }

  private async dropLatest(t: Transaction, hash: string): Promise<void> {
    const rows = await select<{ id: unknown }>(
      this.db.sequelize,
      'SELECT MAX(id) AS id FROM registration_login_attempts WHERE key_hash = :hash',
      { hash },
      t,
    );
    const id = rows[0]?.id;
    if (id === null || id === undefined) return;
    await execCount(this.db.sequelize, t, 'DELETE FROM registration_login_attempts WHERE id = :id', {
      id: toInt(id),
    });
  }
}
