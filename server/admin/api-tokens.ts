import { createHash, randomBytes } from 'node:crypto';

/**
 * Admin API tokens made through `/api/v1/api-tokens`. A token is shown once, when made; only its
 * SHA-256 is stored. A token with a `siteId` is limited to that site (see `site-scope.ts`).
 */
export interface ApiToken {
  id: string;
  name: string;
  siteId: string | null;
  expiresAt: Date | null;
  createdAt: Date;
}

export interface ApiTokenPage {
  items: ApiToken[];
  nextCursor: string | null;
}

export interface ApiTokenStore {
  /** Unknown `siteId` → `UnknownIdsError` (`400 unknown_ids`). */
  create(
    input: { name: string; siteId: string | null; expiresAt: Date | null; tokenHash: string },
    now: Date,
  ): Promise<ApiToken>;
  get(id: string): Promise<ApiToken | null>;
  findByHash(tokenHash: string): Promise<ApiToken | null>;
  list(opts: { limit: number; cursor: string | null; q: string | null }): Promise<ApiTokenPage>;
  delete(id: string): Promise<boolean>;
}

/** Made tokens carry a recognisable prefix (secret scanners, logs redaction) and 256 random bits. */
export const API_TOKEN_PREFIX = 'mdmat_';

export function newApiTokenSecret(): string {
  return `${API_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

export function hashApiToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}
