import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { expect } from 'chai';
import { makePkcs12, readPkcs12 } from '../../../shared/crypto/index.ts';
import { hasOpenssl, makeCa, makeIdentity, openssl, withTempDir } from './helpers.ts';
import type { TestCa, TestIdentity } from './helpers.ts';

function spki(pem: string): Buffer {
  return createPublicKey(pem).export({ type: 'spki', format: 'der' });
}

describe('shared/crypto PKCS#12', function () {
  let ca: TestCa;
  let device: TestIdentity;
  const password = 'c0rrect horse';

  before(async function () {
    ca = await makeCa({ CN: 'P12 Test CA' });
    device = await makeIdentity(ca, { subject: { CN: 'P12-DEVICE' } });
  });

  it('round trips: makePkcs12 → readPkcs12 gives the identity, its key and the chain', function () {
    const p12 = makePkcs12({ ...device, chainPems: [ca.certPem], password, friendlyName: 'Device identity' });
    const back = readPkcs12(p12, password);
    expect(new X509Certificate(back.certPem).raw.equals(new X509Certificate(device.certPem).raw)).to.equal(
      true,
    );
    expect(spki(back.keyPem).equals(spki(device.keyPem))).to.equal(true);
    expect(back.keyPem).to.contain('BEGIN PRIVATE KEY');
    expect(back.chainPems).to.have.length(1);
    expect(
      new X509Certificate(back.chainPems[0] ?? '').raw.equals(new X509Certificate(ca.certPem).raw),
    ).to.equal(true);
  });

  it('works without a chain or a friendly name, and with an empty password', function () {
    const back = readPkcs12(makePkcs12({ ...device, password: '' }), '');
    expect(back.chainPems).to.deep.equal([]);
    expect(createPrivateKey(back.keyPem).asymmetricKeyType).to.equal('rsa');
  });

  it('refuses a wrong password', function () {
    const p12 = makePkcs12({ ...device, password });
    expect(() => readPkcs12(p12, 'wrong')).to.throw(/PKCS#12/);
  });

  it('refuses a key that does not belong to the certificate', async function () {
    const other = await makeIdentity(ca);
    expect(() => makePkcs12({ certPem: device.certPem, keyPem: other.keyPem, password })).to.throw(
      /does not belong/,
    );
  });

  it('node (OpenSSL) loads it as a TLS identity', function () {
    const p12 = makePkcs12({ ...device, chainPems: [ca.certPem], password });
    expect(() => tls.createSecureContext({ pfx: p12, passphrase: password })).to.not.throw();
  });

  it('openssl pkcs12 -info accepts it (3DES, without -legacy if possible)', async function () {
    if (!hasOpenssl()) {
      console.warn('      skipped: openssl is not installed');
      return this.skip();
    }
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'id.p12');
      await writeFile(
        file,
        makePkcs12({ ...device, chainPems: [ca.certPem], password, friendlyName: 'Device' }),
      );
      const args = ['pkcs12', '-info', '-in', file, '-passin', `pass:${password}`, '-nodes'];
      let r = openssl(args);
      if (r.status !== 0) {
        const legacy = openssl([...args, '-legacy']);
        if (legacy.status === 0)
          console.warn('    [note] this openssl needs -legacy to read the 3DES PKCS#12');
        r = legacy;
      }
      expect(r.status, r.stderr.toString()).to.equal(0);
      const info = r.stderr.toString() + r.stdout.toString();
      expect(info).to.match(/pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048/);
      expect(info).to.contain('friendlyName: Device');
      expect(info).to.match(/CN ?= ?P12-DEVICE/);
      expect(info).to.contain('BEGIN PRIVATE KEY');
    });
  });
});
