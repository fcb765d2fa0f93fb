import { hasBinaryPlistMagic, parseBinaryPlist } from './binary-plist-parser.ts';
import { PlistError } from './plist-error.ts';
import { DEFAULT_PLIST_LIMITS, isPlistDict } from './plist-value.ts';
import type { PlistDict, PlistLimits, PlistValue } from './plist-value.ts';
import { parseXmlPlist } from './xml-plist-parser.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes an XML (UTF-8) or binary (`bplist00`) property list.
 *
 * Order of checks: size in bytes first; then one forward pass that refuses any DOCTYPE other than
 * Apple's and any other markup declaration (`forbidden_dtd`: no entity is ever expanded), refuses
 * nesting deeper than `maxDepth` before opening the container (`too_deep`), and builds the value.
 * Anything that is not a well-formed plist is `malformed`. Throws only `PlistError`.
 */
export function decodePlist(body: Uint8Array | string, limits?: Partial<PlistLimits>): PlistValue {
  const resolved: PlistLimits = {
    maxBytes: limits?.maxBytes ?? DEFAULT_PLIST_LIMITS.maxBytes,
    maxDepth: limits?.maxDepth ?? DEFAULT_PLIST_LIMITS.maxDepth,
  };
  try {
    if (typeof body === 'string') {
      if (utf8LengthExceeds(body, resolved.maxBytes)) throw tooLarge(resolved.maxBytes);
      return parseXmlPlist(body, resolved.maxDepth);
    }
    if (body.byteLength > resolved.maxBytes) throw tooLarge(resolved.maxBytes);
    if (hasBinaryPlistMagic(body)) return parseBinaryPlist(body, resolved);
    return parseXmlPlist(utf8.decode(body), resolved.maxDepth);
  } catch (err) {
    if (err instanceof PlistError) throw err;
    // Invalid UTF-8 (TypeError), or anything unforeseen: the body is not a plist we can read.
    const detail = err instanceof Error ? err.message : String(err);
    throw new PlistError('malformed', `not a property list: ${detail}`, { cause: err });
  }
}

/** `decodePlist`, then requires the root to be a `dict` (`not_dict` otherwise). */
export function decodePlistDict(body: Uint8Array | string, limits?: Partial<PlistLimits>): PlistDict {
  const value = decodePlist(body, limits);
  if (!isPlistDict(value)) {
    throw new PlistError('not_dict', `the root of the property list is ${describe(value)}, not a dict`);
  }
  return value;
}

function tooLarge(maxBytes: number): PlistError {
  return new PlistError('too_large', `body exceeds ${maxBytes} bytes`);
}

/** Whether a string takes more than `maxBytes` in UTF-8, counted only when its length cannot decide. */
function utf8LengthExceeds(text: string, maxBytes: number): boolean {
  // A UTF-16 code unit takes 1 to 3 UTF-8 bytes.
  if (text.length > maxBytes) return true;
  if (text.length * 3 <= maxBytes) return false;
  return Buffer.byteLength(text, 'utf8') > maxBytes;
}

function describe(value: PlistValue): string {
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return 'a date';
  if (value instanceof Uint8Array) return 'data';
  return `a ${typeof value}`;
}
