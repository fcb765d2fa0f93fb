/**
 * What node-apn puts on the wire for an MDM push, captured by a small HTTP/2 + TLS stub that checks the
 * client certificate, and how APNs answers map to outcomes.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { expect } from 'chai';
import { ensureDevPki, type DevPki } from '../../../certs/dev-pki.ts';
import { generateKeyPair, issueCertificate } from '../../../shared/crypto/index.ts';
import { createLogger } from '../../../server/log.ts';
import { classifyOutcome, retryDelayMs } from '../../../server/push/apns-pusher.ts';
import { apnsEndpoint, mdmNotification, NodeApnsSender } from '../../../server/push/apns-sender.ts';
import type { ActivePushCertificate } from '../../../server/push/push-certificate-service.ts';
import { pushCertificateFacts } from '../../../server/push/push-certificate.ts';

interface Captured {
  headers: IncomingHttpHeaders;
  body: string;
  /** SHA-256 fingerprint of the client certificate on the connection */
  client: string | null;
}

type Answer = { status: number; body?: unknown };

/** An HTTP/2 + TLS server that records requests and answers what `answer` says (200 by default). */
class StubApns {
  readonly captured: Captured[] = [];
  answer: (token: string) => Answer = () => ({ status: 200 });
  inFlight = 0;
  maxInFlight = 0;
  /** delays answers (ms), so that requests pile up */
  delayMs = 0;
  private readonly server: http2.Http2SecureServer;
  port = 0;

