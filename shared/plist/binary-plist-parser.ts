import { PlistError } from './plist-error.ts';
import type { PlistDict, PlistLimits, PlistValue } from './plist-value.ts';
import { hasInvalidXmlChar, isEncodableDate } from './scalars.ts';

/*
 * A parser for binary property lists (`bplist00`). Objects are shared by reference, so a few
 * hundred bytes could describe an exponentially large tree (the binary form of "billion laughs"),
 * or a container holding itself. Writers share only scalars (equal strings, numbers), so a
 * container reached twice is refused, which keeps the work linear in the file's size; shared
 * scalars are charged at every use against a budget of `maxBytes` (about what the same tree would
 * take as XML), and nesting is bounded by `maxDepth`. Every offset and length is checked against
 * the file before it is read.
 */

const MAGIC = 'bplist00';
const TRAILER_SIZE = 32;
/** Seconds between the Unix epoch and Apple's reference date, 2001-01-01T00:00:00Z. */
const APPLE_EPOCH_SECONDS = 978307200;
/** What one object costs against the budget, before its content: about its smallest XML form. */
const OBJECT_COST = 8;

function malformed(message: string): PlistError {
  return new PlistError('malformed', `binary plist: ${message}`);
}

/** True when the bytes start with the binary plist magic (`bplist00`). */
export function hasBinaryPlistMagic(bytes: Uint8Array): boolean {
  if (bytes.byteLength < MAGIC.length) return false;
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC.charCodeAt(i)) return false;
  }
  return true;
}

export function parseBinaryPlist(bytes: Uint8Array, limits: PlistLimits): PlistValue {
  return new BinaryPlistReader(bytes, limits).read();
}

class BinaryPlistReader {
  private readonly view: DataView;
  /** Objects and the offset table live before the trailer. */
  private readonly end: number;
  private offsetSize = 0;
  private refSize = 0;
  private objectCount = 0;
  private tableOffset = 0;
  private budget: number;
  private readonly strings = new Map<number, string>();
  /** Containers already read: writers share only scalars, so a second visit means a crafted file. */
  private readonly containers = new Set<number>();

  constructor(
    private readonly bytes: Uint8Array,
    private readonly limits: PlistLimits,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.end = bytes.byteLength - TRAILER_SIZE;
    this.budget = limits.maxBytes;
  }

  read(): PlistValue {
    if (!hasBinaryPlistMagic(this.bytes)) throw malformed('bad magic');
    if (this.end < MAGIC.length + 2) throw malformed('too short');
    const t = this.end;
    this.offsetSize = this.view.getUint8(t + 6);
    this.refSize = this.view.getUint8(t + 7);
    this.objectCount = this.uint(t + 8, 8);
    const top = this.uint(t + 16, 8);
    this.tableOffset = this.uint(t + 24, 8);
    if (this.offsetSize < 1 || this.offsetSize > 8 || this.refSize < 1 || this.refSize > 8) {
      throw malformed('bad integer sizes in trailer');
    }
    if (this.objectCount < 1 || top >= this.objectCount) throw malformed('bad object count');
    if (this.tableOffset < MAGIC.length || this.tableOffset + this.objectCount * this.offsetSize > t) {
      throw malformed('offset table outside the file');
    }
    return this.object(top, 0);
  }

  /** Big-endian unsigned integer of 1 to 8 bytes; the caller has checked the bounds. */
  private uint(offset: number, size: number): number {
    let value = 0;
    for (let i = 0; i < size; i++) value = value * 256 + this.view.getUint8(offset + i);
    return value;
  }

  private need(offset: number, length: number): void {
    if (offset + length > this.end) throw malformed('object runs past the end of the file');
  }

  private spend(cost: number): void {
    this.budget -= cost;
    if (this.budget < 0) {
      throw new PlistError('too_large', `binary plist expands beyond ${this.limits.maxBytes} bytes`);
    }
  }

  private offsetOf(ref: number): number {
    if (ref >= this.objectCount) throw malformed('object reference out of range');
    const offset = this.uint(this.tableOffset + ref * this.offsetSize, this.offsetSize);
    if (offset < MAGIC.length || offset >= this.end) throw malformed('object offset out of range');
    return offset;
  }

  /** Start and element count of a sized object (data, strings, containers) whose marker is at `offset`. */
  private sized(offset: number): { start: number; count: number } {
    const info = this.view.getUint8(offset) & 0x0f;
    if (info !== 0x0f) return { start: offset + 1, count: info };
    this.need(offset + 1, 1);
    const marker = this.view.getUint8(offset + 1);
    const size = 1 << (marker & 0x0f);
    if (marker >> 4 !== 0x1 || size > 8) throw malformed('bad length marker');
    this.need(offset + 2, size);
    return { start: offset + 2 + size, count: this.uint(offset + 2, size) };
  }

