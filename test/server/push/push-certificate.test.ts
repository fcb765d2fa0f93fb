/**
 * The push certificate: the development fallback, uploads (PEM and PKCS#12) with their validation, the
 * topic-change refusal, and a server with Apple's APNs URL (no fallback).
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import {
  createCaCertificate,
  generateKeyPair,
  issueCertificate,
  makePkcs12,
  type CertificateKind,
} from '../../../shared/crypto/index.ts';
import { ConfigError, loadConfig } from '../../../server/config.ts';
import { createLogger } from '../../../server/log.ts';
import { pushCertificateFacts } from '../../../server/push/push-certificate.ts';
import { PushCertificateService } from '../../../server/push/push-certificate-service.ts';
import { SecretBox } from '../../../server/security/secret-box.ts';
import { enrollIdentity, mdmPayload } from '../../helpers/identity.ts';
import { startTestServer, type TestServer } from '../../helpers/test-server.ts';

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, string> };
}

interface CertificateBody {
  topic: string;
  notAfter: string;
  notBefore: string;
  source: 'uploaded' | 'development';
  uploadedAt: string | null;
  fingerprint: string;
}

const APPLE_PUSH_PEM = path.resolve(
  import.meta.dirname,
  '../../../../shared/vectors/nanomdm/test__e2e__testdata__push.pem',
);

const DAY = 86_400_000;

interface Issued {
  certPem: string;
  keyPem: string;
  topic: string;
}

let ca: { certPem: string; keyPem: string };

async function issue(
  opts: {
    topic?: string | null;
    kind?: CertificateKind;
    apnsEnvironments?: ('sandbox' | 'production')[];
    notBefore?: Date;
    notAfter?: Date;
    days?: number;
  } = {},
): Promise<Issued> {
  const keys = await generateKeyPair(2048);
  const topic = opts.topic === undefined ? `com.apple.mgmt.External.${randomUUID()}` : opts.topic;
  const certPem = issueCertificate({
    kind: opts.kind ?? 'push',
    subject: topic === null ? { CN: 'no topic' } : { UID: topic, CN: `APSP:${topic.slice(-36)}` },
    publicKeyPem: keys.publicKeyPem,
    issuerCertPem: ca.certPem,
    issuerKeyPem: ca.keyPem,
    days: opts.days ?? 365,
    ...(opts.notBefore ? { notBefore: opts.notBefore } : {}),
    ...(opts.notAfter ? { notAfter: opts.notAfter } : {}),
    ...(opts.apnsEnvironments ? { apnsEnvironments: opts.apnsEnvironments } : {}),
  });
  return { certPem, keyPem: keys.privateKeyPem, topic: topic ?? '' };
}

const pem = (c: Issued) => ({ certificatePem: c.certPem, privateKeyPem: c.keyPem });

describe('push certificate (admin API)', function () {
  this.timeout(120_000);
  let ts: TestServer;
  let devTopic: string;

  before(async () => {
    const caKey = await generateKeyPair(2048);
    ca = {
      certPem: createCaCertificate({
        subject: { CN: 'Test Apple-like CA' },
        keyPem: caKey.privateKeyPem,
        days: 3650,
      }),
      keyPem: caKey.privateKeyPem,
    };
    ts = await startTestServer();
    devTopic = pushCertificateFacts(await readFile(path.join(ts.dataDir, 'certs', 'push.pem'), 'utf8')).topic;
  });

  after(async () => {
    await ts?.stop();
  });

  describe('401 without a valid bearer token', () => {
    const routes: [string, string, unknown?][] = [
      ['GET', '/push-certificate'],
      ['PUT', '/push-certificate', { certificatePem: 'x', privateKeyPem: 'y' }],
      ['POST', '/devices/ANY-UDID/push'],
    ];
    for (const [method, route, body] of routes) {
      it(`${method} ${route}`, async () => {
        for (const token of [null, 'wrong-token-wrong-token']) {
          const res = await ts.api(method, route, body, token);
          expect(res.status).to.equal(401);
          expect(res.json<ErrorBody>().error.code).to.equal('unauthorized');
        }
      });
    }
  });

  it('before any upload, GET answers the development certificate, whose topic profiles carry', async () => {
    const res = await ts.api('GET', '/push-certificate');
    expect(res.status).to.equal(200);
    const body = res.json<CertificateBody>();
    expect(body).to.include({ topic: devTopic, source: 'development', uploadedAt: null });
    expect(new Date(body.notAfter).getTime()).to.be.greaterThan(Date.now());
    const id = await enrollIdentity(ts);
    expect(mdmPayload(id.profile).Topic).to.equal(devTopic);
  });

  describe('400 for what is not a usable MDM push certificate (nothing changes)', () => {
    const cases: [string, () => Promise<unknown>, string, RegExp][] = [
      ['an empty body', async () => ({}), 'body', /certificatePem/],
      [
        'a PEM without its key',
        async () => ({ certificatePem: (await issue()).certPem }),
        'privateKeyPem',
        /./,
      ],
      ['unknown fields', async () => ({ ...pem(await issue()), extra: true }), 'body', /unrecognized|extra/i],
      [
        'text that is not PEM',
        async () => ({ certificatePem: 'hello', privateKeyPem: 'world' }),
        'certificatePem',
        /not a PEM certificate/,
      ],
      [
        'a key that is not the certificate’s',
        async () => ({ certificatePem: (await issue()).certPem, privateKeyPem: (await issue()).keyPem }),
        'privateKeyPem',
        /does not belong/,
      ],
      [
        'an expired certificate',
        async () =>
          pem(
            await issue({
              notBefore: new Date(Date.now() - 400 * DAY),
              notAfter: new Date(Date.now() - DAY),
            }),
          ),
        'certificatePem',
        /expired on/,
      ],
      [
        'a certificate not yet valid',
        async () =>
          pem(
            await issue({ notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 9 * DAY) }),
          ),
        'certificatePem',
        /not valid before/,
      ],
      [
        'no topic (no subject UID)',
        async () => pem(await issue({ topic: null, kind: 'client' })),
        'certificatePem',
        /no topic/,
      ],
      [
        'a topic that is not MDM’s',
        async () => pem(await issue({ topic: 'com.example.someapp' })),
        'certificatePem',
        /not an MDM topic/,
      ],
      [
        'only the production APNs extension (the simulator endpoint needs the development one)',
        async () => pem(await issue({ apnsEnvironments: ['production'] })),
        'certificatePem',
        /development extension/,
      ],
      [
        'a PKCS#12 with the wrong passphrase',
        async () => {
          const c = await issue();
          const p12 = makePkcs12({ certPem: c.certPem, keyPem: c.keyPem, password: 'right' });
          return { pkcs12Base64: p12.toString('base64'), passphrase: 'wrong' };
        },
        'passphrase',
        /wrong passphrase/,
      ],
      [
        'bytes that are not a PKCS#12',
        async () => ({ pkcs12Base64: Buffer.from('not a p12').toString('base64'), passphrase: '' }),
        'pkcs12Base64',
        /PKCS#12/,
      ],
      [
        'a PKCS#12 that is not base64',
        async () => ({ pkcs12Base64: '***', passphrase: '' }),
        'pkcs12Base64',
        /base64/,
      ],
    ];
    for (const [name, body, field, message] of cases) {
      it(name, async () => {
        const res = await ts.api('PUT', '/push-certificate', await body());
        expect(res.status, res.text).to.equal(400);
        const error = res.json<ErrorBody>().error;
        expect(error.details?.[field], JSON.stringify(error)).to.match(message);
        const now = await ts.api('GET', '/push-certificate');
        expect(now.json<CertificateBody>()).to.include({ source: 'development', topic: devTopic });
      });
    }

    it("Apple's real (expired) push certificate: topic read, refused as expired and production-only", async function () {
      if (!existsSync(APPLE_PUSH_PEM)) {
        console.warn(`      skipped: ${APPLE_PUSH_PEM} not present`);
        this.skip();
      }
      const applePem = readFileSync(APPLE_PUSH_PEM, 'utf8');
      const facts = pushCertificateFacts(applePem);
      expect(facts.topic).to.equal('com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9');
      expect(facts.environments).to.deep.equal({ production: true, sandbox: false });
      expect(facts.notAfter.toISOString().slice(0, 10)).to.equal('2022-02-10');
      const res = await ts.api('PUT', '/push-certificate', {
        certificatePem: applePem,
        privateKeyPem: (await issue()).keyPem,
      });
      expect(res.status).to.equal(400);
      const details = res.json<ErrorBody>().error.details ?? {};
      expect(details['certificatePem']).to.match(/expired on 2022-02-10/);
      expect(details['certificatePem']).to.match(/development extension/);
      expect(details['privateKeyPem']).to.match(/does not belong/);
    });
  });

  describe('uploads', () => {
    let first: Issued;

    it('the first upload replaces the development certificate whatever its topic', async () => {
      first = await issue();
      expect(first.topic).not.to.equal(devTopic);
      const res = await ts.api('PUT', '/push-certificate', pem(first));
      expect(res.status, res.text).to.equal(200);
      const body = res.json<CertificateBody>();
      expect(body).to.include({ topic: first.topic, source: 'uploaded' });
      expect(body.uploadedAt).to.be.a('string');
      const got = await ts.api('GET', '/push-certificate');
      expect(got.json<CertificateBody>()).to.deep.equal(body);
      // new profiles carry the new topic at once on this instance
      const id = await enrollIdentity(ts);
      expect(mdmPayload(id.profile).Topic).to.equal(first.topic);
    });

    it('the private key is stored sealed, never in clear', async () => {
      const rows = await ts.server.db.sequelize.query<{ key_sealed: string; cert_pem: string }>(
        'SELECT key_sealed, cert_pem FROM push_certificates',
        { type: QueryTypes.SELECT },
      );
      expect(rows.length).to.be.greaterThan(0);
      for (const r of rows) {
        expect(r.key_sealed).to.match(/^v1\./);
        expect(r.key_sealed).not.to.include('PRIVATE KEY');
      }
    });

    it('a renewal (same topic) replaces it', async () => {
      const renewal = await issue({ topic: first.topic, days: 700 });
      const res = await ts.api('PUT', '/push-certificate', pem(renewal));
      expect(res.status, res.text).to.equal(200);
      const body = res.json<CertificateBody>();
      expect(body.topic).to.equal(first.topic);
      expect(body.fingerprint).to.equal(pushCertificateFacts(renewal.certPem).fingerprint);
      expect(new Date(body.notAfter).getTime()).to.be.greaterThan(Date.now() + 600 * DAY);
    });

    it('another topic is refused with 409 push_topic_mismatch, then accepted with ?force=true', async () => {
      const other = await issue();
      const refused = await ts.api('PUT', '/push-certificate', pem(other));
      expect(refused.status).to.equal(409);
      const error = refused.json<ErrorBody>().error;
      expect(error.code).to.equal('push_topic_mismatch');
      expect(error.details).to.deep.equal({ currentTopic: first.topic, newTopic: other.topic });
      expect((await ts.api('GET', '/push-certificate')).json<CertificateBody>().topic).to.equal(first.topic);

      const forced = await ts.api('PUT', '/push-certificate?force=true', pem(other));
      expect(forced.status, forced.text).to.equal(200);
      expect(forced.json<CertificateBody>().topic).to.equal(other.topic);
      expect((await ts.api('GET', '/push-certificate')).json<CertificateBody>().topic).to.equal(other.topic);
      first = other;
    });

    it("a certificate without Apple's APNs extensions (e.g. for a private gateway) is accepted", async () => {
      const plain = await issue({ topic: first.topic, kind: 'client' });
      expect(pushCertificateFacts(plain.certPem).environments).to.deep.equal({
        production: false,
        sandbox: false,
      });
      const res = await ts.api('PUT', '/push-certificate', pem(plain));
      expect(res.status, res.text).to.equal(200);
      expect(res.json<CertificateBody>()).to.include({ topic: first.topic, source: 'uploaded' });
      expect(res.json<CertificateBody>().fingerprint).to.equal(
        pushCertificateFacts(plain.certPem).fingerprint,
      );
    });

    it('a PKCS#12 as node-forge makes it (3DES, SHA-1 MAC)', async () => {
      const renewal = await issue({ topic: first.topic });
      const p12 = makePkcs12({
        certPem: renewal.certPem,
        keyPem: renewal.keyPem,
        chainPems: [ca.certPem],
        password: 'pässwörd',
      });
      const res = await ts.api('PUT', '/push-certificate', {
        pkcs12Base64: p12.toString('base64'),
        passphrase: 'pässwörd',
      });
      expect(res.status, res.text).to.equal(200);
      expect(res.json<CertificateBody>().fingerprint).to.equal(
        pushCertificateFacts(renewal.certPem).fingerprint,
      );
    });

    describe('PKCS#12 files as OpenSSL and Keychain Access export them', () => {
      const variants: [string, string[]][] = [
        ['legacy: RC2-40 certificates, 3DES key, SHA-1 MAC (Keychain Access)', ['-legacy']],
        ['OpenSSL 3 default: PBES2 AES-256-CBC, SHA-256 MAC', []],
        ['no passphrase', ['-legacy']],
      ];
      for (const [name, flags] of variants) {
        it(name, async function () {
          let hasOpenssl = true;
          try {
            execFileSync('openssl', ['version'], { stdio: 'ignore' });
          } catch {
            hasOpenssl = false;
          }
          if (!hasOpenssl) {
            console.warn('      skipped: openssl not installed');
            this.skip();
          }
          const renewal = await issue({ topic: first.topic });
          const dir = await mkdtemp(path.join(os.tmpdir(), 'p12-'));
          try {
            await writeFile(path.join(dir, 'c.pem'), renewal.certPem);
            await writeFile(path.join(dir, 'k.pem'), renewal.keyPem);
            const passphrase = name === 'no passphrase' ? '' : 'secret';
            execFileSync(
              'openssl',
              [
                'pkcs12',
                '-export',
                ...flags,
                '-in',
                path.join(dir, 'c.pem'),
                '-inkey',
                path.join(dir, 'k.pem'),
                '-name',
                'Apple Push Services: com.apple.mgmt.External',
                '-out',
                path.join(dir, 'p.p12'),
                '-passout',
                `pass:${passphrase}`,
              ],
              { stdio: 'ignore' },
            );
            const p12 = await readFile(path.join(dir, 'p.p12'));
            const res = await ts.api('PUT', '/push-certificate', {
              pkcs12Base64: p12.toString('base64'),
              passphrase,
            });
            expect(res.status, res.text).to.equal(200);
            expect(res.json<CertificateBody>().fingerprint).to.equal(
              pushCertificateFacts(renewal.certPem).fingerprint,
            );
          } finally {
            await rm(dir, { recursive: true, force: true });
          }
        });
      }
    });
  });

  describe("with Apple's APNs URL (no development certificate)", () => {
    let apple: TestServer;
    before(async () => {
      apple = await startTestServer({ MDM_APNS_URL: 'https://api.push.apple.com' });
    });
    after(async () => {
      await apple?.stop();
    });

    it('GET answers 404 and enrollment 409 push_certificate_missing until an upload', async () => {
      const res = await apple.api('GET', '/push-certificate');
      expect(res.status).to.equal(404);
      expect(res.json<ErrorBody>().error.code).to.equal('not_found');
      const token = await apple.api('POST', '/enrollment-tokens', {});
      const u = new URL(token.json<{ enrollUrl: string }>().enrollUrl);
      const profile = await apple.request('GET', u.pathname + u.search);
      expect(profile.status).to.equal(409);
      expect(profile.text).to.match(/no push certificate/);
      // A bad token is still 403: the token is checked first.
      const bad = await apple.request('GET', '/mdm/enroll?token=not-a-token');
      expect(bad.status).to.equal(403);
    });

    it('an upload (with the production extension) is then in use', async () => {
      const c = await issue();
      const res = await apple.api('PUT', '/push-certificate', pem(c));
      expect(res.status, res.text).to.equal(200);
      expect((await apple.api('GET', '/push-certificate')).json<CertificateBody>()).to.include({
        topic: c.topic,
        source: 'uploaded',
      });
    });
  });
});

describe('push certificate expiry warnings and configuration', function () {
  this.timeout(60_000);

  async function logsOf(
    development: Issued | null,
    now: Date,
  ): Promise<{ level: number; msg: string; daysLeft?: number }[]> {
    const lines: string[] = [];
    const service = new PushCertificateService({
      store: {
        activeId: async () => null,
        getActive: async () => null,
        replace: async () => {
          throw new Error('not in this test');
        },
      },
      secretBox: new SecretBox('11'.repeat(32)),
      development: development ? { certPem: development.certPem, keyPem: development.keyPem } : null,
      environment: 'sandbox',
      log: createLogger('info', { write: (line: string) => lines.push(line) }),
      now: () => now,
    });
    service.start();
    try {
      for (let i = 0; i < 100 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    } finally {
      service.stop();
    }
    return lines.map((l) => JSON.parse(l) as { level: number; msg: string; daysLeft?: number });
  }

  before(async () => {
    const caKey = await generateKeyPair(2048);
    ca = {
      certPem: createCaCertificate({ subject: { CN: 'Test CA' }, keyPem: caKey.privateKeyPem, days: 3650 }),
      keyPem: caKey.privateKeyPem,
    };
  });

  it('warns 30 days ahead, errs once expired, says nothing before', async () => {
    const cert = await issue({ days: 100 });
    const notAfter = pushCertificateFacts(cert.certPem).notAfter.getTime();
    const soon = await logsOf(cert, new Date(notAfter - 12 * DAY - 1000));
    expect(soon).to.have.length(1);
    expect(soon[0]).to.include({ level: 40, daysLeft: 12 });
    expect(soon[0]?.msg).to.match(/expires soon/);
    const expired = await logsOf(cert, new Date(notAfter + 1000));
    expect(expired[0]).to.include({ level: 50 });
    expect(expired[0]?.msg).to.match(/has expired/);
    expect(await logsOf(cert, new Date(notAfter - 31 * DAY))).to.deep.equal([]);
    const none = await logsOf(null, new Date());
    expect(none[0]?.msg).to.match(/no push certificate/);
  });

  it('MDM_PUSH_SWEEP_SECONDS: default 300, validated', () => {
    expect(loadConfig({}).pushSweepSeconds).to.equal(300);
    expect(loadConfig({ MDM_PUSH_SWEEP_SECONDS: '60' }).pushSweepSeconds).to.equal(60);
    for (const bad of ['5', 'often', '100000']) {
      expect(() => loadConfig({ MDM_PUSH_SWEEP_SECONDS: bad })).to.throw(
        ConfigError,
        /MDM_PUSH_SWEEP_SECONDS/,
      );
    }
  });
});
