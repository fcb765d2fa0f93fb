import { expect } from 'chai';
import { deviceSpecSchema, randomSpec, seededRng } from '../../simulator/device/device-spec.ts';

describe('simulator device specs', () => {
  it('makes iPhones with modern UDIDs, iOS versions and 12-character serials', () => {
    const rng = seededRng(1);
    for (let i = 0; i < 50; i++) {
      const spec = randomSpec('ios', rng);
      expect(deviceSpecSchema.parse(spec)).to.deep.equal(spec);
      expect(spec.udid).to.match(/^[0-9A-F]{8}-[0-9A-F]{16}$/);
      expect(spec.productName).to.match(/^iPhone\d+,\d+$/);
      expect(spec.osVersion).to.match(/^1[6-8]\.\d+(\.\d+)?$/);
      expect(spec.buildVersion).to.match(/^2[0-2][A-Z]\d{2,4}$/);
      expect(spec.serialNumber).to.match(/^[0-9A-HJ-NP-Z]{12}$/);
      expect(spec.model).to.equal(undefined);
      expect(spec.consoleUser).to.equal(undefined);
    }
  });

  it('makes iPads with iPadOS platform', () => {
    const spec = randomSpec('ipados', seededRng(2));
    expect(spec.platform).to.equal('ipados');
    expect(spec.productName).to.match(/^iPad\d+,\d+$/);
  });

  it('makes Macs with uppercase UUID UDIDs, Model/ModelName and a console user', () => {
    const rng = seededRng(3);
    for (let i = 0; i < 50; i++) {
      const spec = randomSpec('macos', rng);
      expect(deviceSpecSchema.parse(spec)).to.deep.equal(spec);
      expect(spec.udid).to.match(/^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
      expect(spec.productName).to.match(/^(MacBookPro|MacBookAir|Mac|iMac)\d+,\d+$/);
      expect(spec.model).to.equal(spec.productName);
      expect(spec.modelName).to.be.a('string');
      expect(spec.osVersion).to.match(/^1[3-5]\.\d+(\.\d+)?$/);
      expect(spec.serialNumber).to.have.length(12);
      expect(spec.consoleUser?.userId).to.match(/^[0-9A-F-]{36}$/);
      expect(spec.consoleUser?.shortName).to.match(/^[a-z]+$/);
    }
  });

  it('is reproducible from a seed and honours options', () => {
    expect(randomSpec('macos', seededRng(9))).to.deep.equal(randomSpec('macos', seededRng(9)));
    const spec = randomSpec('macos', seededRng(9), {
      consoleUser: false,
      setupAssistant: true,
      storeAccountShare: 0,
    });
    expect(spec.consoleUser).to.equal(undefined);
    expect(spec.setupAssistant).to.equal(true);
    expect(spec.storeAccount).to.deep.equal({ active: false });
    const signedIn = randomSpec('ios', seededRng(9), { storeAccountShare: 1 });
    expect(signedIn.storeAccount.active).to.equal(true);
    expect(signedIn.storeAccount.appleIdHash).to.match(/^[A-Za-z0-9+/]{27}=$/);
  });
});
