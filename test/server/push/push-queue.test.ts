/**
 * The durable push queue and its worker, against each database, with a fake APNs sender and a fixed
 * clock (the worker's timers are not started: each test runs batches itself).
 */
import { expect } from 'chai';
import { createLogger } from '../../../server/log.ts';
import { ApnsPusher, type PushOptions } from '../../../server/push/apns-pusher.ts';
import type { ApnsSender, MdmPush, PushOutcome } from '../../../server/push/apns-sender.ts';
import type { ActivePushCertificate } from '../../../server/push/push-certificate-service.ts';
import { openDatabase, type Database } from '../../../server/storage/database.ts';
import { migrate } from '../../../server/storage/migrate.ts';
import { SqlPushQueueStore } from '../../../server/storage/push-store.ts';
import { SqlCommandStore, SqlDeviceStore } from '../../../server/storage/stores.ts';
import { testDatabases } from '../../helpers/databases.ts';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 0);
const TOPIC = 'com.apple.mgmt.External.0f0e0d0c-0b0a-0908-0706-050403020100';

const CERT: ActivePushCertificate = {
  version: 'test:1',
  source: 'uploaded',
  topic: TOPIC,
  certPem: 'unused by the fake sender',
  keyPem: 'unused by the fake sender',
  notBefore: new Date(T0 - 86_400_000),
  notAfter: new Date(T0 + 365 * 86_400_000),
  uploadedAt: new Date(T0),
};

/** Records every push; answers 200 unless `answer` says otherwise. */
class FakeSender implements ApnsSender {
  sent: MdmPush[] = [];
  answer: (push: MdmPush) => PushOutcome = () => ({ ok: true, status: 200, apnsId: null });
  /** runs while a batch is "in flight" */
  during: (() => Promise<void>) | null = null;

  async send(_cert: ActivePushCertificate, pushes: readonly MdmPush[]): Promise<PushOutcome[]> {
    this.sent.push(...pushes);
    if (this.during) await this.during();
    return pushes.map((p) => this.answer(p));
  }

  async close(): Promise<void> {}

  count(token: string): number {
    return this.sent.filter((p) => p.token === token).length;
  }
}

let counter = 0;
const tokenFor = (n: number) => n.toString(16).padStart(64, '0');

