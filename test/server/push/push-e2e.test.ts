/**
 * End to end: the real server pushes through the simulator's APNs gateway (HTTP/2 + TLS, node-apn on the
 * server side) to simulated devices, which connect when a push reaches them and answer their commands.
 */
import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import type { SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import { startTestServer, type TestServer } from '../../helpers/test-server.ts';
import { enrollDevices, pushFixture, waitFor, type PushFixture } from './helpers.ts';

interface CommandItem {
  commandUuid: string;
  status: string;
}

/** Every time the gateway delivers a push to the device, it connects (as a real device does). */
function wakeOnPush(fx: PushFixture, device: SimulatedDevice): () => void {
  return fx.gateway.subscribe(device.pushInfo().token, () => {
    device.connect().catch(() => undefined);
  });
}

async function queueCommand(ts: TestServer, udid: string): Promise<string> {
  const res = await ts.api('POST', `/devices/${udid}/commands`, {
    requestType: 'DeviceInformation',
    Queries: ['DeviceName', 'OSVersion'],
  });
  expect(res.status, res.text).to.equal(201);
  return res.json<{ commandUuid: string }>().commandUuid;
}

async function commandStatus(ts: TestServer, udid: string, uuid: string): Promise<string | undefined> {
  const res = await ts.api('GET', `/devices/${udid}/commands?limit=1000`);
  return res.json<{ items: CommandItem[] }>().items.find((c) => c.commandUuid === uuid)?.status;
}

async function pushRow(
  ts: TestServer,
  enrollmentId: string,
): Promise<{ attempts: number; last_error: string | null } | undefined> {
  const rows = await ts.server.db.sequelize.query<{ attempts: number | string; last_error: string | null }>(
    'SELECT attempts, last_error FROM push_requests WHERE enrollment_id = :id',
    { type: QueryTypes.SELECT, replacements: { id: enrollmentId } },
  );
  const row = rows[0];
  return row ? { attempts: Number(row.attempts), last_error: row.last_error } : undefined;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

describe('push end to end (server → APNs gateway → simulated devices)', function () {
  this.timeout(180_000);
  let fx: PushFixture;
  let ts: TestServer;
  const devices: SimulatedDevice[] = [];
  const unsubscribe: (() => void)[] = [];

  before(async () => {
    fx = await pushFixture();
    ts = await startTestServer({ MDM_DATA_DIR: fx.dataDir, MDM_APNS_URL: fx.gatewayUrl });
  });

  after(async () => {
    for (const u of unsubscribe) u();
    for (const d of devices) d.close();
    await ts?.stop();
    await fx?.cleanup();
  });

  async function device(): Promise<SimulatedDevice> {
    const [d] = await enrollDevices(ts, 1);
    if (!d) throw new Error('no device');
    devices.push(d);
    unsubscribe.push(wakeOnPush(fx, d));
    return d;
  }

  it('a queued command is pushed; the device connects and acknowledges it', async () => {
    const d = await device();
    const { token, pushMagic, topic } = d.pushInfo();
    const uuid = await queueCommand(ts, d.udid);
    await waitFor('acknowledged', async () => (await commandStatus(ts, d.udid, uuid)) === 'acknowledged');
    const pushes = fx.accepted.get(token) ?? [];
    expect(pushes).to.have.length(1);
    // the gateway saw exactly the device's TokenUpdate: token hex, PushMagic, topic of its profile
    expect(pushes[0]).to.include({ token, mdm: pushMagic, topic });
    const enrollment = await ts.server.db.sequelize.query<{ last_pushed_at: unknown }>(
      'SELECT last_pushed_at FROM enrollments WHERE id = :id',
      { type: QueryTypes.SELECT, replacements: { id: d.enrollmentId() } },
    );
    expect(enrollment[0]?.last_pushed_at).to.not.equal(null);
    expect(await pushRow(ts, d.enrollmentId())).to.equal(undefined);
  });

  it('POST /devices/{udid}/push pushes every enabled channel now and answers per channel; 404 when unknown', async () => {
    const d = await device();
    const before = fx.accepted.get(d.pushInfo().token)?.length ?? 0;
    const res = await ts.api('POST', `/devices/${d.udid}/push`);
    expect(res.status, res.text).to.equal(200);
    expect(res.json()).to.deep.equal({
      results: [{ enrollmentId: d.enrollmentId(), status: 'sent', apnsStatus: 200 }],
    });
    await waitFor('the push', () => (fx.accepted.get(d.pushInfo().token)?.length ?? 0) === before + 1);
    const unknown = await ts.api('POST', '/devices/NO-SUCH-DEVICE/push');
    expect(unknown.status).to.equal(404);
    expect(unknown.json<{ error: { code: string } }>().error.code).to.equal('not_found');
  });

  it('410 Unregistered marks the token dead: no more pushes until the next TokenUpdate', async () => {
    const d = await device();
    const { token } = d.pushInfo();
    fx.gateway.setFaults({ addUnregisteredTokens: [token] });
    const received = () => fx.gateway.stats().rejectedByReason['Unregistered'] ?? 0;
    const rejectedBefore = received();
    const first = await queueCommand(ts, d.udid);
    await waitFor('the 410', () => received() === rejectedBefore + 1);
    await waitFor('the row settled', async () => (await pushRow(ts, d.enrollmentId())) === undefined);
    const now = await ts.api('POST', `/devices/${d.udid}/push`);
    expect(now.json()).to.deep.equal({
      results: [{ enrollmentId: d.enrollmentId(), status: 'skipped', reason: 'push_token_dead' }],
    });

    // another command: its push request is dropped without reaching APNs
    const receivedBefore = fx.gateway.stats().received;
    const second = await queueCommand(ts, d.udid);
    await waitFor('the request dropped', async () => (await pushRow(ts, d.enrollmentId())) === undefined);
    expect(fx.gateway.stats().received).to.equal(receivedBefore);
    expect(await commandStatus(ts, d.udid, first)).to.equal('queued');

    // the device sends a TokenUpdate (APNs knows the token again): the waiting commands go out
    fx.gateway.setFaults({ removeUnregisteredTokens: [token] });
    await d.tokenUpdate();
    await waitFor('both acknowledged', async () => {
      const [a, b] = await Promise.all([commandStatus(ts, d.udid, first), commandStatus(ts, d.udid, second)]);
      return a === 'acknowledged' && b === 'acknowledged';
    });
  });

  it('5xx answers are retried with back-off, then delivered', async () => {
    const d = await device();
    fx.gateway.setFaults({ errorRate: 1, errorStatuses: [503] });
    try {
      const rejected = () => fx.gateway.stats().rejectedByReason['ServiceUnavailable'] ?? 0;
      const before = rejected();
      const uuid = await queueCommand(ts, d.udid);
      await waitFor('two attempts', async () => ((await pushRow(ts, d.enrollmentId()))?.attempts ?? 0) >= 2);
      expect(rejected() - before).to.be.at.least(2);
      expect((await pushRow(ts, d.enrollmentId()))?.last_error).to.match(/^503 /);
      fx.gateway.resetFaults();
      await waitFor(
        'acknowledged',
        async () => (await commandStatus(ts, d.udid, uuid)) === 'acknowledged',
        30_000,
      );
    } finally {
      fx.gateway.resetFaults();
    }
  });

  it('while the gateway is down, 10 commands coalesce into one row; one push when it is back', async () => {
    const d = await device();
    const { token } = d.pushInfo();
    await fx.gateway.stop();
    let uuids: string[] = [];
    try {
      for (let i = 0; i < 10; i++) uuids.push(await queueCommand(ts, d.udid));
      await waitFor(
        'a failed attempt',
        async () => ((await pushRow(ts, d.enrollmentId()))?.attempts ?? 0) >= 1,
      );
      const count = await ts.server.db.sequelize.query<{ n: number | string }>(
        'SELECT COUNT(*) AS n FROM push_requests WHERE enrollment_id = :id',
        { type: QueryTypes.SELECT, replacements: { id: d.enrollmentId() } },
      );
      expect(Number(count[0]?.n)).to.equal(1);
    } finally {
      await fx.gateway.start();
    }
    await waitFor(
      'all acknowledged',
      async () => {
        const statuses = await Promise.all(uuids.map((u) => commandStatus(ts, d.udid, u)));
        return statuses.every((s) => s === 'acknowledged');
      },
      30_000,
    );
    expect(fx.accepted.get(token) ?? []).to.have.length(1);
    uuids = [];
  });

  it('100 devices, one command each: every one is woken and acknowledges (latency measured)', async function () {
    const many = await enrollDevices(ts, 100);
    devices.push(...many);
    const acked = new Map<string, number>();
    for (const d of many) {
      unsubscribe.push(wakeOnPush(fx, d));
      d.on('event', (e) => {
        if (e.type === 'result' && e.status === 'Acknowledged') acked.set(e.commandUuid, performance.now());
      });
    }
    const pushedAt = new Map<string, number>();
    const onAccepted = (push: { token: string }) => {
      if (!pushedAt.has(push.token)) pushedAt.set(push.token, performance.now());
    };
    fx.gateway.on('accepted', onAccepted);
    const queuedAt = new Map<string, number>();
    const tokenQueuedAt = new Map<string, number>();
    const tokenStoredAt = new Map<string, number>();
    const started = performance.now();
    await Promise.all(
      many.map(async (d) => {
        const t = performance.now();
        tokenQueuedAt.set(d.pushInfo().token, t);
        const uuid = await queueCommand(ts, d.udid);
        tokenStoredAt.set(d.pushInfo().token, performance.now());
        queuedAt.set(uuid, t);
      }),
    );
    await waitFor('100 acknowledged', () => acked.size === 100, 60_000);
    fx.gateway.off('accepted', onAccepted);
    const total = performance.now() - started;
    const sorted = (m: Map<string, number>) =>
      [...m].map(([token, t]) => (pushedAt.get(token) ?? NaN) - t).sort((a, b) => a - b);
    const toPush = sorted(tokenQueuedAt);
    const storedToPush = sorted(tokenStoredAt);
    const latencies = [...queuedAt].map(([uuid, t]) => (acked.get(uuid) ?? NaN) - t).sort((a, b) => a - b);
    expect(latencies.every((l) => Number.isFinite(l))).to.equal(true);
    console.log(
      `      enqueue → acknowledge, 100 devices at once: p50 ${percentile(latencies, 50).toFixed(0)} ms, ` +
        `p99 ${percentile(latencies, 99).toFixed(0)} ms, max ${latencies[latencies.length - 1]?.toFixed(0)} ms, ` +
        `all done in ${total.toFixed(0)} ms; enqueue → push accepted by APNs: p50 ` +
        `${percentile(toPush, 50).toFixed(0)} ms, p99 ${percentile(toPush, 99).toFixed(0)} ms; ` +
        `API answered → push accepted: p50 ${percentile(storedToPush, 50).toFixed(0)} ms, ` +
        `p99 ${percentile(storedToPush, 99).toFixed(0)} ms`,
    );
    for (const d of many) expect(fx.accepted.get(d.pushInfo().token)?.length ?? 0).to.be.at.least(1);
  });
});
