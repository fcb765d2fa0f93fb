import type { PlistDict, PlistValue } from '../../shared/plist/index.ts';

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** Command keys from the admin API (JSON) to plist values. `null` has no plist form: the caller rejects it first. */
export function jsonToPlist(value: Json, path: string): PlistValue {
  if (value === null) throw new TypeError(`${path}: null has no plist form`);
  if (Array.isArray(value)) return value.map((v, i) => jsonToPlist(v, `${path}[${i}]`));
  if (typeof value === 'object') {
    const out: PlistDict = {};
    for (const [k, v] of Object.entries(value)) out[k] = jsonToPlist(v, `${path}.${k}`);
    return out;
  }
  return value;
}

/** Device reports to JSON for the admin API: data becomes base64, dates ISO 8601. */
export function plistToJson(value: PlistValue): Json {
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  if (Array.isArray(value)) return value.map(plistToJson);
  if (typeof value === 'object') {
    const out: { [key: string]: Json } = {};
    for (const [k, v] of Object.entries(value)) out[k] = plistToJson(v);
    return out;
  }
  return value;
}

/** The first `null` inside a JSON value, as a path, or null when there is none. */
export function findNull(value: Json, path: string): string | null {
  if (value === null) return path;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = findNull(value[i] as Json, `${path}[${i}]`);
      if (p) return p;
    }
  } else if (typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const p = findNull(v, `${path}.${k}`);
      if (p) return p;
    }
  }
  return null;
}