  private refAt(start: number, index: number): number {
    return this.uint(start + index * this.refSize, this.refSize);
  }

  private object(ref: number, depth: number): PlistValue {
    this.spend(OBJECT_COST);
    const offset = this.offsetOf(ref);
    const marker = this.view.getUint8(offset);
    switch (marker >> 4) {
      case 0x0:
        if (marker === 0x08) return false;
        if (marker === 0x09) return true;
        throw malformed(`unsupported object 0x${marker.toString(16)} (null or fill)`);
      case 0x1:
        return this.integer(offset, marker & 0x0f);
      case 0x2: {
        const size = 1 << (marker & 0x0f);
        this.need(offset + 1, size);
        if (size === 4) return this.view.getFloat32(offset + 1);
        if (size === 8) return this.view.getFloat64(offset + 1);
        throw malformed(`real of ${size} bytes`);
      }
      case 0x3: {
        if (marker !== 0x33) throw malformed('bad date marker');
        this.need(offset + 1, 8);
        const date = new Date((this.view.getFloat64(offset + 1) + APPLE_EPOCH_SECONDS) * 1000);
        if (!isEncodableDate(date)) throw malformed('date out of range');
        return date;
      }
      case 0x4: {
        const { start, count } = this.sized(offset);
        this.need(start, count);
        this.spend(count);
        return new Uint8Array(this.bytes.subarray(start, start + count));
      }
      case 0x5:
      case 0x6:
        return this.string(offset);
      case 0xa: {
        const { start, count } = this.sized(offset);
        this.enter(ref, depth);
        this.need(start, count * this.refSize);
        const array: PlistValue[] = [];
        for (let i = 0; i < count; i++) array.push(this.object(this.refAt(start, i), depth + 1));
        return array;
      }
      case 0xd: {
        const { start, count } = this.sized(offset);
        this.enter(ref, depth);
        this.need(start, 2 * count * this.refSize);
        const dict: PlistDict = {};
        for (let i = 0; i < count; i++) {
          const key = this.key(this.refAt(start, i));
          dict[key] = this.object(this.refAt(start, count + i), depth + 1);
        }
        return dict;
      }
      default:
        throw malformed(`unsupported object type 0x${(marker >> 4).toString(16)}`);
    }
  }

  private enter(ref: number, depth: number): void {
    if (depth + 1 > this.limits.maxDepth) {
      throw new PlistError('too_deep', `containers nested deeper than ${this.limits.maxDepth}`);
    }
    if (this.containers.has(ref)) throw malformed('a container is referenced twice (or holds itself)');
    this.containers.add(ref);
  }

  private integer(offset: number, info: number): number {
    if (info > 4) throw malformed('integer wider than 16 bytes');
    const size = 1 << info;
    this.need(offset + 1, size);
    // 1, 2 and 4 byte integers are unsigned, 8 byte ones signed, 16 byte ones signed 128-bit.
    if (size <= 4) return this.uint(offset + 1, size);
    if (size === 8) return Number(this.view.getBigInt64(offset + 1));
    const high = this.view.getBigInt64(offset + 1);
    const low = this.view.getBigUint64(offset + 9);
    return Number((high << 64n) + low);
  }

  private string(offset: number): string {
    const { start, count } = this.sized(offset);
    const utf16 = this.view.getUint8(offset) >> 4 === 0x6;
    const length = utf16 ? count * 2 : count;
    this.need(start, length);
    this.spend(count);
    // Writers share equal strings (dict keys above all): decode each once.
    const cached = this.strings.get(offset);
    if (cached !== undefined) return cached;
    const raw = this.bytes.subarray(start, start + length);
    const text = utf16
      ? Buffer.from(raw).swap16().toString('utf16le') // a swapped copy: Buffer decodes only little-endian
      : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1');
    // Refused here as in XML, so that whatever decodes can be encoded again.
    if (hasInvalidXmlChar(text)) throw malformed('string holds a character XML cannot carry');
    this.strings.set(offset, text);
    return text;
  }

  private key(ref: number): string {
    this.spend(OBJECT_COST);
    const offset = this.offsetOf(ref);
    const type = this.view.getUint8(offset) >> 4;
    if (type !== 0x5 && type !== 0x6) throw malformed('dictionary key is not a string');
    const key = this.string(offset);
    if (key === '__proto__') throw malformed('the key __proto__ is refused');
    return key;
  }
}
