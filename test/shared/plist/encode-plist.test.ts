import { expect } from 'chai';
import { parse as referenceParse } from 'plist';
import { decodePlist, encodePlist, PlistError } from '../../../shared/plist/index.ts';
import type { PlistDict, PlistValue } from '../../../shared/plist/index.ts';

const HEADER =
  '<?xml version="1.0" encoding="UTF-8"?>\n' +
  '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n' +
  '<plist version="1.0">\n';

/** The body of the plist element, for short assertions. */
function inner(value: PlistValue): string {
  const xml = encodePlist(value);
  expect(xml.startsWith(HEADER)).to.equal(true);
  expect(xml.endsWith('</plist>\n')).to.equal(true);
  return xml.slice(HEADER.length, -'</plist>\n'.length);
}

describe('encodePlist', () => {
  it("writes Apple's header and tab-indented containers", () => {
    expect(
      encodePlist({ RequestType: 'DeviceInformation', Queries: ['UDID'], Empty: {}, None: [] }),
    ).to.equal(
      HEADER +
        '<dict>\n' +
        '\t<key>RequestType</key>\n' +
        '\t<string>DeviceInformation</string>\n' +
        '\t<key>Queries</key>\n' +
        '\t<array>\n' +
        '\t\t<string>UDID</string>\n' +
        '\t</array>\n' +
        '\t<key>Empty</key>\n' +
        '\t<dict/>\n' +
        '\t<key>None</key>\n' +
        '\t<array/>\n' +
        '</dict>\n' +
        '</plist>\n',
    );
  });

  it('escapes markup characters in strings and keys, and a CR so that it survives', () => {
    expect(inner({ 'a<&>b': 'x < y && z > w ]]> \r\n' })).to.equal(
      '<dict>\n\t<key>a&lt;&amp;&gt;b</key>\n\t<string>x &lt; y &amp;&amp; z &gt; w ]]&gt; &#13;\n</string>\n</dict>\n',
    );
    expect(decodePlist(encodePlist('line\r\nend'))).to.equal('line\r\nend');
  });

  it('keeps non-ASCII text as it is', () => {
    expect(inner('Ayesha’s iPad 🍎')).to.equal('<string>Ayesha’s iPad 🍎</string>\n');
  });

  it('writes integral numbers as <integer>, exactly, and others as <real>', () => {
    expect(inner(42)).to.equal('<integer>42</integer>\n');
    expect(inner(-7)).to.equal('<integer>-7</integer>\n');
    expect(inner(2 ** 60)).to.equal('<integer>1152921504606846976</integer>\n');
    expect(inner(1e21)).to.equal('<integer>1000000000000000000000</integer>\n');
    expect(inner(0.5)).to.equal('<real>0.5</real>\n');
    expect(inner(1e-7)).to.equal('<real>1e-7</real>\n');
    expect(inner(NaN)).to.equal('<real>nan</real>\n');
    expect(inner(-Infinity)).to.equal('<real>-infinity</real>\n');
    for (const n of [2 ** 60, 1e21, 0.1 + 0.2, 1e-7, -1.5e300, Infinity, -Infinity]) {
      expect(decodePlist(encodePlist(n))).to.equal(n);
    }
    expect(Number.isNaN(decodePlist(encodePlist(NaN)))).to.equal(true);
  });

  it('writes dates to the second, in UTC', () => {
    expect(inner(new Date('2024-01-02T03:04:05.678Z'))).to.equal('<date>2024-01-02T03:04:05Z</date>\n');
  });

  it('writes data as base64, also from a Buffer that is a slice of a larger one', () => {
    const pool = Buffer.from('xxhelloxx');
    expect(inner(pool.subarray(2, 7))).to.equal('<data>aGVsbG8=</data>\n');
    expect(inner(new Uint8Array(0))).to.equal('<data></data>\n');
  });

  it('leaves out dict entries whose value is undefined', () => {
    const value = { a: 'x', b: undefined } as unknown as PlistDict;
    expect(decodePlist(encodePlist(value))).to.deep.equal({ a: 'x' });
    expect(inner({ only: undefined } as unknown as PlistDict)).to.equal('<dict/>\n');
  });

  it('is read back by the reference parser', () => {
    const value: PlistDict = {
      CommandUUID: '7a2d5e81-94c6-4f03-b2e8-6d1f0c9a3b57',
      Command: {
        RequestType: 'InviteToProgram',
        ProgramID: 'com.apple.cloudvpp',
        InvitationURL: 'https://buy.itunes.apple.com/x?cc=us&inviteCode=abc&mt=8',
      },
      Flags: [true, false],
      Blob: Uint8Array.from([0, 255, 128]),
      When: new Date('2030-01-01T00:00:00Z'),
      Count: 3,
      Ratio: 0.25,
    };
    expect(referenceParse(encodePlist(value))).to.deep.equal(value);
    expect(decodePlist(encodePlist(value))).to.deep.equal(value);
  });

  describe('refuses what XML cannot carry', () => {
    const cyclic: PlistDict = {};
    cyclic['self'] = cyclic;
    const cases: [string, unknown, string][] = [
      ['a control character in a string', { a: 'bell\u0007' }, 'malformed'],
      ['a control character in a key', { 'a\u0000': 'x' }, 'malformed'],
      ['an invalid date', new Date(NaN), 'malformed'],
      ['a date past year 9999', new Date('+010000-01-01T00:00:00Z'), 'malformed'],
      ['null', { a: null }, 'malformed'],
      ['undefined in an array', [undefined], 'malformed'],
      ['a function', { a: () => 1 }, 'malformed'],
      ['a cyclic value', cyclic, 'too_deep'],
    ];
    for (const [name, value, code] of cases) {
      it(`${name} → PlistError ${code}`, () => {
        expect(() => encodePlist(value as PlistValue))
          .to.throw(PlistError)
          .with.property('code', code);
      });
    }
  });
});
