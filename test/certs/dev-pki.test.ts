import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { DEV_PKI_FILES, ensureDevPki } from '../../certs/dev-pki.ts';
import type { DevPki } from '../../certs/dev-pki.ts';
import {
  OID_APNS_DEVELOPMENT,
  OID_APNS_PRODUCTION,
  fingerprint,
  verifyIssuedBy,
} from '../../shared/crypto/index.ts';
import { der } from '../../shared/crypto/der.ts';
import { withTempDir } from '../shared/crypto/helpers.ts';

const ALL_FILES = Object.values(DEV_PKI_FILES).flat();

function fingerprints(pki: DevPki): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of [
    'caCertPem',
    'serverCertPem',
    'deviceCaCertPem',
    'pushCertPem',
    'simulatorCertPem',
  ] as const) {
    out[k] = fingerprint(new X509Certificate(pki[k]).raw);
  }
  return out;
}

describe('certs/dev-pki ensureDevPki', function () {
  it('makes a complete PKI in a new (nested) directory, then loads it unchanged', async function () {
    await withTempDir(async (tmp) => {
      const dir = path.join(tmp, 'data', 'certs');
      const pki = await ensureDevPki(dir, { hostnames: ['mdm.example.test'] });
      expect(pki.dir).to.equal(dir);
      expect([...pki.created].sort()).to.deep.equal([...ALL_FILES].sort());

      for (const f of ALL_FILES) {
        const info = await stat(path.join(dir, f));
        expect(info.isFile(), f).to.equal(true);
        if (f.endsWith('.key.pem') && process.platform !== 'win32') {
          expect(info.mode & 0o777, `${f} mode`).to.equal(0o600);
        }
      }
      expect(await readFile(path.join(dir, 'ca.pem'), 'utf8')).to.equal(pki.caCertPem);
      expect(await readFile(path.join(dir, 'device-ca.key.pem'), 'utf8')).to.equal(pki.deviceCaKeyPem);

      const ca = new X509Certificate(pki.caCertPem);
      const deviceCa = new X509Certificate(pki.deviceCaCertPem);
      expect(ca.subject).to.contain('CN=VPP MDM Development CA');
      expect(deviceCa.subject).to.contain('CN=VPP MDM Device CA');
      expect(ca.ca && deviceCa.ca).to.equal(true);
      verifyIssuedBy(ca, ca);
      verifyIssuedBy(deviceCa, deviceCa);
      expect(deviceCa.publicKey.equals(ca.publicKey)).to.equal(false);

      for (const [certPem, keyPem] of [
        [pki.serverCertPem, pki.serverKeyPem],
        [pki.simulatorCertPem, pki.simulatorKeyPem],
        [pki.pushCertPem, pki.pushKeyPem],
      ] as const) {
        const cert = new X509Certificate(certPem);
        verifyIssuedBy(cert, ca);
        expect(cert.checkPrivateKey(createPrivateKey(keyPem))).to.equal(true);
      }
      for (const pem of [pki.serverCertPem, pki.simulatorCertPem]) {
        const cert = new X509Certificate(pem);
        expect(cert.checkHost('localhost')).to.equal('localhost');
        expect(cert.checkHost('mdm.example.test')).to.equal('mdm.example.test');
        expect(cert.checkIP('127.0.0.1')).to.equal('127.0.0.1');
        expect(cert.checkIP('::1')).to.not.equal(undefined);
      }
      const server = new X509Certificate(pki.serverCertPem);
      const days = (new Date(server.validTo).getTime() - Date.now()) / 86_400_000;
      expect(days).to.be.within(824, 826);

      const push = new X509Certificate(pki.pushCertPem);
      const uuid = /^com\.apple\.mgmt\.External\.([0-9a-f-]{36})$/.exec(pki.pushTopic)?.[1];
      expect(uuid, pki.pushTopic).to.be.a('string');
      expect(push.subject).to.contain(`UID=${pki.pushTopic}`);
      expect(push.subject).to.contain(`CN=APSP:${uuid}`);
      expect(push.raw.includes(der.oid(OID_APNS_DEVELOPMENT))).to.equal(true);
      expect(push.raw.includes(der.oid(OID_APNS_PRODUCTION))).to.equal(true);

      const again = await ensureDevPki(dir, { hostnames: ['mdm.example.test'] });
      expect(again.created).to.deep.equal([]);
      expect(fingerprints(again)).to.deep.equal(fingerprints(pki));
      expect(again.caKeyPem).to.equal(pki.caKeyPem);
      expect(again.pushTopic).to.equal(pki.pushTopic);
      // loading without the extra hostname keeps the (wider) server certificate
      expect((await ensureDevPki(dir)).created).to.deep.equal([]);
    });
  });

  it('replaces only what is missing or unusable, keeps keys and the push topic, adds new hostnames', async function () {
    await withTempDir(async (dir) => {
      const first = await ensureDevPki(dir);
      await rm(path.join(dir, 'push.pem'));
      await rm(path.join(dir, 'server.pem'));
      const second = await ensureDevPki(dir);
      expect(second.created).to.deep.equal(['push.pem', 'server.pem']);
      // push.pem held the topic: a new one is made (its key is kept)
      expect(second.pushTopic).to.match(/^com\.apple\.mgmt\.External\./);
      expect(second.pushKeyPem).to.equal(first.pushKeyPem);
      expect(second.serverKeyPem).to.equal(first.serverKeyPem);
      expect(second.caCertPem).to.equal(first.caCertPem);
      expect(second.deviceCaCertPem).to.equal(first.deviceCaCertPem);

      const third = await ensureDevPki(dir, { hostnames: ['10.9.8.7', 'new.example.test'] });
      expect(third.created).to.deep.equal(['server.pem', 'simulator.pem']);
      expect(new X509Certificate(third.serverCertPem).checkIP('10.9.8.7')).to.equal('10.9.8.7');
      expect(new X509Certificate(third.serverCertPem).checkHost('new.example.test')).to.equal(
        'new.example.test',
      );
      expect(third.caCertPem).to.equal(first.caCertPem);

      // a lost CA key means a new CA, so everything it issued is reissued
      await rm(path.join(dir, 'ca.key.pem'));
      const fourth = await ensureDevPki(dir);
      expect(fourth.created).to.include.members([
        'ca.key.pem',
        'ca.pem',
        'server.pem',
        'simulator.pem',
        'push.pem',
      ]);
      expect(fourth.created).to.not.include('device-ca.pem');
      // a reissued push certificate keeps its topic (enrolled devices know it)
      expect(fourth.pushTopic).to.equal(second.pushTopic);
      verifyIssuedBy(new X509Certificate(fourth.serverCertPem), new X509Certificate(fourth.caCertPem));
    });
  });

  it('two concurrent calls on an empty directory make one PKI', async function () {
    await withTempDir(async (dir) => {
      const [a, b] = await Promise.all([ensureDevPki(dir), ensureDevPki(dir)]);
      expect(fingerprints(a)).to.deep.equal(fingerprints(b));
      expect(a.created.length + b.created.length).to.equal(ALL_FILES.length);
    });
  });
});
