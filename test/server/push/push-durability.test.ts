/**
 * The push queue is in the database: a restart loses nothing, several instances share the work without
 * sending a row twice, and an uploaded certificate reaches every instance. Also measures throughput.
 */
import path from 'node:path';
import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import { generateKeyPair, issueCertificate } from '../../../shared/crypto/index.ts';
import { pushCertificateFacts } from '../../../server/push/push-certificate.ts';
import { SqlPushQueueStore } from '../../../server/storage/push-store.ts';
import { testDatabases } from '../../helpers/databases.ts';
import { startTestServer, type TestServer } from '../../helpers/test-server.ts';
import { enrollDevices, insertEnrollments, pushFixture, waitFor, type PushFixture } from './helpers.ts';

async function pendingRows(ts: TestServer): Promise<{ enrollment_id: string; attempts: number }[]> {
  const rows = await ts.server.db.sequelize.query<{ enrollment_id: string; attempts: number | string }>(
    'SELECT enrollment_id, attempts FROM push_requests',
    { type: QueryTypes.SELECT },
  );
  return rows.map((r) => ({ enrollment_id: r.enrollment_id, attempts: Number(r.attempts) }));
}

describe('push durability', function () {
  this.timeout(180_000);

  it('a restart with pushes pending loses nothing: the next server sends them', async () => {
    const fx = await pushFixture();
    const env = { MDM_DATA_DIR: fx.dataDir, MDM_APNS_URL: fx.gatewayUrl };
    let first: TestServer | null = await startTestServer(env);
    let second: TestServer | null = null;
    const [device] = await enrollDevices(first, 1);
    try {
      if (!device) throw new Error('no device');
      const unsubscribe = fx.gateway.subscribe(device.pushInfo().token, () => {
        device.connect().catch(() => undefined);
      });
      await fx.gateway.stop();
      const queued = await first.api('POST', `/devices/${device.udid}/commands`, {
        requestType: 'DeviceInformation',
        Queries: ['DeviceName'],
      });
      expect(queued.status).to.equal(201);
      const { commandUuid } = queued.json<{ commandUuid: string }>();
      const ts1 = first;
      await waitFor('a failed attempt', async () => ((await pendingRows(ts1))[0]?.attempts ?? 0) >= 1);
      const port = first.server.port;
      await first.stop();
      first = null;

      // same data dir and database, same port (the device's profile names it)
      second = await startTestServer({
        ...env,
        MDM_PORT: String(port),
        MDM_PUBLIC_URL: `https://127.0.0.1:${port}`,
      });
      expect((await pendingRows(second)).map((r) => r.enrollment_id)).to.deep.equal([device.enrollmentId()]);
      await fx.gateway.start();
      const ts2 = second;
      await waitFor(
        'acknowledged after the restart',
        async () => {
          const res = await ts2.api('GET', `/devices/${device.udid}/commands`);
          return (
            res
              .json<{ items: { commandUuid: string; status: string }[] }>()
              .items.find((c) => c.commandUuid === commandUuid)?.status === 'acknowledged'
          );
        },
        30_000,
      );
      expect(fx.accepted.get(device.pushInfo().token) ?? []).to.have.length(1);
      expect(await pendingRows(second)).to.deep.equal([]);
      unsubscribe();
    } finally {
      device?.close();
      await first?.stop();
      await second?.stop();
      await fx.cleanup();
    }
  });

  for (const target of testDatabases('push multi-instance')) {
    describe(`two instances on one database (${target.name})`, () => {
      let fx: PushFixture;
      let a: TestServer;
      let b: TestServer;

      before(async () => {
        fx = await pushFixture();
        const url =
          target.name === 'sqlite' ? `sqlite:${path.join(fx.dataDir, 'shared.sqlite')}` : await target.url();
        const env = { MDM_DATA_DIR: fx.dataDir, MDM_APNS_URL: fx.gatewayUrl, MDM_DATABASE_URL: url };
        a = await startTestServer(env);
        b = await startTestServer(env);
      });

      after(async () => {
        await a?.stop();
        await b?.stop();
        await fx?.cleanup();
        await target.cleanup?.();
      });

      it('never both send the same row: each of 2,000 enrollments gets exactly one push', async () => {
        const topic = (await a.api('GET', '/push-certificate')).json<{ topic: string }>().topic;
        const rows = await insertEnrollments(a.server.db, 2000, topic);
        const ids = rows.map((r) => r.id);
        // every row due at once, then both workers woken together: they compete for the same rows
        await new SqlPushQueueStore(a.server.db).request(ids, new Date());
        a.server.pusher.wake();
        b.server.pusher.wake();
        await waitFor('2,000 pushes', () => rows.every((r) => fx.accepted.has(r.token)), 60_000);
        await waitFor('the queue empty', async () => (await pendingRows(a)).length === 0, 30_000);
        const twice = rows.filter((r) => (fx.accepted.get(r.token)?.length ?? 0) !== 1);
        expect(twice, 'tokens pushed more than once').to.deep.equal([]);
        // (the rows are gone when a batch's transaction commits; its counters follow a moment later)
        await waitFor(
          'the counters',
          () => a.server.pusher.totals.sent + b.server.pusher.totals.sent >= 2000,
        );
        const sentA = a.server.pusher.totals.sent;
        const sentB = b.server.pusher.totals.sent;
        expect(sentA + sentB).to.equal(2000);
        console.log(`      instance A sent ${sentA}, instance B sent ${sentB}`);
      });

      it('a certificate uploaded through one instance is used by the other within seconds', async () => {
        const pki = fx.pki;
        const keys = await generateKeyPair(2048);
        const topic = (await b.api('GET', '/push-certificate')).json<{ topic: string }>().topic;
        const renewed = issueCertificate({
          kind: 'push',
          subject: { UID: topic, CN: 'renewed' },
          publicKeyPem: keys.publicKeyPem,
          issuerCertPem: pki.caCertPem,
          issuerKeyPem: pki.caKeyPem,
          days: 200,
        });
        const res = await a.api('PUT', '/push-certificate', {
          certificatePem: renewed,
          privateKeyPem: keys.privateKeyPem,
        });
        expect(res.status, res.text).to.equal(200);
        const fingerprint = pushCertificateFacts(renewed).fingerprint;
        await waitFor(
          'instance B sees it',
          async () =>
            (await b.api('GET', '/push-certificate')).json<{ fingerprint: string; source: string }>()
              .fingerprint === fingerprint,
          10_000,
        );
        // and pushes go out with it (the gateway trusts the development CA that issued it)
        const [row] = await insertEnrollments(b.server.db, 1, topic);
        if (!row) throw new Error('no enrollment');
        const sent = () => a.server.pusher.totals.sent + b.server.pusher.totals.sent;
        const sentBefore = sent();
        await b.server.pusher.pushEnrollments([row.id]);
        await waitFor('the push', () => fx.accepted.has(row.token));
        await waitFor('settled', () => sent() === sentBefore + 1);
      });
    });
  }

  describe('measure (reported, not asserted)', () => {
    it('pushes per second through the gateway for 10,000 enrollments', async () => {
      const fx = await pushFixture();
      const ts = await startTestServer({ MDM_DATA_DIR: fx.dataDir, MDM_APNS_URL: fx.gatewayUrl });
      try {
        const topic = (await ts.api('GET', '/push-certificate')).json<{ topic: string }>().topic;
        const rows = await insertEnrollments(ts.server.db, 10_000, topic);
        const started = performance.now();
        await ts.server.pusher.pushEnrollments(rows.map((r) => r.id));
        const requested = performance.now();
        await waitFor('10,000 pushes', () => ts.server.pusher.totals.sent >= 10_000, 120_000);
        const done = performance.now();
        const seconds = (done - started) / 1000;
        console.log(
          `      10,000 pushes in ${seconds.toFixed(2)} s: ${(10_000 / seconds).toFixed(0)} pushes/s ` +
            `(queueing the requests took ${(requested - started).toFixed(0)} ms; ` +
            `${ts.server.pusher.totals.batches} batches)`,
        );
        expect(fx.gateway.stats().accepted).to.equal(10_000);
      } finally {
        await ts.stop();
        await fx.cleanup();
      }
    });
  });
});
