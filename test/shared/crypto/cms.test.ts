import { X509Certificate, createPrivateKey, sign } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import {
  SignatureError,
  extractAttachedContent,
  fingerprint,
  signAttached,
  signDetached,
  verifyDetached,
  verifyIssuedBy,
  CertificateError,
} from '../../../shared/crypto/index.ts';
import type { SignatureErrorCode } from '../../../shared/crypto/index.ts';
import { hasOpenssl, makeCa, makeIdentity, openssl, vectorPath, withTempDir } from './helpers.ts';
import type { TestCa, TestIdentity } from './helpers.ts';

function expectSignatureError(fn: () => unknown, code: SignatureErrorCode): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected SignatureError ${code}`).to.be.instanceOf(SignatureError);
  expect((caught as SignatureError).code).to.equal(code);
}

function flip(buf: Buffer, index: number, mask: number): void {
  buf[index] = (buf[index] ?? 0) ^ mask;
}

const body = Buffer.from(
  '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict><key>MessageType</key><string>Idle</string>' +
    '<key>UDID</key><string>00008020-000915083C80012E</string></dict></plist>\n',
);

describe('shared/crypto CMS (Mdm-Signature)', function () {
  let ca: TestCa;
  let otherCa: TestCa;
  let device: TestIdentity;
  let stranger: TestIdentity;

  before(async function () {
    [ca, otherCa] = await Promise.all([makeCa({ CN: 'Test Device CA' }), makeCa({ CN: 'Some Other CA' })]);
    [device, stranger] = await Promise.all([
      makeIdentity(ca),
      makeIdentity(otherCa, { subject: { CN: 'STRANGER' } }),
    ]);
  });

  describe('round trip', function () {
    it('verifies SHA-256 with signed attributes (the default)', function () {
      const cms = signDetached(body, device.certPem, device.keyPem);
      const signer = verifyDetached(cms, body);
      const expected = new X509Certificate(device.certPem);
      expect(signer.der.equals(expected.raw)).to.equal(true);
      expect(signer.fingerprint).to.equal(fingerprint(expected.raw));
      expect(signer.fingerprint).to.match(/^[0-9a-f]{64}$/);
      expect(signer.certificate.subject).to.contain('CN=TEST-DEVICE');
      verifyIssuedBy(signer.certificate, new X509Certificate(ca.certPem));
    });

    it('verifies SHA-1 without signed attributes, the signature being over the body itself', function () {
      const key = createPrivateKey(device.keyPem);
      const cms = signDetached(body, device.certPem, key, { digest: 'sha1', signedAttributes: false });
      // RSA PKCS#1 v1.5 is deterministic: the SignerInfo carries exactly sign(sha1, body)
      expect(cms.includes(sign('sha1', body, key))).to.equal(true);
      expect(verifyDetached(cms, body).fingerprint).to.equal(
        fingerprint(new X509Certificate(device.certPem).raw),
      );
    });

    it('verifies SHA-1 with signed attributes and SHA-256 without', function () {
      for (const options of [
        { digest: 'sha1', signedAttributes: true },
        { digest: 'sha256', signedAttributes: false },
      ] as const) {
        const cms = signDetached(body, device.certPem, device.keyPem, options);
        expect(verifyDetached(cms, body).certificate.subject).to.contain('TEST-DEVICE');
      }
    });

    it('accepts an old signingTime (no replay protection in the protocol)', function () {
      const cms = signDetached(body, device.certPem, device.keyPem, {
        signingTime: new Date('2001-02-03T04:05:06Z'),
      });
      expect(verifyDetached(cms, body).der.length).to.be.greaterThan(0);
      const cms2050 = signDetached(body, device.certPem, device.keyPem, {
        signingTime: new Date('2051-01-01T00:00:00Z'),
      });
      expect(verifyDetached(cms2050, body).der.length).to.be.greaterThan(0);
    });

    it('accepts an empty body', function () {
      const empty = Buffer.alloc(0);
      expect(
        verifyDetached(signDetached(empty, device.certPem, device.keyPem), empty).der.length,
      ).to.be.greaterThan(0);
    });

    it('accepts the attached form, whose content must equal the body', function () {
      const cms = signAttached(body, device.certPem, device.keyPem);
      expect(verifyDetached(cms, body).certificate.subject).to.contain('TEST-DEVICE');
      expect(extractAttachedContent(cms)?.equals(body)).to.equal(true);
      expectSignatureError(() => verifyDetached(cms, Buffer.from('something else')), 'digest_mismatch');
    });

    it('finds the signer among several embedded certificates', function () {
      const cms = signAttached(body, device.certPem, device.keyPem, [ca.certPem, otherCa.certPem]);
      const signer = verifyDetached(cms, body);
      expect(signer.der.equals(new X509Certificate(device.certPem).raw)).to.equal(true);
    });

    it('extractAttachedContent is null for a detached signature', function () {
      expect(extractAttachedContent(signDetached(body, device.certPem, device.keyPem))).to.equal(null);
      expectSignatureError(() => extractAttachedContent(Buffer.from('nope')), 'malformed');
    });
  });

  describe('rejections', function () {
    it('a tampered body: digest_mismatch with signed attributes, bad_signature without', function () {
      const tampered = Buffer.from(body);
      flip(tampered, tampered.length - 10, 0x01);
      expectSignatureError(
        () => verifyDetached(signDetached(body, device.certPem, device.keyPem), tampered),
        'digest_mismatch',
      );
      const plain = signDetached(body, device.certPem, device.keyPem, {
        digest: 'sha1',
        signedAttributes: false,
      });
      expectSignatureError(() => verifyDetached(plain, tampered), 'bad_signature');
    });

    it('tampered signature bytes: bad_signature', function () {
      for (const options of [{}, { digest: 'sha1', signedAttributes: false }] as const) {
        const cms = signDetached(body, device.certPem, device.keyPem, options);
        // the signature OCTET STRING ends the DER
        flip(cms, cms.length - 5, 0x40);
        expectSignatureError(() => verifyDetached(cms, body), 'bad_signature');
      }
    });

    it('a tampered signed attribute (signingTime): bad_signature', function () {
      const time = new Date('2030-01-01T00:00:00Z');
      const cms = signDetached(body, device.certPem, device.keyPem, { signingTime: time });
      const at = cms.indexOf(Buffer.from('300101000000Z', 'ascii'));
      expect(at).to.be.greaterThan(0);
      cms[at + 1] = 0x31; // 2031
      expectSignatureError(() => verifyDetached(cms, body), 'bad_signature');
    });

    it('a signature by a certificate from another CA verifies as a signature but is untrusted', function () {
      const signer = verifyDetached(signDetached(body, stranger.certPem, stranger.keyPem), body);
      let caught: unknown;
      try {
        verifyIssuedBy(signer.certificate, new X509Certificate(ca.certPem));
      } catch (err) {
        caught = err;
      }
      expect(caught).to.be.instanceOf(CertificateError);
      expect((caught as CertificateError).code).to.equal('untrusted');
    });

    it('a signature made with a key that is not the embedded certificate’s: bad_signature', function () {
      const cms = signDetached(body, device.certPem, stranger.keyPem);
      expectSignatureError(() => verifyDetached(cms, body), 'bad_signature');
    });

    it('no embedded certificate matches the signer identifier: no_signer', function () {
      const cms = signAttached(body, device.certPem, device.keyPem, [ca.certPem, otherCa.certPem]);
      const serial = Buffer.from(new X509Certificate(device.certPem).serialNumber, 'hex');
      const at = cms.indexOf(serial); // first in the embedded certificate, then in the SignerInfo
      expect(at).to.be.greaterThan(0);
      expect(cms.indexOf(serial, at + 1)).to.be.greaterThan(at);
      flip(cms, at + 3, 0x01);
      expectSignatureError(() => verifyDetached(cms, body), 'no_signer');
    });

    it('missing or garbage header bytes: malformed', function () {
      const good = signDetached(body, device.certPem, device.keyPem);
      const cases: Buffer[] = [
        Buffer.alloc(0),
        Buffer.from('garbage'),
        Buffer.from(good.toString('base64')), // base64 text instead of DER
        good.subarray(0, good.length - 20), // truncated
        Buffer.concat([good, Buffer.from([0, 1, 2])]), // trailing bytes
        Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), // absurd length
        Buffer.from([0x30, 0x03, 0x06, 0x01, 0x2a]), // a SEQUENCE holding some other OID
      ];
      for (const c of cases) expectSignatureError(() => verifyDetached(c, body), 'malformed');
    });
  });

  describe('interop', function () {
    it('verifies the synthetic sample in the vectors', async function () {
      const header = vectorPath('synthetic/mdm-signature.header.txt');
      const bodyFile = vectorPath('synthetic/mdm-signature.body.plist');
      const certFile = vectorPath('synthetic/mdm-signature.signer-cert.pem');
      if (!header || !bodyFile || !certFile) {
        console.warn('      skipped: ../shared/vectors/synthetic is not present');
        return this.skip();
      }
      const cms = Buffer.from((await readFile(header, 'utf8')).trim(), 'base64');
      const sampleBody = await readFile(bodyFile);
      const signer = verifyDetached(cms, sampleBody);
      const cert = new X509Certificate(await readFile(certFile, 'utf8'));
      expect(signer.fingerprint).to.equal(fingerprint(cert.raw));
      expect(signer.der.equals(cert.raw)).to.equal(true);
      const tampered = Buffer.concat([sampleBody, Buffer.from(' ')]);
      expectSignatureError(() => verifyDetached(cms, tampered), 'digest_mismatch');
    });

    describe('with openssl', function () {
      before(function () {
        if (!hasOpenssl()) {
          console.warn('      skipped: openssl is not installed');
          this.skip();
        }
      });

      it('openssl cms -verify accepts signDetached output (sha256 + attributes, sha1 without)', async function () {
        await withTempDir(async (dir) => {
          const bodyFile = path.join(dir, 'body');
          await writeFile(bodyFile, body);
          for (const options of [{}, { digest: 'sha1', signedAttributes: false }] as const) {
            const sigFile = path.join(dir, 'sig.der');
            await writeFile(sigFile, signDetached(body, device.certPem, device.keyPem, options));
            const r = openssl([
              'cms',
              '-verify',
              '-binary',
              '-inform',
              'DER',
              '-in',
              sigFile,
              '-content',
              bodyFile,
              '-noverify',
              '-out',
              path.join(dir, 'out'),
            ]);
            expect(r.status, `${JSON.stringify(options)}: ${r.stderr.toString()}`).to.equal(0);
            expect(await readFile(path.join(dir, 'out'))).to.deep.equal(body);
          }
        });
      });

      it('openssl cms -verify accepts signAttached output', async function () {
        await withTempDir(async (dir) => {
          const sigFile = path.join(dir, 'signed.der');
          await writeFile(sigFile, signAttached(body, device.certPem, device.keyPem, [ca.certPem]));
          const r = openssl(['cms', '-verify', '-binary', '-inform', 'DER', '-in', sigFile, '-noverify']);
          expect(r.status, r.stderr.toString()).to.equal(0);
          expect(r.stdout.equals(body)).to.equal(true);
        });
      });

      it('verifies what openssl cms -sign makes: sha256/384/512, no attributes, attached, BER streaming', async function () {
        await withTempDir(async (dir) => {
          const files = {
            body: path.join(dir, 'body'),
            cert: path.join(dir, 'cert.pem'),
            key: path.join(dir, 'key.pem'),
            sig: path.join(dir, 'sig.der'),
          };
          await writeFile(files.body, body);
          await writeFile(files.cert, device.certPem);
          await writeFile(files.key, device.keyPem);
          const variants: string[][] = [
            ['-md', 'sha256'],
            ['-md', 'sha384'],
            ['-md', 'sha512'],
            ['-md', 'sha1', '-noattr'],
            ['-md', 'sha256', '-nodetach'],
            ['-md', 'sha256', '-nodetach', '-stream'], // indefinite-length BER
            ['-md', 'sha256', '-stream'],
          ];
          for (const v of variants) {
            const r = openssl([
              'cms',
              '-sign',
              '-binary',
              '-in',
              files.body,
              '-signer',
              files.cert,
              '-inkey',
              files.key,
              '-outform',
              'DER',
              '-out',
              files.sig,
              ...v,
            ]);
            expect(r.status, `${v.join(' ')}: ${r.stderr.toString()}`).to.equal(0);
            const signer = verifyDetached(await readFile(files.sig), body);
            expect(signer.certificate.subject, v.join(' ')).to.contain('TEST-DEVICE');
          }
        });
      });

      it('verifies ECDSA signatures (an EC certificate made by openssl)', async function () {
        await withTempDir(async (dir) => {
          const key = path.join(dir, 'ec.key');
          const cert = path.join(dir, 'ec.pem');
          const r = openssl([
            'req',
            '-x509',
            '-newkey',
            'ec',
            '-pkeyopt',
            'ec_paramgen_curve:P-256',
            '-nodes',
            '-subj',
            '/CN=EC-DEVICE',
            '-days',
            '1',
            '-keyout',
            key,
            '-out',
            cert,
          ]);
          expect(r.status, r.stderr.toString()).to.equal(0);
          const certPem = await readFile(cert, 'utf8');
          const keyPem = await readFile(key, 'utf8');
          const cms = signDetached(body, certPem, keyPem);
          expect(verifyDetached(cms, body).certificate.subject).to.contain('EC-DEVICE');
          const sig = path.join(dir, 'sig.der');
          const bodyFile = path.join(dir, 'body');
          await writeFile(sig, cms);
          await writeFile(bodyFile, body);
          const v = openssl([
            'cms',
            '-verify',
            '-binary',
            '-inform',
            'DER',
            '-in',
            sig,
            '-content',
            bodyFile,
            '-noverify',
          ]);
          expect(v.status, v.stderr.toString()).to.equal(0);
          const tampered = Buffer.from(body);
          flip(tampered, 0, 1);
          expectSignatureError(() => verifyDetached(cms, tampered), 'digest_mismatch');
        });
      });
    });
  });
});
