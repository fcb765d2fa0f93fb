import { expect } from 'chai';
import { buildBinary, parse as referenceParse } from 'plist';
import {
  decodePlist,
  decodePlistDict,
  DEFAULT_PLIST_LIMITS,
  encodePlist,
  isPlistDict,
  PlistError,
} from '../../../shared/plist/index.ts';
import type { PlistDict, PlistValue } from '../../../shared/plist/index.ts';
import { buildRawBinaryPlist } from './bplist-builder.ts';
import { listFiles, FIXTURES_DIR, readFixture } from './test-files.ts';

function nested(depth: number, leaf = '<true/>'): string {
  return `<plist>${'<array>'.repeat(depth)}${leaf}${'</array>'.repeat(depth)}</plist>`;
}

describe('decodePlist', () => {
  describe('every value type (fixture every-type.plist)', () => {
    const value = decodePlistDict(readFixture('every-type.plist'));

    it('decodes strings with references, CDATA and comments', () => {
      expect(value['String']).to.equal('Grüße <&> 🍎 A<raw & text>');
      expect(value['EmptyString']).to.equal('');
      expect(value['']).to.equal('empty key');
    });

    it('decodes numbers, booleans and dates', () => {
      expect(value['Integer']).to.equal(-42);
      expect(value['LargeInteger']).to.equal(Number.MAX_SAFE_INTEGER);
      expect(value['Real']).to.equal(0.125);
      expect(value['RealExponent']).to.equal(-0.0025);
      expect(value['True']).to.equal(true);
      expect(value['False']).to.equal(false);
      expect(value['Date']).to.be.instanceOf(Date);
      expect((value['Date'] as Date).toISOString()).to.equal('2031-07-14T09:26:53.000Z');
    });

    it('decodes data (line-wrapped base64) to a plain Uint8Array', () => {
      const data = value['Data'];
      expect(data).to.be.instanceOf(Uint8Array);
      expect(Buffer.isBuffer(data)).to.equal(false);
      expect(Buffer.from(data as Uint8Array).toString('hex')).to.equal(
        '530cb03ace7c4080a7c61cdf97dd5119028d6320',
      );
      expect(value['EmptyData']).to.deep.equal(new Uint8Array(0));
    });

    it('decodes containers, empty and nested', () => {
      expect(value['Array']).to.deep.equal(['one', 2, [], {}]);
      expect(value['Nested']).to.deep.equal({ Deeper: { Deepest: [true] } });
    });
  });

  describe('every fixture', () => {
    const files = listFiles(FIXTURES_DIR, ['.plist']);

    it('finds the fixtures', () => {
      expect(files.length).to.be.greaterThan(20);
    });

    for (const file of files) {
      it(`${file}: agrees with the reference parser and survives encode → decode`, () => {
        const bytes = readFixture(file);
        const value = decodePlist(bytes);
        expect(value).to.deep.equal(referenceParse(bytes.toString('utf8')));
        expect(decodePlist(bytes.toString('utf8'))).to.deep.equal(value);
        expect(decodePlist(encodePlist(value))).to.deep.equal(value);
      });
    }
  });

  describe('input forms', () => {
    const xml =
      '<?xml version="1.0"?><plist version="1.0"><dict><key>a</key><string>é</string></dict></plist>';

    it('reads a Buffer, a Uint8Array and a string alike', () => {
      const bytes = Buffer.from(xml, 'utf8');
      expect(decodePlist(bytes)).to.deep.equal({ a: 'é' });
      expect(decodePlist(new Uint8Array(bytes))).to.deep.equal({ a: 'é' });
      expect(decodePlist(xml)).to.deep.equal({ a: 'é' });
    });

    it('reads a Buffer that is a slice of a larger one', () => {
      const pool = Buffer.from(`garbage${xml}garbage`, 'utf8');
      expect(decodePlist(pool.subarray(7, 7 + Buffer.byteLength(xml)))).to.deep.equal({ a: 'é' });
    });

    it('accepts a byte-order mark, with or without the XML declaration and DOCTYPE', () => {
      expect(decodePlist(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(xml)]))).to.deep.equal({
        a: 'é',
      });
      expect(decodePlist(`\uFEFF${xml}`)).to.deep.equal({ a: 'é' });
      expect(decodePlist('<plist><string>x</string></plist>')).to.equal('x');
    });

    it("accepts Apple's DOCTYPE with any spacing", () => {
      const doc =
        '<!DOCTYPE   plist PUBLIC\n"-//Apple//DTD PLIST 1.0//EN"\n\t"http://www.apple.com/DTDs/PropertyList-1.0.dtd" >';
      expect(decodePlist(`${doc}<plist><integer>1</integer></plist>`)).to.equal(1);
    });

    it('accepts comments and processing instructions around and between elements', () => {
      const doc =
        '<?xml version="1.0"?><!-- a --><plist><!-- b --><dict><!-- c --><key>k</key><!-- d --><integer>1</integer></dict></plist><!-- e -->\n';
      expect(decodePlist(doc)).to.deep.equal({ k: 1 });
    });

    it('normalises line ends in text as XML requires, but keeps a referenced CR', () => {
      expect(decodePlist('<plist><string>a\r\nb\rc&#13;</string></plist>')).to.equal('a\nb\nc\r');
    });

    it('reads non-decimal reals Apple may write, and ignores the value of empty booleans', () => {
      expect(Number.isNaN(decodePlist('<plist><real>nan</real></plist>'))).to.equal(true);
      expect(decodePlist('<plist><real>+infinity</real></plist>')).to.equal(Infinity);
      expect(decodePlist('<plist><real>-inf</real></plist>')).to.equal(-Infinity);
      expect(decodePlist('<plist><real> 5 </real></plist>')).to.equal(5);
    });

    it('keeps the last of duplicate keys', () => {
      expect(
        decodePlist('<plist><dict><key>a</key><true/><key>a</key><false/></dict></plist>'),
      ).to.deep.equal({
        a: false,
      });
    });
  });

  describe('limits', () => {
    it('defaults to 10 MiB and depth 32', () => {
      expect(DEFAULT_PLIST_LIMITS).to.deep.equal({ maxBytes: 10 * 1024 * 1024, maxDepth: 32 });
    });

    it('accepts nesting exactly at maxDepth and refuses one more', () => {
      expect(() => decodePlist(nested(32))).not.to.throw();
      expect(() => decodePlist(nested(33)))
        .to.throw(PlistError)
        .with.property('code', 'too_deep');
      expect(() => decodePlist(nested(5), { maxDepth: 4 }))
        .to.throw(PlistError)
        .with.property('code', 'too_deep');
      expect(() => decodePlist(nested(4), { maxDepth: 4 })).not.to.throw();
    });

    it('counts an empty container as a level', () => {
      expect(() => decodePlist(nested(32, '<dict/>')))
        .to.throw(PlistError)
        .with.property('code', 'too_deep');
    });

    it('accepts a body of exactly maxBytes', () => {
      const body = '<plist><string>xx</string></plist>';
      expect(decodePlist(body, { maxBytes: body.length })).to.equal('xx');
      expect(decodePlist(Buffer.from(body), { maxBytes: body.length })).to.equal('xx');
    });

    it('uses the default for a limit given as undefined', () => {
      expect(() => decodePlist(nested(33), { maxDepth: undefined }))
        .to.throw(PlistError)
        .with.property('code', 'too_deep');
    });
  });

  describe('binary plists', () => {
    const sample: PlistDict = {
      MessageType: 'TokenUpdate',
      UDID: '00008110-000C2D5A1E38801E',
      Token: Uint8Array.from(
        Buffer.from('2a51d6fd58331e5e88d783fdc593e968006881e64d0489c3c0de7a991d674c07', 'hex'),
      ),
      AwaitingConfiguration: false,
      NotOnConsole: true,
      Count: 70000,
      Negative: -3,
      Ratio: 0.75,
      When: new Date('2030-02-03T04:05:06Z'),
      Name: 'Ünïcødé 🍎',
      List: ['a', 1, [], {}],
    };

    it('decodes one written by the plist library', () => {
      const bytes = buildBinary(sample);
      expect(Buffer.from(bytes.subarray(0, 8)).toString('latin1')).to.equal('bplist00');
      expect(decodePlist(bytes)).to.deep.equal(sample);
      expect(decodePlistDict(Buffer.from(bytes))['Name']).to.equal('Ünïcødé 🍎');
    });

    it('re-encodes a decoded binary plist as XML', () => {
      expect(decodePlist(encodePlist(decodePlist(buildBinary(sample))))).to.deep.equal(sample);
    });

    it('decodes one written object by object, with shared leaves', () => {
      const bytes = buildRawBinaryPlist([
        {
          dict: [
            [1, 2],
            [3, 2],
          ],
        },
        { ascii: 'first' },
        { ascii: 'shared' },
        { ascii: 'second' },
      ]);
      expect(decodePlist(bytes)).to.deep.equal({ first: 'shared', second: 'shared' });
    });

    it('copies data out of the body', () => {
      const bytes = buildRawBinaryPlist([{ bytes: [0x43, 1, 2, 3] }]);
      const value = decodePlist(bytes) as Uint8Array;
      expect([...value]).to.deep.equal([1, 2, 3]);
      expect(value.buffer).not.to.equal(bytes.buffer);
    });

    it('enforces maxBytes on the body', () => {
      const bytes = buildBinary(sample);
      expect(() => decodePlist(bytes, { maxBytes: bytes.byteLength - 1 }))
        .to.throw(PlistError)
        .with.property('code', 'too_large');
    });
  });

  describe('decodePlistDict', () => {
    it('returns a dict', () => {
      expect(decodePlistDict('<plist><dict><key>a</key><integer>1</integer></dict></plist>')).to.deep.equal({
        a: 1,
      });
    });

    const roots: [string, string][] = [
      ['array', '<plist><array/></plist>'],
      ['string', '<plist><string>x</string></plist>'],
      ['data', '<plist><data>AA==</data></plist>'],
      ['date', '<plist><date>2020-01-01T00:00:00Z</date></plist>'],
      ['integer', '<plist><integer>1</integer></plist>'],
    ];
    for (const [name, body] of roots) {
      it(`refuses a root ${name} with not_dict`, () => {
        expect(() => decodePlistDict(body))
          .to.throw(PlistError)
          .with.property('code', 'not_dict');
      });
    }
  });

  describe('isPlistDict', () => {
    const cases: [string, PlistValue | undefined, boolean][] = [
      ['dict', { a: 1 }, true],
      ['array', [], false],
      ['date', new Date(0), false],
      ['data', new Uint8Array(1), false],
      ['string', 'x', false],
      ['undefined', undefined, false],
    ];
    for (const [name, value, expected] of cases) {
      it(`${name} → ${expected}`, () => expect(isPlistDict(value)).to.equal(expected));
    }
  });
});
