import { PlistError } from './plist-error.ts';
import { isPlistDict } from './plist-value.ts';
import type { PlistValue } from './plist-value.ts';
import { formatDate, hasInvalidXmlChar, isEncodableDate, toBase64 } from './scalars.ts';

const HEADER =
  '<?xml version="1.0" encoding="UTF-8"?>\n' +
  '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n' +
  '<plist version="1.0">\n';
const FOOTER = '</plist>\n';
/** Far beyond any real plist; stops a cyclic object before the call stack does. */
const MAX_ENCODE_DEPTH = 512;
const ESCAPES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '\r': '&#13;' };
const TO_ESCAPE = /[&<>\r]/g;

/**
 * Encodes a value as an XML property list with Apple's header, tab-indented like Apple's own.
 * Dict entries whose value is `undefined` are left out. Integral numbers become `<integer>`, others
 * `<real>`; dates are written to the second. Throws `PlistError` (`malformed`) for what XML cannot
 * carry (a control character in a string, an invalid date, a non-plist value) and (`too_deep`) for
 * a cyclic value.
 */
export function encodePlist(value: PlistValue): string {
  return HEADER + encodeValue(value, '', 0) + FOOTER;
}

function encodeValue(value: PlistValue, indent: string, depth: number): string {
  switch (typeof value) {
    case 'string':
      return `${indent}<string>${escapeText(value)}</string>\n`;
    case 'boolean':
      return value ? `${indent}<true/>\n` : `${indent}<false/>\n`;
    case 'number':
      return `${indent}${encodeNumber(value)}\n`;
    default:
      break;
  }
  if (value instanceof Uint8Array) return `${indent}<data>${toBase64(value)}</data>\n`;
  if (value instanceof Date) {
    if (!isEncodableDate(value))
      throw new PlistError('malformed', 'cannot encode an invalid or out-of-range date');
    return `${indent}<date>${formatDate(value)}</date>\n`;
  }
  if (depth >= MAX_ENCODE_DEPTH) throw new PlistError('too_deep', 'value nested too deeply (cyclic?)');
  const inner = `${indent}\t`;
  if (Array.isArray(value)) {
    if (value.length === 0) return `${indent}<array/>\n`;
    let out = `${indent}<array>\n`;
    for (const item of value) out += encodeValue(item, inner, depth + 1);
    return `${out}${indent}</array>\n`;
  }
  if (isPlistDict(value)) {
    let out = '';
    for (const key of Object.keys(value)) {
      const item = value[key];
      if (item === undefined) continue;
      out += `${inner}<key>${escapeText(key)}</key>\n${encodeValue(item, inner, depth + 1)}`;
    }
    return out === '' ? `${indent}<dict/>\n` : `${indent}<dict>\n${out}${indent}</dict>\n`;
  }
  throw new PlistError(
    'malformed',
    `cannot encode a value of type ${value === null ? 'null' : typeof value}`,
  );
}

function encodeNumber(n: number): string {
  if (Number.isInteger(n)) {
    return `<integer>${Number.isSafeInteger(n) ? String(n) : BigInt(n).toString()}</integer>`;
  }
  if (Number.isNaN(n)) return '<real>nan</real>';
  if (n === Infinity) return '<real>+infinity</real>';
  if (n === -Infinity) return '<real>-infinity</real>';
  return `<real>${String(n)}</real>`;
}

function escapeText(text: string): string {
  if (hasInvalidXmlChar(text)) throw new PlistError('malformed', 'cannot encode a control character in XML');
  return text.replace(TO_ESCAPE, (ch) => ESCAPES[ch] ?? ch);
}
