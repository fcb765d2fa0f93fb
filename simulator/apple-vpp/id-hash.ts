import { createHash } from 'node:crypto';

/**
 * The simulated `idHash` of an Apple ID: SHA-256 (hex) of the trimmed, lower-cased Apple ID. Stable, so
 * the same Apple ID accepting invitations of several users or locations gives the same hash, and a
 * simulated device signed in with that Apple ID can report the same value.
 */
export function appleIdHash(appleId: string): string {
  return createHash('sha256').update(appleId.trim().toLowerCase(), 'utf8').digest('hex');
}
