/*
 * Writes binary plists object by object, so tests can describe hostile ones (shared references,
 * cycles, deep chains, odd object types) that no ordinary encoder would produce.
 */

export type RawObject =
  | { array: number[] }
  | { dict: [key: number, value: number][] }
  | { ascii: string }
  | { int: number }
  | { bytes: number[] };

function sizedMarker(type: number, count: number): number[] {
  if (count < 15) return [(type << 4) | count];
  return [
    (type << 4) | 0x0f,
    0x12,
    (count >>> 24) & 0xff,
    (count >>> 16) & 0xff,
    (count >>> 8) & 0xff,
    count & 0xff,
  ];
}

function bigEndian(value: number, size: number): number[] {
  const out: number[] = [];
  for (let i = size - 1; i >= 0; i--) out.push(Math.floor(value / 256 ** i) % 256);
  return out;
}

/** A `bplist00` file holding `objects`, with object 0 (or `top`) as its root. */
export function buildRawBinaryPlist(objects: RawObject[], top = 0): Uint8Array {
  const refSize = objects.length < 256 ? 1 : objects.length < 65536 ? 2 : 4;
  const body: number[] = [...'bplist00'].map((c) => c.charCodeAt(0));
  const offsets: number[] = [];
  for (const obj of objects) {
    offsets.push(body.length);
    if ('array' in obj) {
      body.push(...sizedMarker(0xa, obj.array.length));
      for (const ref of obj.array) body.push(...bigEndian(ref, refSize));
    } else if ('dict' in obj) {
      body.push(...sizedMarker(0xd, obj.dict.length));
      for (const [key] of obj.dict) body.push(...bigEndian(key, refSize));
      for (const [, value] of obj.dict) body.push(...bigEndian(value, refSize));
    } else if ('ascii' in obj) {
      body.push(...sizedMarker(0x5, obj.ascii.length), ...[...obj.ascii].map((c) => c.charCodeAt(0)));
    } else if ('int' in obj) {
      body.push(0x12, ...bigEndian(obj.int, 4));
    } else {
      body.push(...obj.bytes);
    }
  }
  const tableOffset = body.length;
  const offsetSize = tableOffset < 256 ? 1 : tableOffset < 65536 ? 2 : 4;
  for (const offset of offsets) body.push(...bigEndian(offset, offsetSize));
  body.push(0, 0, 0, 0, 0, 0, offsetSize, refSize);
  body.push(...bigEndian(objects.length, 8), ...bigEndian(top, 8), ...bigEndian(tableOffset, 8));
  return Uint8Array.from(body);
}
