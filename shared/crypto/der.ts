/**
 * A small DER/BER reader and DER writer over Buffers.
 *
 * The reader returns offsets into the original buffer, so callers can take the exact bytes of an element
 * (signed attributes, certificates, names) without re-encoding them. It accepts BER indefinite lengths
 * (some CMS encoders stream), limits nesting depth and never reads past the given bounds.
 */

export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

export const TagClass = { universal: 0, application: 1, context: 2, private: 3 } as const;

export const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  sequence: 0x10,
  set: 0x11,
  printableString: 0x13,
  t61String: 0x14,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  universalString: 0x1c,
  bmpString: 0x1e,
} as const;

export interface Tlv {
  /** tag class (TagClass) */
  readonly cls: number;
  readonly constructed: boolean;
  /** tag number within its class */
  readonly number: number;
  /** offset of the identifier octet */
  readonly start: number;
  readonly contentStart: number;
  /** offset just past the content (before the end-of-contents octets of an indefinite length) */
  readonly contentEnd: number;
  /** offset just past the whole element */
  readonly end: number;
}

const MAX_DEPTH = 32;

/** Reads one element starting at `offset`, which must end at or before `limit`. */
export function readTlv(buf: Buffer, offset: number, limit: number = buf.length, depth = 0): Tlv {
  if (depth > MAX_DEPTH) throw new DerError('nesting too deep');
  let pos = offset;
  if (pos >= limit) throw new DerError('unexpected end of data');
  const id = buf[pos++] as number;
  const cls = id >> 6;
  const constructed = (id & 0x20) !== 0;
  let number = id & 0x1f;
  if (number === 0x1f) {
    number = 0;
    for (let i = 0; ; i++) {
      if (pos >= limit || i >= 4) throw new DerError('bad tag');
      const b = buf[pos++] as number;
      number = number * 128 + (b & 0x7f);
      if ((b & 0x80) === 0) break;
    }
  }
  if (pos >= limit) throw new DerError('unexpected end of data');
  const first = buf[pos++] as number;
  if (first === 0x80) {
    if (!constructed) throw new DerError('indefinite length on a primitive element');
    const contentStart = pos;
    for (;;) {
      if (pos + 2 > limit) throw new DerError('missing end-of-contents');
      if (buf[pos] === 0 && buf[pos + 1] === 0) break;
      pos = readTlv(buf, pos, limit, depth + 1).end;
    }
    return { cls, constructed, number, start: offset, contentStart, contentEnd: pos, end: pos + 2 };
  }
  let length: number;
  if (first < 0x80) {
    length = first;
  } else {
    const n = first & 0x7f;
    if (n > 4 || n === 0x7f) throw new DerError('length too large');
    if (pos + n > limit) throw new DerError('unexpected end of data');
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + (buf[pos++] as number);
  }
  const end = pos + length;
  if (end > limit) throw new DerError('element longer than its container');
  return { cls, constructed, number, start: offset, contentStart: pos, contentEnd: end, end };
}

/** Reads a whole buffer as one element (trailing bytes are an error). */
export function readRoot(buf: Buffer): Tlv {
  const tlv = readTlv(buf, 0, buf.length);
  if (tlv.end !== buf.length) throw new DerError('trailing data');
  return tlv;
}

/** The elements inside a constructed element. */
export function childrenOf(buf: Buffer, parent: Tlv, depth = 1): Tlv[] {
  if (!parent.constructed) throw new DerError('not a constructed element');
  const out: Tlv[] = [];
  let pos = parent.contentStart;
  while (pos < parent.contentEnd) {
    const child = readTlv(buf, pos, parent.contentEnd, depth);
    out.push(child);
    pos = child.end;
  }
  return out;
}

export function isUniversal(tlv: Tlv | undefined, number: number): boolean {
  return tlv !== undefined && tlv.cls === TagClass.universal && tlv.number === number;
}

export function isContext(tlv: Tlv | undefined, number: number): boolean {
  return tlv !== undefined && tlv.cls === TagClass.context && tlv.number === number;
}

/** Throws unless `tlv` is the constructed context-specific element [number]. */
export function expectContext(tlv: Tlv | undefined, number: number, what: string): Tlv {
  if (tlv === undefined || !isContext(tlv, number) || !tlv.constructed)
    throw new DerError(`expected ${what}`);
  return tlv;
}

/** Throws unless `tlv` is the universal element `number`. */
export function expectUniversal(tlv: Tlv | undefined, number: number, what: string): Tlv {
  if (tlv === undefined || !isUniversal(tlv, number)) throw new DerError(`expected ${what}`);
  return tlv;
}

export function contentOf(buf: Buffer, tlv: Tlv): Buffer {
  return buf.subarray(tlv.contentStart, tlv.contentEnd);
}

export function bytesOf(buf: Buffer, tlv: Tlv): Buffer {
  return buf.subarray(tlv.start, tlv.end);
}

/** The octets of an OCTET STRING, joining the segments of a BER constructed one. */
export function octetStringValue(buf: Buffer, tlv: Tlv, depth = 0): Buffer {
  if (!tlv.constructed) return contentOf(buf, tlv);
  if (depth > MAX_DEPTH) throw new DerError('nesting too deep');
  return Buffer.concat(
    childrenOf(buf, tlv).map((c) => {
      if (!isUniversal(c, Tag.octetString)) throw new DerError('bad constructed OCTET STRING');
      return octetStringValue(buf, c, depth + 1);
    }),
  );
}

