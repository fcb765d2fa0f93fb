import { createCipheriv, createDecipheriv, createHmac, randomBytes, scryptSync } from 'node:crypto';

const VERSION = 'v1';
const TAG_BYTES = 16;

/** The fixed salt of the derivation of a key from a `MDM_SECRET_KEY` that is not 64 hex characters. */
export const SECRET_KEY_SALT = 'vpp-mdm MDM_SECRET_KEY v1';

/**
 * The 32-byte key for a secret as configured (`MDM_SECRET_KEY` or `<data dir>/secret.key`): exactly 64
 * hex characters are the key itself (what the server generates; data sealed under it stays readable);
 * any other non-empty string is a passphrase, stretched with scrypt (N=16384, r=8, p=1) and the fixed
 * salt `SECRET_KEY_SALT`, so the same string gives the same key on every instance.
 */
export function secretKeyFrom(secret: string): Buffer {
  if (secret === '') throw new Error('secret key must not be empty');
  if (/^[0-9a-fA-F]{64}$/.test(secret)) return Buffer.from(secret, 'hex');
  return scryptSync(Buffer.from(secret, 'utf8'), SECRET_KEY_SALT, 32, { N: 16384, r: 8, p: 1 });
}

/**
 * Encrypts secrets kept in the database (service tokens, push certificate keys) with AES-256-GCM under
 * `MDM_SECRET_KEY`. Output: `v1.<iv>.<tag>.<ciphertext>` in base64url; the associated data binds a
 * value to its purpose (e.g. `location:<id>`), so a ciphertext cannot be moved to another row.
 */
export class SecretBox {
  private readonly key: Buffer;

  /** `key`: the 32-byte key, or it as 64 hex characters. A configured secret goes through `fromSecret`. */
  constructor(key: string | Buffer) {
    const bytes = typeof key === 'string' ? Buffer.from(key, 'hex') : Buffer.from(key);
    if (bytes.length !== 32) throw new Error('secret key must be 32 bytes (64 hex characters)');
    this.key = bytes;
  }

  /** A box for a configured secret (see `secretKeyFrom`: 64 hex characters, or a passphrase). */
  static fromSecret(secret: string): SecretBox {
    return new SecretBox(secretKeyFrom(secret));
  }

  seal(plaintext: string, associatedData: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(associatedData, 'utf8'));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [
      VERSION,
      iv.toString('base64url'),
      cipher.getAuthTag().toString('base64url'),
      ct.toString('base64url'),
    ].join('.');
  }

  /**
   * A stable identifier derived from the key for a purpose (HMAC-SHA-256, hex, 32 characters): the same
   * on every instance that shares the key, e.g. this server's `mdmInfo.id` at Apple.
   */
  deriveId(purpose: string): string {
    return createHmac('sha256', this.key).update(`derive:${purpose}`, 'utf8').digest('hex').slice(0, 32);
  }

  open(sealed: string, associatedData: string): string {
    const [version, iv, tag, ct] = sealed.split('.');
    if (version !== VERSION || !iv || !tag || ct === undefined) throw new Error('not a sealed secret');
    const tagBytes = Buffer.from(tag, 'base64url');
    // A full 16-byte tag only: GCM would otherwise accept a truncated (weaker) tag.
    if (tagBytes.length !== TAG_BYTES) throw new Error('not a sealed secret');
    const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(Buffer.from(associatedData, 'utf8'));
    decipher.setAuthTag(tagBytes);
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
  }
}
