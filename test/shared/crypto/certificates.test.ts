import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { expect } from 'chai';
import {
  CertificateError,
  OID_APNS_DEVELOPMENT,
  OID_APNS_PRODUCTION,
  certificateNotAfter,
  createCaCertificate,
  generateKeyPair,
  issueCertificate,
  pushTopicOf,
  verifyIssuedBy,
} from '../../../shared/crypto/index.ts';
import type { CertificateErrorCode } from '../../../shared/crypto/index.ts';
import { der } from '../../../shared/crypto/der.ts';
import { makeCa, makeIdentity, vectorPath } from './helpers.ts';
import type { TestCa } from './helpers.ts';

function expectCertificateError(fn: () => unknown, code: CertificateErrorCode): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected CertificateError ${code}`).to.be.instanceOf(CertificateError);
  expect((caught as CertificateError).code).to.equal(code);
}

const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const DAY = 24 * 60 * 60 * 1000;

describe('shared/crypto certificates', function () {
  let ca: TestCa;
  let otherCa: TestCa;
  let leafKey: { privateKeyPem: string; publicKeyPem: string };

  before(async function () {
    [ca, otherCa, leafKey] = await Promise.all([
      makeCa({ CN: 'Test Server CA', O: 'Tests', C: 'US' }),
      makeCa({ CN: 'Other CA' }),
      generateKeyPair(),
    ]);
  });

  it('generateKeyPair gives PKCS#8 and SPKI PEM of the requested size', async function () {
    const { privateKeyPem, publicKeyPem } = await generateKeyPair(1024);
    expect(privateKeyPem).to.contain('BEGIN PRIVATE KEY');
    expect(publicKeyPem).to.contain('BEGIN PUBLIC KEY');
    expect(createPublicKey(publicKeyPem).asymmetricKeyDetails?.modulusLength).to.equal(1024);
  });

  it('createCaCertificate: a self-signed CA that node accepts', function () {
    const cert = new X509Certificate(ca.certPem);
    expect(cert.ca).to.equal(true);
    expect(cert.subject).to.contain('CN=Test Server CA');
    expect(cert.subject).to.contain('C=US');
    expect(cert.issuer).to.equal(cert.subject);
    expect(cert.verify(cert.publicKey)).to.equal(true);
    expect(cert.checkPrivateKey(createPrivateKey(ca.keyPem))).to.equal(true);
    verifyIssuedBy(cert, cert);
  });

  it('issues a server certificate with serverAuth and DNS + IP SANs that node TLS accepts', async function () {
    const certPem = issueCertificate({
      kind: 'server',
      subject: { CN: 'mdm.test', O: 'Tests' },
      publicKeyPem: leafKey.publicKeyPem,
      issuerCertPem: ca.certPem,
      issuerKeyPem: ca.keyPem,
      days: 825,
      altNames: ['localhost', 'mdm.test', '127.0.0.1', '::1', '::ffff:10.1.2.3', '2001:db8::8:800:200c:417a'],
    });
    const cert = new X509Certificate(certPem);
    verifyIssuedBy(cert, new X509Certificate(ca.certPem));
    expect(cert.ca).to.equal(false);
    expect(cert.keyUsage).to.deep.equal([EKU_SERVER_AUTH]);
    expect(cert.subjectAltName).to.contain('IP Address:127.0.0.1');
    expect(cert.checkIP('127.0.0.1')).to.equal('127.0.0.1');
    expect(cert.checkIP('::1')).to.not.equal(undefined);
    expect(cert.checkIP('::ffff:10.1.2.3')).to.not.equal(undefined);
    expect(cert.checkIP('2001:db8::8:800:200c:417a')).to.not.equal(undefined);
    expect(cert.checkHost('mdm.test')).to.equal('mdm.test');
    expect(cert.checkHost('other.test')).to.equal(undefined);
    const days = (certificateNotAfter(certPem).getTime() - Date.now()) / DAY;
    expect(days).to.be.within(824, 826);

    // a real TLS handshake to 127.0.0.1 trusting only the CA
    const server = tls.createServer({ cert: certPem, key: leafKey.privateKeyPem }, (socket) =>
      socket.end('hi'),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      const socket = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem });
      await once(socket, 'secureConnect');
      expect(socket.authorized).to.equal(true);
      socket.destroy();
    } finally {
      server.close();
    }
  });

  it('issues a client (device identity) certificate with clientAuth', async function () {
    const { certPem } = await makeIdentity(
      ca,
      { subject: { CN: 'DEVICE', OU: 'devices' } },
      leafKey.privateKeyPem,
    );
    const cert = new X509Certificate(certPem);
    expect(cert.keyUsage).to.deep.equal([EKU_CLIENT_AUTH]);
    expect(cert.subject).to.contain('OU=devices');
    expect(cert.checkPrivateKey(createPrivateKey(leafKey.privateKeyPem))).to.equal(true);
    verifyIssuedBy(cert, new X509Certificate(ca.certPem));
    expect(cert.checkIssued(new X509Certificate(ca.certPem))).to.equal(true);
    expect(pushTopicOf(certPem)).to.equal(null);
  });

  it('issues a push certificate carrying both APNs extensions and the topic as subject UID', function () {
    const topic = 'com.apple.mgmt.External.0f6b4f66-51a4-4a4f-9a60-3a0a5b8d2f11';
    const certPem = issueCertificate({
      kind: 'push',
      subject: { UID: topic, CN: 'APSP:0f6b4f66-51a4-4a4f-9a60-3a0a5b8d2f11' },
      publicKeyPem: leafKey.publicKeyPem,
      issuerCertPem: ca.certPem,
      issuerKeyPem: ca.keyPem,
      days: 365,
    });
    const cert = new X509Certificate(certPem);
    verifyIssuedBy(cert, new X509Certificate(ca.certPem));
    expect(cert.keyUsage).to.deep.equal([EKU_CLIENT_AUTH]);
    expect(cert.raw.includes(der.oid(OID_APNS_DEVELOPMENT))).to.equal(true);
    expect(cert.raw.includes(der.oid(OID_APNS_PRODUCTION))).to.equal(true);
    expect(cert.subject).to.contain(`UID=${topic}`);
    expect(pushTopicOf(certPem)).to.equal(topic);
  });

  it('keeps non-ASCII subject text as UTF-8', function () {
    const certPem = issueCertificate({
      kind: 'client',
      subject: { CN: 'iPad de Zoë – 東京' },
      publicKeyPem: leafKey.publicKeyPem,
      issuerCertPem: ca.certPem,
      issuerKeyPem: ca.keyPem,
      days: 1,
    });
    expect(new X509Certificate(certPem).subject).to.contain('CN=iPad de Zoë – 東京');
  });

  it('uses the given serial number, kept positive', function () {
    const make = (serialNumber: string): string =>
      new X509Certificate(
        issueCertificate({
          kind: 'client',
          subject: { CN: 'S' },
          publicKeyPem: leafKey.publicKeyPem,
          issuerCertPem: ca.certPem,
          issuerKeyPem: ca.keyPem,
          days: 1,
          serialNumber,
        }),
      ).serialNumber.toLowerCase();
    expect(make('0a1b2c')).to.equal('0a1b2c');
    expect(make('ff01')).to.match(/^(00)?ff01$/);
    const random = new X509Certificate(ca.certPem).serialNumber;
    expect(random).to.have.length(32);
  });

  it('pushTopicOf reads the topic of the real (expired) Apple push certificate in the vectors', async function () {
    const file = vectorPath('nanomdm/test__e2e__testdata__push.pem');
    if (!file) {
      console.warn('      skipped: ../shared/vectors/nanomdm is not present');
      return this.skip();
    }
    const pem = await readFile(file, 'utf8');
    expect(pushTopicOf(pem)).to.equal('com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9');
    expect(certificateNotAfter(pem).toISOString()).to.equal('2022-02-10T17:44:47.000Z');
  });

  describe('verifyIssuedBy', function () {
    it('untrusted: issued by another CA, or checked against a non-CA', async function () {
      const { certPem } = await makeIdentity(otherCa, {}, leafKey.privateKeyPem);
      const cert = new X509Certificate(certPem);
      expectCertificateError(() => verifyIssuedBy(cert, new X509Certificate(ca.certPem)), 'untrusted');
      expectCertificateError(() => verifyIssuedBy(cert, cert), 'untrusted');
    });

    it('remembers a verified pair without letting another CA or another time through', async function () {
      const { certPem } = await makeIdentity(ca, {}, leafKey.privateKeyPem);
      const cert = new X509Certificate(certPem);
      const caCert = new X509Certificate(ca.certPem);
      verifyIssuedBy(cert, caCert);
      verifyIssuedBy(cert, caCert);
      expectCertificateError(() => verifyIssuedBy(cert, new X509Certificate(otherCa.certPem)), 'untrusted');
      expectCertificateError(() => verifyIssuedBy(cert, caCert, new Date(Date.now() + 60 * DAY)), 'expired');
      verifyIssuedBy(cert, caCert);
    });

    it('untrusted: same issuer name, different key (a look-alike CA)', async function () {
      const lookAlike = await makeCa({ CN: 'Test Server CA', O: 'Tests', C: 'US' });
      const { certPem } = await makeIdentity(lookAlike, {}, leafKey.privateKeyPem);
      expectCertificateError(
        () => verifyIssuedBy(new X509Certificate(certPem), new X509Certificate(ca.certPem)),
        'untrusted',
      );
    });

    it('expired and not_yet_valid (validity set with the notBefore/notAfter overrides)', async function () {
      const expired = await makeIdentity(
        ca,
        { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2021-01-01T00:00:00Z') },
        leafKey.privateKeyPem,
      );
      const caCert = new X509Certificate(ca.certPem);
      expectCertificateError(() => verifyIssuedBy(new X509Certificate(expired.certPem), caCert), 'expired');
      // valid at a time inside its validity (the CA is not valid then: it is checked too)
      expectCertificateError(
        () => verifyIssuedBy(new X509Certificate(expired.certPem), caCert, new Date('2020-06-01T00:00:00Z')),
        'not_yet_valid',
      );
      const future = await makeIdentity(
        ca,
        { notBefore: new Date(Date.now() + 2 * DAY), notAfter: new Date(Date.now() + 3 * DAY) },
        leafKey.privateKeyPem,
      );
      expectCertificateError(
        () => verifyIssuedBy(new X509Certificate(future.certPem), caCert),
        'not_yet_valid',
      );
      verifyIssuedBy(new X509Certificate(future.certPem), caCert, new Date(Date.now() + 2.5 * DAY));
      expectCertificateError(
        () => verifyIssuedBy(new X509Certificate(future.certPem), caCert, new Date(Date.now() + 4 * DAY)),
        'expired',
      );
    });

    it('an expired CA makes its certificates expired too', async function () {
      const { privateKeyPem } = await generateKeyPair();
      const oldCaPem = createCaCertificate({
        subject: { CN: 'Old CA' },
        keyPem: privateKeyPem,
        days: 1,
        notBefore: new Date(Date.now() - 10 * DAY),
        notAfter: new Date(Date.now() - DAY),
      });
      const { certPem } = await makeIdentity(
        { certPem: oldCaPem, keyPem: privateKeyPem },
        {},
        leafKey.privateKeyPem,
      );
      expectCertificateError(
        () => verifyIssuedBy(new X509Certificate(certPem), new X509Certificate(oldCaPem)),
        'expired',
      );
    });
  });

  it('refuses an issuer key that does not belong to the issuer certificate', function () {
    expect(() =>
      issueCertificate({
        kind: 'client',
        subject: { CN: 'X' },
        publicKeyPem: leafKey.publicKeyPem,
        issuerCertPem: ca.certPem,
        issuerKeyPem: otherCa.keyPem,
        days: 1,
      }),
    ).to.throw(/issuer key/);
  });
});