export function decodeOid(content: Buffer): string {
  if (content.length === 0) throw new DerError('empty OID');
  const parts: number[] = [];
  let value = 0;
  let started = false;
  for (const b of content) {
    if (!started && b === 0x80) throw new DerError('bad OID');
    started = (b & 0x80) !== 0;
    value = value * 128 + (b & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OID arc too large');
    if (!started) {
      if (parts.length === 0) {
        const first = value < 80 ? Math.floor(value / 40) : 2;
        parts.push(first, value - first * 40);
      } else {
        parts.push(value);
      }
      value = 0;
    }
  }
  if (started) throw new DerError('truncated OID');
  return parts.join('.');
}

export function oidOf(buf: Buffer, tlv: Tlv | undefined): string {
  return decodeOid(contentOf(buf, expectUniversal(tlv, Tag.oid, 'OBJECT IDENTIFIER')));
}

/** Decodes a DirectoryString-like value to text (UTF8, Printable, IA5, T61 as latin1, BMP, Universal). */
export function stringValue(buf: Buffer, tlv: Tlv): string {
  const content = contentOf(buf, tlv);
  if (tlv.cls !== TagClass.universal) throw new DerError('not a string');
  switch (tlv.number) {
    case Tag.utf8String:
      return content.toString('utf8');
    case Tag.printableString:
    case Tag.ia5String:
      return content.toString('ascii');
    case Tag.t61String:
      return content.toString('latin1');
    case Tag.bmpString: {
      const swapped = Buffer.from(content);
      if (swapped.length % 2 !== 0) throw new DerError('bad BMPString');
      return swapped.swap16().toString('utf16le');
    }
    case Tag.universalString: {
      if (content.length % 4 !== 0) throw new DerError('bad UniversalString');
      let s = '';
      for (let i = 0; i < content.length; i += 4) s += String.fromCodePoint(content.readUInt32BE(i));
      return s;
    }
    default:
      throw new DerError('not a string');
  }
}

/** Decodes UTCTime or GeneralizedTime (Z form, as RFC 5280 requires). */
export function timeValue(buf: Buffer, tlv: Tlv): Date {
  const s = contentOf(buf, tlv).toString('ascii');
  let m: RegExpExecArray | null;
  let year: number;
  if (isUniversal(tlv, Tag.utcTime)) {
    m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?Z$/.exec(s);
    if (!m) throw new DerError('bad UTCTime');
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (isUniversal(tlv, Tag.generalizedTime)) {
    m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?(?:\.\d+)?Z$/.exec(s);
    if (!m) throw new DerError('bad GeneralizedTime');
    year = Number(m[1]);
  } else {
    throw new DerError('not a time');
  }
  const ms = Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6] ?? '0'));
  return new Date(ms);
}

// ---------------------------------------------------------------------------------------------------
// Writer

function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One element with a single-octet identifier (tag numbers up to 30). */
export function tlv(identifier: number, ...content: Uint8Array[]): Buffer {
  const length = content.reduce((n, c) => n + c.length, 0);
  return Buffer.concat([Buffer.from([identifier]), encodeLength(length), ...content]);
}

export const der = {
  sequence: (...items: Uint8Array[]): Buffer => tlv(0x30, ...items),
  set: (...items: Uint8Array[]): Buffer => tlv(0x31, ...items),
  /** SET OF, its elements sorted as DER requires */
  setOf: (...items: Uint8Array[]): Buffer =>
    tlv(0x31, ...[...items].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))),
  octetString: (value: Uint8Array): Buffer => tlv(0x04, value),
  null: (): Buffer => Buffer.from([0x05, 0x00]),
  /** INTEGER from unsigned big-endian magnitude bytes */
  unsignedInteger: (magnitude: Uint8Array): Buffer => {
    let i = 0;
    while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
    const trimmed = Buffer.from(magnitude.subarray(i));
    const first = trimmed[0] ?? 0;
    return tlv(0x02, first & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
  },
  smallInteger: (n: number): Buffer => {
    if (!Number.isInteger(n) || n < 0 || n > 127) throw new RangeError('smallInteger: 0..127');
    return Buffer.from([0x02, 0x01, n]);
  },
  oid: (dotted: string): Buffer => tlv(0x06, encodeOid(dotted)),
  /** UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5280 / RFC 5652 rule) */
  time: (date: Date): Buffer => {
    const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
    const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
    const year = date.getUTCFullYear();
    if (year >= 1950 && year < 2050) return tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii'));
    return tlv(0x18, Buffer.from(`${digits}Z`, 'ascii'));
  },
  /** [n] EXPLICIT / constructed context-specific */
  explicit: (n: number, ...items: Uint8Array[]): Buffer => tlv(0xa0 | n, ...items),
};

export function encodeOid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((p) => {
    if (!/^\d+$/.test(p)) throw new RangeError(`bad OID ${dotted}`);
    return Number(p);
  });
  const [a, b, ...rest] = arcs;
  if (a === undefined || b === undefined || a > 2) throw new RangeError(`bad OID ${dotted}`);
  const out: number[] = [];
  for (const arc of [a * 40 + b, ...rest]) {
    const bytes = [arc & 0x7f];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) bytes.unshift((n & 0x7f) | 0x80);
    out.push(...bytes);
  }
  return Buffer.from(out);
}
