import { expect } from 'chai';
import { buildBinary } from 'plist';
import { decodePlist, PlistError } from '../../../shared/plist/index.ts';
import type { PlistErrorCode, PlistLimits } from '../../../shared/plist/index.ts';
import { buildRawBinaryPlist } from './bplist-builder.ts';
import type { RawObject } from './bplist-builder.ts';

interface BadCase {
  name: string;
  body: string | Uint8Array;
  code: PlistErrorCode;
  limits?: Partial<PlistLimits>;
}

const HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n';
const APPLE_DOCTYPE =
  '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n';
const AUTH = '<dict><key>MessageType</key><string>Authenticate</string></dict>';

const BILLION_LAUGHS =
  HEADER +
  '<!DOCTYPE plist [\n' +
  ' <!ENTITY lol "lol">\n' +
  Array.from(
    { length: 9 },
    (_, i) => ` <!ENTITY lol${i + 1} "${`&lol${i === 0 ? '' : i};`.repeat(10)}">\n`,
  ).join('') +
  ']>\n<plist version="1.0"><string>&lol9;</string></plist>';

function deepXml(depth: number): string {
  return `<plist>${'<array>'.repeat(depth)}${'</array>'.repeat(depth)}</plist>`;
}

/** A chain of one-element arrays, `depth` long, in binary form. */
function deepBinary(depth: number): Uint8Array {
  const objects: RawObject[] = Array.from({ length: depth }, (_, i) => ({ array: [i + 1] }));
  objects.push({ int: 1 });
  return buildRawBinaryPlist(objects);
}

/** Each level an array holding the next level twice: 2^levels leaves from a few hundred bytes. */
function binaryLaughs(levels: number): Uint8Array {
  const objects: RawObject[] = Array.from({ length: levels }, (_, i) => ({ array: [i + 1, i + 1] }));
  objects.push({ ascii: 'lol' });
  return buildRawBinaryPlist(objects);
}

function withTrailerByte(bytes: Uint8Array, fromEnd: number, value: number): Uint8Array {
  const copy = Uint8Array.from(bytes);
  copy[copy.length - fromEnd] = value;
  return copy;
}

const validBinary = buildBinary({ UDID: 'X', Status: 'Idle' });