for (const target of testDatabases('push queue')) {
  describe(`push queue and worker (${target.name})`, function () {
    this.timeout(120_000);
    let db: Database;
    let devices: SqlDeviceStore;
    let commands: SqlCommandStore;
    let queue: SqlPushQueueStore;
    let sender: FakeSender;
    let clock: number;
    let pusher: ApnsPusher;
    const log = createLogger('silent');

    const now = () => new Date(clock);
    const makePusher = (options: Partial<PushOptions> = {}) =>
      new ApnsPusher({
        queue,
        devices,
        certificates: { active: async () => CERT },
        sender,
        log,
        now,
        random: () => 0.5,
        options,
      });

    /** An enrolled device channel (Authenticate + TokenUpdate) with its own token. */
    async function enrollment(): Promise<{ id: string; token: string }> {
      counter += 1;
      const udid = `PUSH-${process.pid}-${counter}`.toUpperCase();
      const token = tokenFor(counter + 1000 * process.pid);
      await devices.authenticate(
        {
          udid,
          platform: 'ios',
          osVersion: '17.4',
          buildVersion: '21E219',
          model: 'iPhone15,2',
          productName: 'iPhone15,2',
          serialNumber: null,
          deviceName: null,
          userEnrollment: false,
          topic: TOPIC,
          certFingerprint: `fp-${udid}`.toLowerCase(),
        },
        now(),
      );
      await tokenUpdate(udid, token);
      return { id: udid, token };
    }

    async function tokenUpdate(udid: string, token: string): Promise<void> {
      await devices.tokenUpdate(
        {
          enrollmentId: udid,
          udid,
          channel: 'device',
          appleUserId: null,
          userShortName: null,
          userLongName: null,
          topic: TOPIC,
          pushToken: token,
          pushMagic: `magic-${udid}`,
          unlockToken: null,
        },
        now(),
      );
    }

    async function queueCommand(enrollmentId: string, at: Date): Promise<void> {
      counter += 1;
      const uuid = `CMD-${process.pid}-${counter}`;
      await commands.enqueue(
        [
          {
            enrollmentId,
            udid: enrollmentId,
            commandUuid: uuid,
            requestType: 'DeviceInformation',
            bodyXml: '<plist/>',
          },
        ],
        at,
      );
    }

    before(async () => {
      db = await openDatabase(await target.url());
      await migrate(db);
      devices = new SqlDeviceStore(db);
      commands = new SqlCommandStore(db);
      queue = new SqlPushQueueStore(db);
    });

    beforeEach(async () => {
      // Each test starts with an empty queue, an hour after the previous one (no window carries over).
      clock = T0 + counter * 3_600_000;
      await db.write((t) => db.sequelize.query('DELETE FROM push_requests', { transaction: t }));
      sender = new FakeSender();
      pusher = makePusher();
    });

    after(async () => {
      await db?.close();
      await target.cleanup?.();
    });

    it('10 requests for one enrollment become one push with the MDM payload', async () => {
      const e = await enrollment();
      for (let i = 0; i < 10; i++) await pusher.pushEnrollments([e.id]);
      expect((await queue.stats(now())).pending).to.equal(1);
      expect(await pusher.runOnce()).to.equal(1);
      expect(sender.sent).to.deep.equal([{ token: e.token, pushMagic: `magic-${e.id}` }]);
      expect(await pusher.runOnce()).to.equal(0);
      expect((await queue.stats(now())).pending).to.equal(0);
      expect((await devices.getEnrollment(e.id))?.pushTokenDead).to.equal(false);
    });

    it('requests made while the push is in flight give exactly one more push, after the window', async () => {
      const e = await enrollment();
      await pusher.pushEnrollments([e.id]);
      sender.during = async () => {
        sender.during = null;
        for (let i = 0; i < 3; i++) await pusher.pushEnrollments([e.id]);
      };
      await pusher.runOnce();
      expect(sender.count(e.token)).to.equal(1);
      expect(await pusher.runOnce(), 'not before the window ends').to.equal(0);
      clock += 999;
      expect(await pusher.runOnce()).to.equal(0);
      clock += 1;
      expect(await pusher.runOnce()).to.equal(1);
      expect(sender.count(e.token)).to.equal(2);
      clock += 5000;
      expect(await pusher.runOnce()).to.equal(0);
      expect(sender.count(e.token)).to.equal(2);
    });

    it('a request inside the window of the last push waits for its end', async () => {
      const e = await enrollment();
      await pusher.pushEnrollments([e.id]);
      await pusher.runOnce();
      clock += 300;
      for (let i = 0; i < 5; i++) await pusher.pushEnrollments([e.id]);
      expect(await pusher.runOnce(), 'claimed, then deferred').to.equal(1);
      expect(sender.count(e.token)).to.equal(1);
      clock += 699;
      expect(await pusher.runOnce()).to.equal(0);
      clock += 1;
      expect(await pusher.runOnce()).to.equal(1);
      expect(sender.count(e.token)).to.equal(2);
    });

    it('410 Unregistered marks the token dead; no push until the next TokenUpdate', async () => {
      const e = await enrollment();
      sender.answer = (p) =>
        p.token === e.token
          ? { ok: false, status: 410, reason: 'Unregistered' }
          : { ok: true, status: 200, apnsId: null };
      await pusher.pushEnrollments([e.id]);
      await pusher.runOnce();
      expect(sender.count(e.token)).to.equal(1);
      expect((await devices.getEnrollment(e.id))?.pushTokenDead).to.equal(true);
      expect((await queue.stats(now())).pending, 'not retried').to.equal(0);

      clock += 10_000;
      await pusher.pushEnrollments([e.id]);
      expect(await pusher.runOnce(), 'claimed and dropped').to.equal(1);
      expect(sender.count(e.token)).to.equal(1);
      expect((await queue.stats(now())).pending).to.equal(0);

      sender.answer = () => ({ ok: true, status: 200, apnsId: null });
      await tokenUpdate(e.id, e.token);
      expect((await devices.getEnrollment(e.id))?.pushTokenDead).to.equal(false);
      await pusher.pushEnrollments([e.id]);
      await pusher.runOnce();
      expect(sender.count(e.token)).to.equal(2);
    });

    it('400 BadDeviceToken is dead too; a token replaced meanwhile is not marked', async () => {
      const e = await enrollment();
      sender.answer = () => ({ ok: false, status: 400, reason: 'BadDeviceToken' });
      await pusher.pushEnrollments([e.id]);
      sender.during = async () => {
        sender.during = null;
        await tokenUpdate(e.id, tokenFor(999_999));
      };
      await pusher.runOnce();
      expect((await devices.getEnrollment(e.id))?.pushTokenDead, 'the new token stays alive').to.equal(false);
      sender.answer = () => ({ ok: false, status: 400, reason: 'BadDeviceToken' });
      clock += 60_000;
      await pusher.pushEnrollments([e.id]);
      await pusher.runOnce();
      expect((await devices.getEnrollment(e.id))?.pushTokenDead).to.equal(true);
    });

    it('429, 5xx and connection errors are retried with exponential back-off, then delivered', async () => {
      const e = await enrollment();
      const failures: PushOutcome[] = [
        { ok: false, status: 503, reason: 'ServiceUnavailable' },
        { ok: false, status: null, reason: 'connect ECONNREFUSED 127.0.0.1:2197' },
        { ok: false, status: 429, reason: 'TooManyRequests' },
        { ok: false, status: 500, reason: 'InternalServerError' },
      ];
      sender.answer = () => failures.shift() ?? { ok: true, status: 200, apnsId: null };
      await pusher.pushEnrollments([e.id]);
      // random() = 0.5 → 75 % of base·2^(attempts−1): 750, 1500, 3000, 6000 ms
      for (const [attempt, delay] of [
        [1, 750],
        [2, 1500],
        [3, 3000],
        [4, 6000],
      ] as const) {
        expect(await pusher.runOnce()).to.equal(1);
        const stats = await queue.stats(now());
        expect(stats, `after attempt ${attempt}`).to.include({ pending: 1, retrying: 1, due: 0 });
        clock += delay - 1;
        expect(await pusher.runOnce(), `not before ${delay} ms`).to.equal(0);
        clock += 1;
      }
      expect(await pusher.runOnce()).to.equal(1);
      expect(sender.count(e.token)).to.equal(5);
      expect((await queue.stats(now())).pending).to.equal(0);
      await pusher.pushEnrollments([e.id]);
      expect(await pusher.runOnce(), 'inside the window of the delivered push').to.equal(1);
      expect(sender.count(e.token)).to.equal(5);
    });

    it('a row that keeps failing is dropped after maxAttempts', async () => {
      pusher = makePusher({ maxAttempts: 3 });
      const e = await enrollment();
      sender.answer = () => ({ ok: false, status: 403, reason: 'BadCertificate' });
      await pusher.pushEnrollments([e.id]);
      for (let i = 0; i < 3; i++) {
        await pusher.runOnce();
        clock += 10_000;
      }
      expect(sender.count(e.token)).to.equal(3);
      expect((await queue.stats(now())).pending).to.equal(0);
      expect((await devices.getEnrollment(e.id))?.pushTokenDead).to.equal(false);
    });

    it('disabled enrollments and unknown ids are dropped without a push', async () => {
      const e = await enrollment();
      await devices.checkOut(e.id, now());
      await pusher.pushEnrollments([e.id, 'NO-SUCH-ENROLLMENT']);
      expect(await pusher.runOnce()).to.equal(2);
      expect(sender.sent).to.have.length(0);
      expect((await queue.stats(now())).pending).to.equal(0);
    });

    it('concurrent claims never hand the same row to two owners; an expired lease is claimable again', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 60; i++) ids.push((await enrollment()).id);
      await queue.request(ids, now());
      const [a, b] = await Promise.all([
        queue.claim('owner-a', now(), 40, 30_000),
        queue.claim('owner-b', now(), 40, 30_000),
      ]);
      const claimedA = a.map((c) => c.enrollmentId);
      const claimedB = b.map((c) => c.enrollmentId);
      expect(
        claimedA.filter((id) => claimedB.includes(id)),
        'overlap',
      ).to.deep.equal([]);
      const c = await queue.claim('owner-c', now(), 100, 30_000);
      const all = [...claimedA, ...claimedB, ...c.map((r) => r.enrollmentId)];
      expect(new Set(all).size).to.equal(all.length);
      expect(all.sort()).to.deep.equal([...ids].sort());

      // owner-a dies: after its lease, owner-d takes its rows; owner-a's late settle changes nothing
      clock += 30_000;
      const d = await queue.claim('owner-d', now(), 100, 30_000);
      expect(d.map((r) => r.enrollmentId).sort()).to.deep.equal(all.sort());
      await queue.settle(
        'owner-a',
        { sent: claimedA, followUpAt: now(), dead: [], dropped: [], deferred: [], failed: [] },
        now(),
      );
      expect((await queue.stats(now())).pending).to.equal(60);
      await queue.settle(
        'owner-d',
        { sent: all, followUpAt: now(), dead: [], dropped: [], deferred: [], failed: [] },
        now(),
      );
      expect((await queue.stats(now())).pending).to.equal(0);
    });

    it('the sweep asks again for enabled enrollments whose old commands wait, and no others', async () => {
      const sweepMs = 300_000;
      pusher = makePusher({ sweepMs });
      const old = new Date(clock - sweepMs - 1000);
      const waiting = await enrollment();
      await queueCommand(waiting.id, old);
      const fresh = await enrollment();
      await queueCommand(fresh.id, now());
      const disabled = await enrollment();
      await queueCommand(disabled.id, old);
      await devices.checkOut(disabled.id, now());
      const dead = await enrollment();
      await queueCommand(dead.id, old);
      await queue.markTokensDead([{ enrollmentId: dead.id, pushToken: dead.token }], now());
      const pushedRecently = await enrollment();
      await queueCommand(pushedRecently.id, old);
      await queue.recordPushed([pushedRecently.id], new Date(clock - 1000));
      const alreadyRequested = await enrollment();
      await queueCommand(alreadyRequested.id, old);
      await queue.request([alreadyRequested.id], now());

      const before = new Date(clock - sweepMs);
      const candidates = await queue.sweepCandidates(before, before, 1000);
      expect(candidates).to.include(waiting.id);
      for (const other of [fresh, disabled, dead, pushedRecently, alreadyRequested]) {
        expect(candidates).not.to.include(other.id);
      }
      expect(await pusher.sweep()).to.be.at.least(1);
      await pusher.runOnce();
      expect(sender.count(waiting.token)).to.equal(1);
      expect(sender.count(alreadyRequested.token)).to.equal(1);
      expect(sender.count(fresh.token)).to.equal(0);
    });

    it('pushIfPending pushes only enrollments with unanswered commands', async () => {
      const withCommand = await enrollment();
      await queueCommand(withCommand.id, now());
      const without = await enrollment();
      await pusher.pushIfPending([withCommand.id, without.id]);
      await pusher.runOnce();
      expect(sender.count(withCommand.token)).to.equal(1);
      expect(sender.count(without.token)).to.equal(0);
    });

    it('batches are claimed oldest first, at most batchSize at a time', async () => {
      pusher = makePusher({ batchSize: 25 });
      const ids: string[] = [];
      for (let i = 0; i < 60; i++) ids.push((await enrollment()).id);
      await pusher.pushEnrollments(ids);
      expect(await pusher.runOnce()).to.equal(25);
      expect(await pusher.runOnce()).to.equal(25);
      expect(await pusher.runOnce()).to.equal(10);
      expect(await pusher.runOnce()).to.equal(0);
      expect(sender.sent).to.have.length(60);
    });
  });
}