  constructor(pki: DevPki) {
    this.server = http2.createSecureServer({
      cert: pki.simulatorCertPem,
      key: pki.simulatorKeyPem,
      ca: [pki.caCertPem],
      requestCert: true,
      rejectUnauthorized: true,
      settings: { maxConcurrentStreams: 1000 },
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.server.on('session', (s) => s.on('error', () => undefined));
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => undefined);
    stream.on('end', () => {
      const socket = stream.session?.socket as TLSSocket | undefined;
      const peer = socket?.getPeerCertificate();
      this.captured.push({
        headers,
        body: Buffer.concat(chunks).toString('utf8'),
        client: peer && Buffer.isBuffer(peer.raw) ? new X509Certificate(peer.raw).fingerprint256 : null,
      });
      const token = String(headers[':path']).replace('/3/device/', '');
      const reply = () => {
        this.inFlight--;
        const a = this.answer(token);
        if (a.body === undefined) {
          stream.respond({ ':status': a.status, 'apns-id': '00000000-0000-4000-8000-000000000001' });
          stream.end();
        } else {
          stream.respond({ ':status': a.status, 'content-type': 'application/json' });
          stream.end(JSON.stringify(a.body));
        }
      };
      if (this.delayMs > 0) setTimeout(reply, this.delayMs);
      else reply();
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return `https://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
    });
  }
}

describe('APNs sender (node-apn on the wire)', function () {
  this.timeout(60_000);
  let dir: string;
  let pki: DevPki;
  let stub: StubApns;
  let url: string;
  let cert: ActivePushCertificate;
  const log = createLogger('silent');
  const senders: NodeApnsSender[] = [];
  const token = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 7)).toString('hex');

  function sender(extraCaPems: string[] = [pki.caCertPem], maxInFlight?: number): NodeApnsSender {
    const s = new NodeApnsSender({
      apnsUrl: url,
      extraCaPems,
      log,
      ...(maxInFlight ? { maxInFlight } : {}),
    });
    senders.push(s);
    return s;
  }

  function active(certPem: string, keyPem: string, version: string): ActivePushCertificate {
    const facts = pushCertificateFacts(certPem);
    return {
      version,
      source: 'development',
      topic: facts.topic,
      certPem,
      keyPem,
      notBefore: facts.notBefore,
      notAfter: facts.notAfter,
      uploadedAt: null,
    };
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'apns-sender-'));
    pki = await ensureDevPki(dir);
    cert = active(pki.pushCertPem, pki.pushKeyPem, 'dev:1');
    stub = new StubApns(pki);
    url = await stub.start();
  });

  afterEach(async () => {
    await Promise.all(senders.splice(0).map((s) => s.close()));
    stub.answer = () => ({ status: 200 });
    stub.captured.length = 0;
    stub.delayMs = 0;
  });

  after(async () => {
    await stub.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('sends {"mdm": PushMagic} only, to /3/device/<token hex>, with push type, topic and a 24 h expiry', async () => {
    const before = Math.floor(Date.now() / 1000);
    const [outcome] = await sender().send(cert, [{ token, pushMagic: 'A1B2C3D4-PUSH-MAGIC' }]);
    expect(outcome).to.deep.include({ ok: true, status: 200 });
    expect(stub.captured).to.have.length(1);
    const { headers, body, client } = stub.captured[0] as Captured;
    expect(headers[':method']).to.equal('POST');
    expect(headers[':path']).to.equal(`/3/device/${token}`);
    expect(token).to.match(/^[0-9a-f]{64}$/);
    expect(headers['apns-push-type']).to.equal('mdm');
    expect(headers['apns-topic']).to.equal(cert.topic);
    expect(cert.topic).to.match(/^com\.apple\.mgmt\.External\./);
    const expiration = Number(headers['apns-expiration']);
    expect(expiration).to.be.within(before + 86_400 - 5, before + 86_400 + 5);
    expect(JSON.parse(body)).to.deep.equal({ mdm: 'A1B2C3D4-PUSH-MAGIC' });
    expect(body).not.to.include('aps');
    expect(client, 'the push certificate is the TLS client certificate').to.equal(
      new X509Certificate(pki.pushCertPem).fingerprint256,
    );
  });

  it('the notification object: MDM body and headers, nothing else', () => {
    const note = mdmNotification('com.apple.mgmt.External.x', 'magic', new Date(1_900_000_000_000));
    expect((note as unknown as { compile(): string }).compile()).to.equal('{"mdm":"magic"}');
    expect((note as unknown as { headers(): unknown }).headers()).to.deep.equal({
      'apns-priority': 10,
      'apns-expiration': 1_900_000_000 + 86_400,
      'apns-topic': 'com.apple.mgmt.External.x',
      'apns-push-type': 'mdm',
    });
  });

  it("maps APNs answers to outcomes: reason from Apple's JSON body", async () => {
    const answers: Record<string, Answer> = {
      ['1'.repeat(64)]: { status: 410, body: { reason: 'Unregistered', timestamp: 1_700_000_000_000 } },
      ['2'.repeat(64)]: { status: 400, body: { reason: 'BadDeviceToken' } },
      ['3'.repeat(64)]: { status: 429, body: { reason: 'TooManyRequests' } },
      ['4'.repeat(64)]: { status: 503, body: { reason: 'ServiceUnavailable' } },
      ['5'.repeat(64)]: { status: 403, body: { reason: 'BadCertificate' } },
      ['6'.repeat(64)]: { status: 200 },
    };
    stub.answer = (t) => answers[t] ?? { status: 200 };
    const tokens = Object.keys(answers);
    const outcomes = await sender().send(
      cert,
      tokens.map((t) => ({ token: t, pushMagic: 'm' })),
    );
    expect(outcomes.map((o) => (o.ok ? 'ok' : `${o.status} ${o.reason}`))).to.deep.equal([
      '410 Unregistered',
      '400 BadDeviceToken',
      '429 TooManyRequests',
      '503 ServiceUnavailable',
      '403 BadCertificate',
      'ok',
    ]);
    expect(outcomes.map(classifyOutcome)).to.deep.equal(['dead', 'dead', 'retry', 'retry', 'retry', 'sent']);
  });

  it('node-apn does not retry by itself: one request per push, even on 500', async () => {
    stub.answer = () => ({ status: 500, body: { reason: 'InternalServerError' } });
    const [outcome] = await sender().send(cert, [{ token, pushMagic: 'm' }]);
    expect(outcome?.ok).to.equal(false);
    expect(classifyOutcome(outcome ?? { ok: true, status: 200, apnsId: null })).to.equal('retry');
    expect(stub.captured).to.have.length(1);
  });

  it('keeps at most maxInFlight streams open on the connection', async () => {
    stub.delayMs = 20;
    const pushes = Array.from({ length: 1200 }, (_, i) => ({
      token: i.toString(16).padStart(64, '0'),
      pushMagic: `m${i}`,
    }));
    stub.maxInFlight = 0;
    const outcomes = await sender([pki.caCertPem], 300).send(cert, pushes);
    expect(outcomes.filter((o) => o.ok)).to.have.length(1200);
    expect(stub.maxInFlight).to.be.at.most(300);
    expect(stub.maxInFlight).to.be.at.least(100);
  });

  it('a renewed certificate (new version) opens a new connection with it', async () => {
    const keys = await generateKeyPair(2048);
    const renewedPem = issueCertificate({
      kind: 'push',
      subject: { UID: cert.topic, CN: 'renewed' },
      publicKeyPem: keys.publicKeyPem,
      issuerCertPem: pki.caCertPem,
      issuerKeyPem: pki.caKeyPem,
      days: 30,
    });
    const s = sender();
    await s.send(cert, [{ token, pushMagic: 'm' }]);
    await s.send(active(renewedPem, keys.privateKeyPem, 'uploaded:2'), [{ token, pushMagic: 'm' }]);
    expect(stub.captured.map((c) => c.client)).to.deep.equal([
      new X509Certificate(pki.pushCertPem).fingerprint256,
      new X509Certificate(renewedPem).fingerprint256,
    ]);
  });

  it('an endpoint whose TLS certificate is not trusted fails every push, with no status', async () => {
    const outcomes = await sender([]).send(cert, [
      { token, pushMagic: 'm' },
      { token, pushMagic: 'n' },
    ]);
    expect(outcomes.map((o) => o.ok)).to.deep.equal([false, false]);
    expect(outcomes.map((o) => o.status)).to.deep.equal([null, null]);
    expect(outcomes.map(classifyOutcome)).to.deep.equal(['retry', 'retry']);
  });

  it('a refused connection fails with no status (retried later)', async () => {
    const closed = new NodeApnsSender({ apnsUrl: 'https://127.0.0.1:1', extraCaPems: [pki.caCertPem], log });
    senders.push(closed);
    const [outcome] = await closed.send(cert, [{ token, pushMagic: 'm' }]);
    expect(outcome).to.deep.include({ ok: false, status: null });
    expect(classifyOutcome(outcome ?? { ok: true, status: 200, apnsId: null })).to.equal('retry');
  });

  it("Apple's URL means production; any other is an address and port (sandbox check)", () => {
    expect(apnsEndpoint('https://api.push.apple.com')).to.deep.equal({
      apple: true,
      host: 'api.push.apple.com',
      port: 443,
    });
    expect(apnsEndpoint('https://api.push.apple.com:443/')).to.include({ apple: true });
    expect(apnsEndpoint('https://127.0.0.1:2197')).to.deep.equal({
      apple: false,
      host: '127.0.0.1',
      port: 2197,
    });
    expect(apnsEndpoint('https://api.sandbox.push.apple.com')).to.include({ apple: false });
  });

  it('back-off doubles per attempt up to the cap, with jitter in [50 %, 100 %)', () => {
    const opts = { retryBaseMs: 1000, retryCapMs: 300_000 };
    expect([1, 2, 3, 4].map((a) => retryDelayMs(a, opts, () => 0))).to.deep.equal([500, 1000, 2000, 4000]);
    expect([1, 2, 3, 4].map((a) => retryDelayMs(a, opts, () => 0.999_999))).to.deep.equal([
      1000, 2000, 4000, 8000,
    ]);
    expect(retryDelayMs(40, opts, () => 0.999_999)).to.equal(300_000);
  });
});