const cases: BadCase[] = [
  // ---- not a plist at all ----
  { name: 'empty string', body: '', code: 'malformed' },
  { name: 'empty bytes', body: new Uint8Array(0), code: 'malformed' },
  { name: 'whitespace only', body: ' \n\t ', code: 'malformed' },
  { name: 'plain text', body: 'hello', code: 'malformed' },
  { name: 'JSON object', body: '{"MessageType":"Authenticate","UDID":"X"}', code: 'malformed' },
  { name: 'JSON array', body: '[1, 2]', code: 'malformed' },
  { name: 'OpenStep plist', body: '{ MessageType = Authenticate; }', code: 'malformed' },
  { name: 'HTML', body: '<html><body><p>hello</p></body></html>', code: 'malformed' },
  { name: 'HTML with its DOCTYPE', body: '<!DOCTYPE html><html><body></body></html>', code: 'forbidden_dtd' },
  {
    name: 'invalid UTF-8',
    body: Uint8Array.from([
      ...Buffer.from('<plist><string>'),
      0xff,
      0xfe,
      ...Buffer.from('</string></plist>'),
    ]),
    code: 'malformed',
  },
  { name: 'UTF-16 bytes', body: Buffer.from(`<plist>${AUTH}</plist>`, 'utf16le'), code: 'malformed' },

  // ---- truncated or ill-formed XML ----
  {
    name: 'truncated inside a string',
    body: `${HEADER}<plist><dict><key>a</key><string>b`,
    code: 'malformed',
  },
  {
    name: 'truncated after a value',
    body: `${HEADER}<plist><dict><key>a</key><string>b</string>`,
    code: 'malformed',
  },
  { name: 'truncated inside a tag', body: `${HEADER}<plist><dict><key`, code: 'malformed' },
  { name: 'truncated comment', body: `${HEADER}<plist><!-- no end`, code: 'malformed' },
  { name: 'unterminated CDATA', body: '<plist><string><![CDATA[abc</string></plist>', code: 'malformed' },
  {
    name: 'mismatched end tag',
    body: '<plist><dict><key>a</key><string>b</dict></string></plist>',
    code: 'malformed',
  },
  { name: 'bare ampersand', body: '<plist><string>a & b</string></plist>', code: 'malformed' },
  { name: 'bare less-than', body: '<plist><string>a < b</string></plist>', code: 'malformed' },
  { name: 'undeclared entity', body: '<plist><string>&nbsp;</string></plist>', code: 'malformed' },
  { name: 'reference to NUL', body: '<plist><string>&#0;</string></plist>', code: 'malformed' },
  { name: 'raw control character', body: '<plist><string>a\u0001b</string></plist>', code: 'malformed' },
  { name: 'unquoted attribute', body: '<plist version=1.0><true/></plist>', code: 'malformed' },
  { name: 'text after the root', body: '<plist><true/></plist>trailing', code: 'malformed' },
  { name: 'element after the root', body: '<plist><true/></plist><plist><true/></plist>', code: 'malformed' },
  { name: 'text before the root', body: 'x<plist><true/></plist>', code: 'malformed' },
  { name: 'CDATA outside a value', body: '<plist><dict><![CDATA[x]]></dict></plist>', code: 'malformed' },

  // ---- well-formed XML, not a plist ----
  { name: 'wrong root element', body: `${HEADER}${AUTH}`, code: 'malformed' },
  { name: 'empty <plist>', body: '<plist></plist>', code: 'malformed' },
  { name: 'self-closed <plist/>', body: '<plist/>', code: 'malformed' },
  {
    name: 'two values in <plist>',
    body: '<plist><string>a</string><string>b</string></plist>',
    code: 'malformed',
  },
  { name: 'key without value', body: '<plist><dict><key>a</key></dict></plist>', code: 'malformed' },
  { name: 'value without key', body: '<plist><dict><string>a</string></dict></plist>', code: 'malformed' },
  {
    name: 'two keys in a row',
    body: '<plist><dict><key>a</key><key>b</key><true/></dict></plist>',
    code: 'malformed',
  },
  { name: 'key outside a dict', body: '<plist><array><key>a</key></array></plist>', code: 'malformed' },
  {
    name: 'element inside a key',
    body: '<plist><dict><key><dict/></key><true/></dict></plist>',
    code: 'malformed',
  },
  {
    name: 'text inside a dict',
    body: '<plist><dict>text<key>a</key><true/></dict></plist>',
    code: 'malformed',
  },
  { name: 'unknown element', body: '<plist><dict><key>a</key><null/></dict></plist>', code: 'malformed' },
  {
    name: 'prototype key',
    body: '<plist><dict><key>__proto__</key><dict/></dict></plist>',
    code: 'malformed',
  },
  { name: 'integer that is not one', body: '<plist><integer>12abc</integer></plist>', code: 'malformed' },
  { name: 'empty integer', body: '<plist><integer/></plist>', code: 'malformed' },
  { name: 'real that is not one', body: '<plist><real>1.2.3</real></plist>', code: 'malformed' },
  { name: 'date that is not one', body: '<plist><date>yesterday</date></plist>', code: 'malformed' },
  { name: 'date out of range', body: '<plist><date>2024-13-45T99:00:00Z</date></plist>', code: 'malformed' },
  { name: 'data that is not base64', body: '<plist><data>!!!!</data></plist>', code: 'malformed' },
  { name: 'true with content', body: '<plist><true>no</true></plist>', code: 'malformed' },

  // ---- size ----
  {
    name: 'string body over maxBytes',
    body: `<plist><string>${'a'.repeat(200)}</string></plist>`,
    code: 'too_large',
    limits: { maxBytes: 100 },
  },
  {
    name: 'string body under maxBytes in characters but over it in UTF-8 bytes',
    body: `<plist><string>${'é'.repeat(60)}</string></plist>`,
    code: 'too_large',
    limits: { maxBytes: 100 },
  },
  {
    name: 'byte body over maxBytes',
    body: new Uint8Array(101),
    code: 'too_large',
    limits: { maxBytes: 100 },
  },
  {
    name: 'byte body over the default 10 MiB',
    body: Buffer.alloc(10 * 1024 * 1024 + 1, 0x20),
    code: 'too_large',
  },

  // ---- depth ----
  { name: 'XML nested 10,000 deep', body: deepXml(10_000), code: 'too_deep' },
  {
    name: 'XML nested 10,000 deep, unclosed',
    body: `<plist>${'<dict><key>k</key>'.repeat(10_000)}`,
    code: 'too_deep',
  },

  // ---- DTDs and entities ----
  { name: 'billion laughs', body: BILLION_LAUGHS, code: 'forbidden_dtd' },
  {
    name: 'internal subset after the Apple identifiers',
    body: `${HEADER}<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd" [ <!ENTITY x "y"> ]><plist><string>&x;</string></plist>`,
    code: 'forbidden_dtd',
  },
  {
    name: 'external entity (XXE)',
    body: `${HEADER}<!DOCTYPE plist [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]><plist><string>&xxe;</string></plist>`,
    code: 'forbidden_dtd',
  },
  {
    name: 'DOCTYPE with another system identifier',
    body: `${HEADER}<!DOCTYPE plist SYSTEM "http://attacker.example/plist.dtd"><plist><true/></plist>`,
    code: 'forbidden_dtd',
  },
  {
    name: 'DOCTYPE with another public identifier',
    body: `${HEADER}<!DOCTYPE plist PUBLIC "-//Apple Computer//DTD PLIST 1.0//EN" "http://example.com/x.dtd"><plist><true/></plist>`,
    code: 'forbidden_dtd',
  },
  {
    name: 'second DOCTYPE',
    body: `${APPLE_DOCTYPE}${APPLE_DOCTYPE}<plist><true/></plist>`,
    code: 'forbidden_dtd',
  },
  { name: 'DOCTYPE after the root', body: `<plist><true/></plist>${APPLE_DOCTYPE}`, code: 'forbidden_dtd' },
  {
    name: 'ENTITY declaration in the body',
    body: '<plist><dict><!ENTITY x "y"></dict></plist>',
    code: 'forbidden_dtd',
  },
  {
    name: 'ENTITY declaration in a string',
    body: '<plist><string><!ENTITY x "y"></string></plist>',
    code: 'forbidden_dtd',
  },
  { name: 'ELEMENT declaration', body: '<!ELEMENT plist ANY><plist><true/></plist>', code: 'forbidden_dtd' },

  // ---- binary ----
  { name: 'binary magic only', body: Buffer.from('bplist00'), code: 'malformed' },
  { name: 'binary truncated', body: validBinary.subarray(0, validBinary.length - 5), code: 'malformed' },
  { name: 'binary magic as a string', body: `bplist00${'\u0000'.repeat(40)}`, code: 'malformed' },
  { name: 'binary with a zero reference size', body: withTrailerByte(validBinary, 25, 0), code: 'malformed' },
  {
    name: 'binary with the root out of range',
    body: withTrailerByte(validBinary, 9, 200),
    code: 'malformed',
  },
  {
    name: 'binary with the offset table out of range',
    body: withTrailerByte(validBinary, 1, 250),
    code: 'malformed',
  },
  { name: 'binary reference out of range', body: buildRawBinaryPlist([{ array: [7] }]), code: 'malformed' },
  { name: 'binary null', body: buildRawBinaryPlist([{ bytes: [0x00] }]), code: 'malformed' },
  { name: 'binary UID', body: buildRawBinaryPlist([{ bytes: [0x80, 0x01] }]), code: 'malformed' },
  { name: 'binary set', body: buildRawBinaryPlist([{ bytes: [0xc0] }]), code: 'malformed' },
  {
    name: 'binary data longer than the file',
    body: buildRawBinaryPlist([{ bytes: [0x4f, 0x13, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff] }]),
    code: 'malformed',
  },
  {
    name: 'binary array longer than the file',
    body: buildRawBinaryPlist([{ bytes: [0xaf, 0x12, 0x7f, 0xff, 0xff, 0xff] }]),
    code: 'malformed',
  },
  {
    name: 'binary dict key that is not a string',
    body: buildRawBinaryPlist([{ dict: [[1, 1]] }, { int: 5 }]),
    code: 'malformed',
  },
  {
    name: 'binary prototype key',
    body: buildRawBinaryPlist([{ dict: [[1, 2]] }, { ascii: '__proto__' }, { dict: [] }]),
    code: 'malformed',
  },
  { name: 'binary control character', body: buildRawBinaryPlist([{ ascii: 'a\u0001' }]), code: 'malformed' },
  { name: 'binary container holding itself', body: buildRawBinaryPlist([{ array: [0] }]), code: 'malformed' },
  { name: 'binary nested 10,000 deep', body: deepBinary(10_000), code: 'too_deep' },
  { name: 'binary "billion laughs" (shared containers)', body: binaryLaughs(30), code: 'malformed' },
  {
    name: 'binary with a large string shared many times',
    body: buildRawBinaryPlist([{ array: Array.from({ length: 200 }, () => 1) }, { ascii: 'x'.repeat(1000) }]),
    code: 'too_large',
    limits: { maxBytes: 100_000 },
  },
  {
    name: 'binary with large data shared many times',
    body: buildRawBinaryPlist([
      { array: Array.from({ length: 200 }, () => 1) },
      { bytes: [0x4f, 0x11, 0x03, 0xe8, ...new Array<number>(1000).fill(7)] },
    ]),
    code: 'too_large',
    limits: { maxBytes: 100_000 },
  },
];

