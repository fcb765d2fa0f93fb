import { expect } from 'chai';
import {
  DerError,
  childrenOf,
  decodeOid,
  der,
  encodeOid,
  octetStringValue,
  readRoot,
  timeValue,
} from '../../../shared/crypto/der.ts';

describe('shared/crypto DER reader/writer', function () {
  it('round trips OIDs, including large arcs', function () {
    for (const oid of [
      '1.2.840.113549.1.7.2',
      '0.9.2342.19200300.100.1.1',
      '2.999.3',
      '1.2.840.113635.100.6.3.1',
    ]) {
      expect(decodeOid(encodeOid(oid))).to.equal(oid);
    }
    expect(encodeOid('1.2.840.113549').toString('hex')).to.equal('2a864886f70d');
  });

  it('reads indefinite lengths and constructed OCTET STRINGs (BER)', function () {
    // SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "cd" } }
    const ber = Buffer.from('3080248004026162040263640000' + '0000', 'hex');
    const root = readRoot(ber);
    const [octets] = childrenOf(ber, root);
    expect(octets).to.not.equal(undefined);
    if (octets === undefined) return;
    expect(octetStringValue(ber, octets).toString()).to.equal('abcd');
  });

  it('writes times as UTCTime before 2050 and GeneralizedTime after', function () {
    const utc = der.time(new Date('2049-12-31T23:59:59Z'));
    expect(utc[0]).to.equal(0x17);
    expect(timeValue(utc, readRoot(utc)).toISOString()).to.equal('2049-12-31T23:59:59.000Z');
    const gen = der.time(new Date('2050-01-01T00:00:00Z'));
    expect(gen[0]).to.equal(0x18);
    expect(timeValue(gen, readRoot(gen)).toISOString()).to.equal('2050-01-01T00:00:00.000Z');
  });

  it('sorts SET OF and keeps INTEGERs positive', function () {
    expect(
      der.setOf(Buffer.from([0x04, 0x01, 0x02]), Buffer.from([0x04, 0x01, 0x01])).toString('hex'),
    ).to.equal('3106040101040102');
    expect(der.unsignedInteger(Buffer.from([0x00, 0x80])).toString('hex')).to.equal('02020080');
    expect(der.unsignedInteger(Buffer.from([0x00, 0x00, 0x7f])).toString('hex')).to.equal('02017f');
  });

  it('rejects truncated, overlong and unterminated input', function () {
    for (const hex of ['', '30', '3005020101', '308402000000', '30800201', '0480', '3001']) {
      expect(() => readRoot(Buffer.from(hex, 'hex')), hex).to.throw(DerError);
    }
    // nesting bombs stop at the depth limit
    const deep = Buffer.from('3080'.repeat(100) + '0000'.repeat(100), 'hex');
    expect(() => readRoot(deep)).to.throw(DerError);
  });
});
