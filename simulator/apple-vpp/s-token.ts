/**
 * Apple's content token (sToken): base64 of the JSON `{"token","expDate","orgName"}`, and Apple's
 * date format (`2030-11-08T22:33:22+0000`, always UTC).
 */
import { z } from 'zod';

export interface STokenContent {
  token: string;
  expDate: string;
  orgName: string;
}

const sTokenJson = z.object({
  token: z.string().min(1).max(1024),
  expDate: z.string().min(1).max(64),
  orgName: z.string().max(1024),
});

export function encodeSToken(content: STokenContent): string {
  const json = JSON.stringify({ token: content.token, expDate: content.expDate, orgName: content.orgName });
  return Buffer.from(json, 'utf8').toString('base64');
}

/** The token's content, or null when it is not base64 of the expected JSON. */
export function decodeSToken(sToken: string): STokenContent | null {
  if (sToken.length === 0 || sToken.length > 8192 || !/^[A-Za-z0-9+/=\s]+$/.test(sToken)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(sToken, 'base64').toString('utf8'));
  } catch {
    return null;
  }
  const r = sTokenJson.safeParse(parsed);
  return r.success ? r.data : null;
}

/** `2030-11-08T22:33:22+0000` */
export function appleDate(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, '+0000');
}

/** Parses Apple's format and any ISO-8601 date; NaN when unparsable. */
export function parseAppleDate(value: string): number {
  const normalized = value.replace(/([+-]\d{2})(\d{2})$/, '$1:$2');
  return Date.parse(normalized);
}