describe('decodePlist refuses bad input', () => {
  for (const { name, body, code, limits } of cases) {
    // No wall-clock budget (machines here are noisy): an expansion or a quadratic scan of these
    // bodies would run for minutes, so mocha's timeout is the guard.
    it(`${name} → ${code}`, function () {
      this.timeout(20_000);
      let caught: unknown;
      try {
        decodePlist(body, limits);
      } catch (err) {
        caught = err;
      }
      expect(caught, 'should throw').to.be.instanceOf(PlistError);
      expect((caught as PlistError).code).to.equal(code);
      expect((caught as PlistError).message)
        .to.be.a('string')
        .and.not.equal('');
    });
  }

  it('stays linear on long runs of markup that never completes', function () {
    this.timeout(30_000); // quadratic work on 2 MB bodies would take hours
    const bodies = [
      `<plist><dict${' '.repeat(2_000_000)}`,
      `<plist><string>${'&amp'.repeat(500_000)}</string></plist>`,
      `<plist version="${'x'.repeat(2_000_000)}`,
      `<plist><data>${'A'.repeat(2_000_000)}!</data></plist>`,
      `<plist>${'<!--'.repeat(500_000)}`,
    ];
    for (const body of bodies) {
      expect(() => decodePlist(body)).to.throw(PlistError);
    }
  });
});
