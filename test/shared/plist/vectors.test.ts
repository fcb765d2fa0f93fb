import { expect } from 'chai';
import { parse as referenceParse } from 'plist';
import { decodePlist, encodePlist } from '../../../shared/plist/index.ts';
import { listFiles, readVector, skipWithoutVectors, VECTORS_DIR } from './test-files.ts';

/*
 * Every property list among the vectors (../shared/vectors, beside the repository): decoded from
 * bytes and from a string alike, equal to what the plist library reads, and unchanged through
 * encode → decode. What each one means is checked in test/shared/mdm/vectors.test.ts.
 */

const plistFiles = listFiles(VECTORS_DIR, ['.plist', '.mobileconfig']);
/** Webhook events that carry a device message base64-encoded in `raw_payload`. */
const webhookFiles = listFiles(VECTORS_DIR, ['.json']).filter((f) => f.includes('webhook'));

function rawPayload(json: unknown): Buffer {
  const events = Object.values(json as Record<string, { raw_payload?: unknown }>);
  const payload = events.find(
    (e) => typeof e === 'object' && e !== null && typeof e.raw_payload === 'string',
  );
  if (typeof payload?.raw_payload !== 'string') throw new Error('no raw_payload in webhook event');
  return Buffer.from(payload.raw_payload, 'base64');
}

describe('plist vectors (../shared/vectors)', function () {
  before(function () {
    skipWithoutVectors(this);
  });

  it('finds the vectors', () => {
    expect(plistFiles.length).to.be.at.least(13);
    expect(webhookFiles.length).to.be.at.least(2);
  });

  for (const file of plistFiles) {
    it(`${file}: decodes, agrees with the reference parser, round-trips`, () => {
      const bytes = readVector(file);
      const value = decodePlist(bytes);
      expect(decodePlist(bytes.toString('utf8'))).to.deep.equal(value);
      expect(value).to.deep.equal(referenceParse(bytes.toString('utf8')));
      expect(decodePlist(encodePlist(value))).to.deep.equal(value);
    });
  }

  for (const file of webhookFiles) {
    it(`${file}: the raw_payload it carries decodes and round-trips`, () => {
      const bytes = rawPayload(JSON.parse(readVector(file).toString('utf8')));
      const value = decodePlist(bytes);
      expect(value).to.deep.equal(referenceParse(bytes.toString('utf8')));
      expect(decodePlist(encodePlist(value))).to.deep.equal(value);
    });
  }
});
