/* Conversions of plist scalars to and from their XML text, shared by the decoders and the encoder. */

const ISO_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64_SPACE = /[ \t\r\n]+/g;
/** Characters XML 1.0 does not allow in a document, not even as character references. */
const INVALID_XML_CHAR = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;

export function hasInvalidXmlChar(text: string): boolean {
  return INVALID_XML_CHAR.test(text);
}

/** `2024-05-06T07:08:09Z` (what Apple writes); fractions and offsets are accepted too. */
export function parseIsoDate(text: string): Date | undefined {
  if (!ISO_DATE.test(text)) return undefined;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** A plist date has a four-digit year (what the XML form can carry). */
export function isEncodableDate(date: Date): boolean {
  const year = date.getUTCFullYear();
  return !Number.isNaN(year) && year >= 0 && year <= 9999;
}

/** ISO 8601 at second precision, as Apple writes it. */
export function formatDate(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Base64 with any XML whitespace in it (Apple wraps lines); `undefined` when it is not base64. */
export function fromBase64(text: string): Uint8Array | undefined {
  const compact = text.replace(BASE64_SPACE, '');
  if (!BASE64.test(compact) || compact.length % 4 === 1) return undefined;
  // Copy out of Buffer's shared pool: callers get a plain Uint8Array that owns its memory.
  return new Uint8Array(Buffer.from(compact, 'base64'));
}

export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}
