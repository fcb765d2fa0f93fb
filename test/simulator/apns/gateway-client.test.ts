import http2 from 'node:http2';
import { expect } from 'chai';
import type apn from '@parse/node-apn';
import type { DevPki } from '../../../certs/dev-pki.ts';
import type { ApnsGateway, ApnsPush } from '../../../simulator/apns/gateway.ts';
import { subscribeRemote } from '../../../simulator/apns/gateway-client.ts';
import type { RemoteSubscription } from '../../../simulator/apns/gateway-client.ts';
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

describe('simulator/apns remote subscribers (event stream) and /sim endpoints', () => {
  let pki: DevPki;
  let gateway: ApnsGateway;
  let port: number;
  let url: string;
  let provider: apn.Provider;
  const subscriptions: RemoteSubscription[] = [];
  const ADMIN = 'test-admin-token-0123456789';
  const expiry = (): number => Math.floor(Date.now() / 1000) + 3600;

  before(async function () {
    this.timeout(120_000);
    pki = await devPki();
  });
  after(removeDevPki);

  beforeEach(async () => {
    ({ gateway, port, url } = await startGateway({ adminToken: ADMIN }));
    provider = makeProvider(pki, port);
  });
  afterEach(async () => {
    await Promise.all(subscriptions.splice(0).map((s) => s.close()));
    await shutdown(provider);
    await gateway.stop();
  });

  function subscribe(
    tokens: string[],
    got: ApnsPush[],
    opts: { onReady?: () => void } = {},
  ): RemoteSubscription {
    const s = subscribeRemote(url, tokens, (p) => got.push(p), {
      ca: pki.caCertPem,
      adminToken: ADMIN,
      minBackoffMs: 20,
      maxBackoffMs: 200,
      ...opts,
    });
    subscriptions.push(s);
    return s;
  }

  it('streams pushes for the subscribed tokens, and the pending ones on subscribe', async () => {
    const tokens = Array.from({ length: 3000 }, newToken);
    const [waiting, live, other] = [tokens[0] as string, tokens[1] as string, newToken()];
    await provider.send(mdmNote('waited', pki.pushTopic, { expiry: expiry() }), waiting);
    const got: ApnsPush[] = [];
    const sub = subscribe(tokens, got);
    await sub.ready;
    expect(sub.connected).to.equal(true);
    await waitFor(() => got.length === 1, 'the pending push');
    expect(got[0]).to.include({ token: waiting, mdm: 'waited', topic: pki.pushTopic });

    const result = await provider.send(mdmNote('live', pki.pushTopic, { expiry: expiry() }), [live, other]);
    expect(result.failed).to.deep.equal([]);
    await waitFor(() => got.length === 2, 'the live push');
    expect(got[1]).to.include({ token: live, mdm: 'live' });
    expect(gateway.pending(other)?.mdm).to.equal('live');
    expect(gateway.stats()).to.include({ remoteSubscriptions: 1, subscribedTokens: 3000 });
  });

  it('adds and removes tokens of an open subscription', async () => {
    const [a, b] = [newToken(), newToken()];
    const got: ApnsPush[] = [];
    const sub = subscribe([a], got);
    await sub.ready;
    await provider.send(mdmNote('for-b', pki.pushTopic, { expiry: expiry() }), b);
    await sub.addTokens([b]);
    await waitFor(() => got.length === 1, 'the push waiting for the added token');
    expect(got[0]).to.include({ token: b, mdm: 'for-b' });
    await sub.removeTokens([a]);
    await provider.send(mdmNote('for-a', pki.pushTopic, { expiry: expiry() }), a);
    expect(gateway.pending(a)?.mdm).to.equal('for-a');
    expect(got).to.have.length(1);
  });

  it('reconnects after an outage and receives what was pushed meanwhile', async () => {
    const token = newToken();
    const got: ApnsPush[] = [];
    let readyCount = 0;
    const sub = subscribe([token], got, { onReady: () => readyCount++ });
    await sub.ready;
    await gateway.stop();
    await waitFor(() => !sub.connected, 'the disconnection');
    // the server pushes again once the gateway is back; the device was unreachable meanwhile
    await gateway.start();
    const result = await provider.send(mdmNote('meanwhile', pki.pushTopic, { expiry: expiry() }), token);
    expect(result.failed).to.deep.equal([]);
    await waitFor(() => got.length === 1, 'the push after reconnecting');
    expect(got[0]).to.include({ token, mdm: 'meanwhile' });
    expect(readyCount).to.equal(2);
  });

  it('an outage through /sim/outage refuses connections, then listens again with state kept', async () => {
    const token = newToken();
    await provider.send(mdmNote('kept', pki.pushTopic, { expiry: expiry() }), token);
    const stopped = new Promise<void>((resolve) => gateway.once('stopped', () => resolve()));
    const relistened = new Promise<void>((resolve) => gateway.once('listening', () => resolve()));
    const r = await rawRequest(
      url,
      { ':method': 'POST', ':path': '/sim/outage', authorization: `Bearer ${ADMIN}` },
      // long enough that the send below surely fails inside the outage, even on a stalled machine
      JSON.stringify({ durationMs: 2000 }),
      { ca: pki.caCertPem },
    );
    expect(r.status).to.equal(202);
    await stopped;
    const during = await provider.send(mdmNote(newMagic(), pki.pushTopic), newToken());
    expect(during.sent).to.deep.equal([]);
    await relistened;
    expect(gateway.pending(token)?.mdm).to.equal('kept');
    const after = await provider.send(mdmNote(newMagic(), pki.pushTopic), newToken());
    expect(after.failed).to.deep.equal([]);
  });

  describe('/sim endpoints', () => {
    const call = (method: string, path: string, body?: unknown, token: string | null = ADMIN) =>
      rawRequest(
        url,
        { ':method': method, ':path': path, ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
        body === undefined ? undefined : JSON.stringify(body),
        { ca: pki.caCertPem },
      );

    it('needs the admin token', async () => {
      const r = await call('GET', '/sim/stats', undefined, null);
      expect(r.status).to.equal(401);
      expect(JSON.parse(r.body)).to.have.nested.property('error.code', 'unauthorized');
      expect((await call('GET', '/sim/stats', undefined, 'wrong-token-0123456789')).status).to.equal(401);
    });

    it('reads and changes faults, refusing invalid ones', async () => {
      const token = newToken();
      const patched = await call('PATCH', '/sim/faults', { addUnregisteredTokens: [token], errorRate: 0.5 });
      expect(patched.status).to.equal(200);
      expect(JSON.parse(patched.body)).to.include({ errorRate: 0.5 });
      expect(gateway.faults().unregisteredTokens).to.deep.equal([token]);

      const bad = await call('PATCH', '/sim/faults', { errorRate: 2 });
      expect(bad.status).to.equal(400);
      expect(JSON.parse(bad.body)).to.have.nested.property('error.code', 'invalid_input');
      expect(gateway.faults().errorRate).to.equal(0.5);

      const put = await call('PUT', '/sim/faults', { latencyMs: 5 });
      expect(JSON.parse(put.body)).to.deep.equal({
        unregisteredTokens: [],
        errorRate: 0,
        errorStatuses: [500, 503],
        latencyMs: 5,
        tooManyRequestsUntil: null,
      });
    });

    it('reports stats and pending pushes', async () => {
      const token = newToken();
      await provider.send(mdmNote('p', pki.pushTopic, { expiry: expiry() }), token);
      const stats = JSON.parse((await call('GET', '/sim/stats')).body) as Record<string, unknown>;
      expect(stats).to.include({ received: 1, accepted: 1, stored: 1, pending: 1 });
      const pending = await call('GET', `/sim/pending/${token}`);
      expect(pending.status).to.equal(200);
      expect(JSON.parse(pending.body)).to.include({ token, mdm: 'p', topic: pki.pushTopic });
      expect((await call('GET', `/sim/pending/${newToken()}`)).status).to.equal(404);
    });

    it('validates, updates and deletes subscriptions; one stream each', async () => {
      const bad = await call('POST', '/sim/subscriptions', { tokens: ['nope'] });
      expect(bad.status).to.equal(400);
      const created = await call('POST', '/sim/subscriptions', { tokens: [newToken()] });
      expect(created.status).to.equal(201);
      const { id } = JSON.parse(created.body) as { id: string };
      expect((await call('GET', `/sim/subscriptions/${newToken()}/events`)).status).to.equal(404);
      const patched = await call('PATCH', `/sim/subscriptions/${id}`, { add: [newToken()] });
      expect(JSON.parse(patched.body)).to.deep.equal({ id, tokens: 2 });
      // one stream per subscription
      const session = http2.connect(url, { ca: pki.caCertPem });
      try {
        const first = session.request({
          ':method': 'GET',
          ':path': `/sim/subscriptions/${id}/events`,
          authorization: `Bearer ${ADMIN}`,
        });
        const firstStatus = await new Promise<number>((resolve) =>
          first.once('response', (h) => resolve(Number(h[':status']))),
        );
        expect(firstStatus).to.equal(200);
        expect((await call('GET', `/sim/subscriptions/${id}/events`)).status).to.equal(409);
        // deleting ends the open stream
        const ended = new Promise<void>((resolve) => first.once('close', () => resolve()));
        first.resume();
        expect((await call('DELETE', `/sim/subscriptions/${id}`)).status).to.equal(204);
        await ended;
      } finally {
        session.destroy();
      }
      expect((await call('DELETE', `/sim/subscriptions/${id}`)).status).to.equal(404);
    });
  });
});
