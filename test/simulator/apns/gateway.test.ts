import { expect } from 'chai';
import apn from '@parse/node-apn';
import { issueCertificate, createCaCertificate, generateKeyPair } from '../../../shared/crypto/index.ts';
import type { ApnsGateway, ApnsPush } from '../../../simulator/apns/gateway.ts';
import type { DevPki } from '../../../certs/dev-pki.ts';
import {
  devPki,
  makeProvider,
  mdmNote,
  newMagic,
  newToken,
  rawRequest,
  removeDevPki,
  shutdown,
  startGateway,
  waitFor,
} from './helpers.ts';

describe('simulator/apns ApnsGateway with node-apn', () => {
  let pki: DevPki;
  let gateway: ApnsGateway;
  let port: number;
  let url: string;
  let provider: apn.Provider;
  let now: number;

  before(async function () {
    this.timeout(120_000);
    pki = await devPki();
  });
  after(removeDevPki);

  beforeEach(async () => {
    now = Date.now();
    ({ gateway, port, url } = await startGateway({ clock: () => now }));
    provider = makeProvider(pki, port);
  });
  afterEach(async () => {
    await shutdown(provider);
    await gateway.stop();
  });

  const inAnHour = (): number => Math.floor(now / 1000) + 3600;

  it('accepts a valid MDM push and delivers it to an in-process subscriber', async () => {
    const token = newToken();
    const magic = newMagic();
    const got: ApnsPush[] = [];
    gateway.subscribe(token, (p) => got.push(p));
    const result = await provider.send(mdmNote(magic, pki.pushTopic, { expiry: inAnHour() }), token);
    expect(result.failed).to.deep.equal([]);
    expect(result.sent).to.have.length(1);
    const apnsId = (result.sent[0] as unknown as Record<string, unknown>)['apns-id'];
    expect(apnsId).to.match(/^[0-9a-f-]{36}$/i);
    expect(got).to.deep.equal([{ token, mdm: magic, topic: pki.pushTopic, id: apnsId }]);
    const s = gateway.stats();
    expect(s).to.include({ received: 1, accepted: 1, delivered: 1, rejected: 0, pending: 0 });
  });

  it('echoes the apns-id of the request', async () => {
    const note = mdmNote(newMagic(), pki.pushTopic);
    note.id = '123e4567-e89b-12d3-a456-426614174000';
    const result = await provider.send(note, newToken());
    expect((result.sent[0] as unknown as Record<string, unknown>)['apns-id']).to.equal(note.id);
  });

  describe('rejects with Apple reasons as node-apn reports them', () => {
    const cases: Array<{
      name: string;
      note: () => apn.Notification;
      token?: string;
      status: number;
      reason: string;
    }> = [
      {
        name: 'a topic other than the certificate’s',
        note: () => mdmNote(newMagic(), 'com.apple.mgmt.External.someone-else'),
        status: 400,
        reason: 'TopicDisallowed',
      },
      {
        name: 'a malformed topic',
        note: () => mdmNote(newMagic(), 'not a topic'),
        status: 400,
        reason: 'BadTopic',
      },
      {
        name: 'no topic',
        note: () => {
          const n = mdmNote(newMagic(), pki.pushTopic);
          n.topic = '';
          return n;
        },
        status: 400,
        reason: 'MissingTopic',
      },
      {
        name: 'a short token',
        note: () => mdmNote(newMagic(), pki.pushTopic),
        token: 'abcd',
        status: 400,
        reason: 'BadDeviceToken',
      },
      {
        name: 'a non-hex token',
        note: () => mdmNote(newMagic(), pki.pushTopic),
        token: 'z'.repeat(64),
        status: 400,
        reason: 'BadDeviceToken',
      },
      {
        name: 'push type alert',
        note: () => mdmNote(newMagic(), pki.pushTopic, { pushType: 'alert' }),
        status: 400,
        reason: 'InvalidPushType',
      },
      {
        name: 'no push type',
        note: () => {
          const n = mdmNote(newMagic(), pki.pushTopic);
          n.pushType = undefined as unknown as apn.NotificationPushType;
          return n;
        },
        status: 400,
        reason: 'InvalidPushType',
      },
      {
        name: 'a fractional expiration',
        note: () => mdmNote(newMagic(), pki.pushTopic, { expiry: 1.5 }),
        status: 400,
        reason: 'BadExpirationDate',
      },
      {
        name: 'an alert payload instead of mdm',
        note: () => {
          const n = new apn.Notification();
          n.topic = pki.pushTopic;
          n.pushType = 'mdm';
          n.alert = 'hello';
          return n;
        },
        status: 400,
        reason: 'BadPayload',
      },
      {
        name: 'a payload over 4096 bytes',
        note: () => mdmNote('x'.repeat(5000), pki.pushTopic),
        status: 413,
        reason: 'PayloadTooLarge',
      },
    ];
    for (const c of cases) {
      it(`${c.name} → ${c.status} ${c.reason}`, async () => {
        const token = c.token ?? newToken();
        const result = await provider.send(c.note(), token);
        expect(result.sent).to.deep.equal([]);
        expect(result.failed).to.have.length(1);
        const f = result.failed[0] as apn.ResponseFailure;
        expect(f.device).to.equal(token);
        expect(f.status).to.equal(c.status);
        expect(f.response?.reason).to.equal(c.reason);
        expect(gateway.stats().rejectedByReason).to.deep.equal({ [c.reason]: 1 });
      });
    }
  });

  it('answers 410 Unregistered with a timestamp for a configured token, and 200 again once removed', async () => {
    const token = newToken();
    gateway.setFaults({ unregisteredTokens: [token.toUpperCase()] });
    const rejected: string[] = [];
    gateway.on('rejected', (r) => rejected.push(`${r.status} ${r.reason}`));
    const result = await provider.send(mdmNote(newMagic(), pki.pushTopic), token);
    const f = result.failed[0] as apn.ResponseFailure;
    expect(f.status).to.equal(410);
    expect(f.response?.reason).to.equal('Unregistered');
    expect(f.response?.timestamp).to.equal(now);
    expect(rejected).to.deep.equal(['410 Unregistered']);
    expect(gateway.faults().unregisteredTokens).to.deep.equal([token]);

    gateway.setFaults({ removeUnregisteredTokens: [token] });
    const again = await provider.send(mdmNote(newMagic(), pki.pushTopic), token);
    expect(again.failed).to.deep.equal([]);
  });

  it('keeps one pending push per token until a subscriber comes (the newest wins)', async () => {
    const token = newToken();
    const first = await provider.send(mdmNote('first', pki.pushTopic, { expiry: inAnHour() }), token);
    const second = await provider.send(mdmNote('second', pki.pushTopic, { expiry: inAnHour() }), token);
    expect(first.failed.concat(second.failed)).to.deep.equal([]);
    expect(gateway.pending(token)).to.include({
      mdm: 'second',
      topic: pki.pushTopic,
      expiration: inAnHour(),
    });
    expect(gateway.stats()).to.include({ stored: 2, replaced: 1, pending: 1, delivered: 0 });

    const got: ApnsPush[] = [];
    const unsubscribe = gateway.subscribe(token, (p) => got.push(p));
    await waitFor(() => got.length === 1, 'the pending push');
    expect(got[0]).to.include({ mdm: 'second', token });
    expect(gateway.pending(token)).to.equal(undefined);

    unsubscribe();
    await provider.send(mdmNote('third', pki.pushTopic, { expiry: inAnHour() }), token);
    expect(got).to.have.length(1);
    expect(gateway.pending(token)?.mdm).to.equal('third');
  });

  it('drops a pending push once its expiration passes', async () => {
    const token = newToken();
    const expired: string[] = [];
    gateway.on('expired', (p) => expired.push(p.mdm));
    await provider.send(mdmNote('soon', pki.pushTopic, { expiry: Math.floor(now / 1000) + 10 }), token);
    expect(gateway.pending(token)?.mdm).to.equal('soon');
    now += 11_000;
    expect(gateway.pending(token)).to.equal(undefined);
    expect(expired).to.deep.equal(['soon']);
    expect(gateway.stats()).to.include({ expired: 1, pending: 0 });

    const got: ApnsPush[] = [];
    gateway.subscribe(token, (p) => got.push(p));
    await new Promise((r) => setImmediate(r));
    expect(got).to.deep.equal([]);
  });

  it('stores nothing for apns-expiration 0 or none when no subscriber is there', async () => {
    const a = newToken();
    const b = newToken();
    await provider.send(mdmNote('zero', pki.pushTopic, { expiry: 0 }), a);
    await provider.send(mdmNote('none', pki.pushTopic), b);
    expect(gateway.pending(a)).to.equal(undefined);
    expect(gateway.pending(b)).to.equal(undefined);
    expect(gateway.stats()).to.include({ accepted: 2, dropped: 2, stored: 0 });
  });

  it('keeps pending pushes across stop() and start() on the same port', async () => {
    const token = newToken();
    await provider.send(mdmNote('kept', pki.pushTopic, { expiry: inAnHour() }), token);
    await gateway.stop();
    const refused = await provider.send(
      mdmNote('refused', pki.pushTopic, { expiry: inAnHour() }),
      newToken(),
    );
    expect(refused.sent).to.deep.equal([]);
    expect(refused.failed[0]?.error).to.be.instanceOf(Error);
    const again = await gateway.start();
    expect(again.port).to.equal(port);
    expect(again.url).to.equal(url);
    expect(gateway.pending(token)?.mdm).to.equal('kept');
    const result = await provider.send(mdmNote('after', pki.pushTopic, { expiry: inAnHour() }), newToken());
    expect(result.failed).to.deep.equal([]);
  });

  it('answers a share of pushes with 500/503 (node-apn retries them, then reports)', async () => {
    gateway.setFaults({ errorRate: 1, errorStatuses: [503] });
    const tokens = [newToken(), newToken()];
    const result = await provider.send(mdmNote(newMagic(), pki.pushTopic), tokens);
    expect(result.sent).to.deep.equal([]);
    expect(result.failed.map((f) => [f.status, f.response?.reason])).to.deep.equal([
      [503, 'ServiceUnavailable'],
      [503, 'ServiceUnavailable'],
    ]);
    // node-apn tries each push 1 + connectionRetryLimit (3) times
    expect(gateway.stats()).to.include({ received: 8, rejected: 8, accepted: 0 });

    gateway.setFaults({ errorStatuses: [500] });
    const five = await provider.send(mdmNote(newMagic(), pki.pushTopic), newToken());
    const f = five.failed[0] as apn.ResponseFailure;
    // for 500 InternalServerError node-apn replaces the response with an Error
    expect(f.status).to.equal(500);
    expect(f.error?.message).to.match(/500/);

    gateway.setFaults({ errorRate: 0 });
    const ok = await provider.send(mdmNote(newMagic(), pki.pushTopic), newToken());
    expect(ok.failed).to.deep.equal([]);
  });

  it('answers a share of pushes with 5xx at the configured rate', async () => {
    // 503 only: after a final 500 node-apn closes the whole session, failing the other pushes in flight
    const g = await startGateway({ faults: { errorRate: 0.25, errorStatuses: [503] } });
    const p = makeProvider(pki, g.port, { connectionRetryLimit: 0 });
    try {
      const tokens = Array.from({ length: 400 }, newToken);
      const result = await p.send(mdmNote(newMagic(), pki.pushTopic), tokens);
      expect(result.sent.length + result.failed.length).to.equal(400);
      expect(result.failed.length).to.be.within(50, 150);
      for (const f of result.failed)
        expect([f.status, f.response?.reason]).to.deep.equal([503, 'ServiceUnavailable']);
      expect(g.gateway.stats().rejectedByReason).to.deep.equal({ ServiceUnavailable: result.failed.length });
    } finally {
      await shutdown(p);
      await g.gateway.stop();
    }
  });

  it('answers 429 TooManyRequests for a while', async () => {
    gateway.setFaults({ tooManyRequestsForMs: 5000 });
    const result = await provider.send(mdmNote(newMagic(), pki.pushTopic), newToken());
    expect(result.failed[0]?.status).to.equal(429);
    expect(result.failed[0]?.response?.reason).to.equal('TooManyRequests');
    expect(gateway.faults().tooManyRequestsUntil).to.equal(new Date(now + 5000).toISOString());
    now += 5001;
    const later = await provider.send(mdmNote(newMagic(), pki.pushTopic), newToken());
    expect(later.failed).to.deep.equal([]);
  });

  it('adds the configured latency', async () => {
    gateway.setFaults({ latencyMs: { minMs: 150, maxMs: 200 } });
    const started = Date.now();
    const result = await provider.send(mdmNote(newMagic(), pki.pushTopic), newToken());
    expect(result.failed).to.deep.equal([]);
    expect(Date.now() - started).to.be.at.least(145);
  });

  it('accepts 1,000 pushes in one send call', async () => {
    const tokens = Array.from({ length: 1000 }, newToken);
    let delivered = 0;
    for (const t of tokens.slice(0, 500)) gateway.subscribe(t, () => delivered++);
    const result = await provider.send(mdmNote(newMagic(), pki.pushTopic, { expiry: inAnHour() }), tokens);
    expect(result.failed).to.deep.equal([]);
    expect(result.sent).to.have.length(1000);
    expect(delivered).to.equal(500);
    expect(gateway.stats()).to.include({ accepted: 1000, delivered: 500, stored: 500, pending: 500 });
  });

  describe('client certificates', () => {
    const pushHeaders = (token: string) => ({
      ':method': 'POST',
      ':path': `/3/device/${token}`,
      'apns-topic': pki.pushTopic,
      'apns-push-type': 'mdm',
    });

    it('answers 403 MissingProviderToken without a client certificate', async () => {
      const r = await rawRequest(url, pushHeaders(newToken()), '{"mdm":"x"}', { ca: pki.caCertPem });
      expect(r.status).to.equal(403);
      expect(JSON.parse(r.body)).to.deep.equal({ reason: 'MissingProviderToken' });
      expect(r.headers['apns-id']).to.match(/^[0-9a-f-]{36}$/);
    });

    it('answers 403 InvalidProviderToken to token authentication (MDM uses certificates)', async () => {
      const r = await rawRequest(
        url,
        { ...pushHeaders(newToken()), authorization: 'bearer abc' },
        '{"mdm":"x"}',
        { ca: pki.caCertPem },
      );
      expect(r.status).to.equal(403);
      expect(JSON.parse(r.body)).to.deep.equal({ reason: 'InvalidProviderToken' });
    });

    it('answers 403 BadCertificate to a certificate that is not a push certificate', async () => {
      const r = await rawRequest(url, pushHeaders(newToken()), '{"mdm":"x"}', {
        ca: pki.caCertPem,
        cert: pki.simulatorCertPem,
        key: pki.simulatorKeyPem,
      });
      expect(r.status).to.equal(403);
      expect(JSON.parse(r.body)).to.deep.equal({ reason: 'BadCertificate' });
    });

    it('answers 403 BadCertificate through node-apn to a push certificate from another CA', async function () {
      this.timeout(60_000);
      const [caKey, pushKey] = await Promise.all([generateKeyPair(2048), generateKeyPair(2048)]);
      const otherCa = createCaCertificate({
        subject: { CN: 'Other CA' },
        keyPem: caKey.privateKeyPem,
        days: 10,
      });
      const otherPush = issueCertificate({
        kind: 'push',
        subject: { CN: 'APSP:other', UID: pki.pushTopic },
        publicKeyPem: pushKey.publicKeyPem,
        issuerCertPem: otherCa,
        issuerKeyPem: caKey.privateKeyPem,
        days: 10,
      });
      const p = makeProvider(pki, port, { cert: otherPush, key: pushKey.privateKeyPem });
      try {
        const result = await p.send(mdmNote(newMagic(), pki.pushTopic), newToken());
        expect(result.failed[0]?.status).to.equal(403);
        expect(result.failed[0]?.response?.reason).to.equal('BadCertificate');
      } finally {
        await shutdown(p);
      }
    });
  });

  it('answers 404 BadPath and 405 MethodNotAllowed', async () => {
    const tls = { ca: pki.caCertPem, cert: pki.pushCertPem, key: pki.pushKeyPem };
    const bad = await rawRequest(url, { ':method': 'POST', ':path': '/2/device/x' }, '{}', tls);
    expect([bad.status, JSON.parse(bad.body)]).to.deep.equal([404, { reason: 'BadPath' }]);
    const get = await rawRequest(
      url,
      { ':method': 'GET', ':path': `/3/device/${newToken()}` },
      undefined,
      tls,
    );
    expect([get.status, JSON.parse(get.body)]).to.deep.equal([405, { reason: 'MethodNotAllowed' }]);
    const empty = await rawRequest(
      url,
      {
        ':method': 'POST',
        ':path': `/3/device/${newToken()}`,
        'apns-topic': pki.pushTopic,
        'apns-push-type': 'mdm',
      },
      '',
      tls,
    );
    expect([empty.status, JSON.parse(empty.body)]).to.deep.equal([400, { reason: 'PayloadEmpty' }]);
  });
});
