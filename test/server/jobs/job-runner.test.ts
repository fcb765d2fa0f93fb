import { expect } from 'chai';
import { pino } from 'pino';
import {
  backoffMs,
  done,
  fail,
  JobRunner,
  later,
  retry,
  type JobResult,
} from '../../../server/jobs/job-runner.ts';
import { openDatabase, type Database } from '../../../server/storage/database.ts';
import { SqlJobStore } from '../../../server/storage/job-store.ts';
import { migrate } from '../../../server/storage/migrate.ts';
import { testDatabases } from '../../helpers/databases.ts';
import { waitFor } from '../../helpers/wait.ts';

const log = pino({ level: 'silent' });
const fast = { pollMs: 50, leaseMs: 2000, retryBaseMs: 20, retryCapMs: 200 };

describe('backoffMs', () => {
  it('doubles per attempt, is capped and jittered into [0.5, 1)', () => {
    const opts = { retryBaseMs: 100, retryCapMs: 1000 };
    expect(backoffMs(1, opts, () => 0)).to.equal(50);
    expect(backoffMs(2, opts, () => 0)).to.equal(100);
    expect(backoffMs(3, opts, () => 0.999)).to.be.within(399, 400);
    expect(backoffMs(30, opts, () => 0)).to.equal(500);
  });
});

for (const target of testDatabases('job')) {
  describe(`durable jobs (${target.name})`, function () {
    this.timeout(120_000);
    let url: string;
    let db: Database;
    let store: SqlJobStore;
    const runners: JobRunner[] = [];

    const runner = (
      handlers: Record<string, (payload: unknown, attempts: number) => Promise<JobResult>>,
      options = {},
      s = store,
    ) => {
      const r = new JobRunner({ store: s, log, options: { ...fast, ...options } });
      for (const [kind, h] of Object.entries(handlers))
        r.register(kind, (job) => h(job.payload, job.attempts));
      runners.push(r);
      return r;
    };

    before(async () => {
      url = await target.url();
      db = await openDatabase(url);
      await migrate(db);
      store = new SqlJobStore(db);
    });
    afterEach(async () => {
      await Promise.all(runners.splice(0).map((r) => r.stop()));
    });
    after(async () => {
      await db?.close();
      await target.cleanup?.();
    });

    it('runs an enqueued job at once (in-process wake) and removes it', async () => {
      const seen: unknown[] = [];
      const r = runner({ 'test.a': async (p) => (seen.push(p), done()) }, { pollMs: 60_000 });
      r.start();
      await r.enqueue('test.a', { n: 1 }, { key: 'a-1' });
      await waitFor('the job', () => seen.length === 1);
      expect(seen).to.deep.equal([{ n: 1 }]);
      await waitFor('removal', async () => (await store.getByKey('a-1')) === null);
    });

    it('dedupes on the key while pending, and runs once more when requested while running', async () => {
      let runs = 0;
      let release: () => void = () => undefined;
      const gate = new Promise<void>((r) => (release = r));
      const r = runner({
        'test.dedupe': async () => {
          runs += 1;
          if (runs === 1) await gate;
          return done();
        },
      });
      // three requests before the runner starts: one row
      await r.enqueue('test.dedupe', {}, { key: 'd' });
      await r.enqueue('test.dedupe', {}, { key: 'd' });
      await r.enqueue('test.dedupe', {}, { key: 'd' });
      expect(await store.list('test.dedupe', 10)).to.have.length(1);
      r.start();
      await waitFor('first run', () => runs === 1);
      await r.enqueue('test.dedupe', {}, { key: 'd' }); // while it runs
      release();
      await waitFor('second run', () => runs === 2);
      await waitFor('removal', async () => (await store.getByKey('d')) === null);
      await new Promise((res) => setTimeout(res, 200));
      expect(runs).to.equal(2);
    });

    it('retries with back-off, then fails for good after maxAttempts (kept, key freed)', async () => {
      const attempts: number[] = [];
      const r = runner(
        { 'test.flaky': async (_p, a) => (attempts.push(a), retry('boom')) },
        { maxAttempts: 3 },
      );
      r.start();
      await r.enqueue('test.flaky', {}, { key: 'flaky' });
      await waitFor('failure', async () => (await store.list('test.flaky', 10))[0]?.status === 'failed');
      expect(attempts).to.deep.equal([0, 1, 2]);
      const [job] = await store.list('test.flaky', 10);
      expect(job?.lastError).to.equal('boom');
      expect(job?.key).to.equal(null);
      expect(job?.attempts).to.equal(3);
    });

    it('a throwing handler is retried; fail() is permanent at once; later() does not count', async () => {
      let throws = 0;
      let laters = 0;
      const r = runner({
        'test.throw': async () => {
          throws += 1;
          if (throws < 2) throw new Error('oops');
          return done();
        },
        'test.fail': async () => fail('no way'),
        'test.later': async (_p, a) => {
          laters += 1;
          expect(a).to.equal(0);
          return laters < 3 ? later(10, 'waiting') : done();
        },
      });
      r.start();
      await r.enqueue('test.throw', {});
      await r.enqueue('test.fail', {});
      await r.enqueue('test.later', {});
      await waitFor('throw job', () => throws === 2);
      await waitFor('later job', () => laters === 3);
      await waitFor('failed', async () => (await store.list('test.fail', 10))[0]?.status === 'failed');
      expect((await store.list('test.fail', 10))[0]?.attempts).to.equal(0);
    });

    it('two runners on one database never run the same job twice', async () => {
      const db2 = await openDatabase(url);
      try {
        const store2 = new SqlJobStore(db2);
        const runs = new Map<number, number>();
        const handler = async (p: unknown) => {
          const n = (p as { n: number }).n;
          runs.set(n, (runs.get(n) ?? 0) + 1);
          await new Promise((res) => setTimeout(res, Math.random() * 5));
          return done();
        };
        const a = runner({ 'test.many': handler }, { concurrency: 4 });
        const b = runner({ 'test.many': handler }, { concurrency: 4 }, store2);
        a.start();
        b.start();
        const total = 300;
        const batch = Array.from({ length: total }, (_, n) => ({ kind: 'test.many', payload: { n } }));
        await Promise.all([a.enqueueMany(batch.slice(0, 150)), b.enqueueMany(batch.slice(150))]);
        await waitFor('all jobs', () => runs.size === total, 60_000);
        await waitFor('empty queue', async () => (await store.list('test.many', 10)).length === 0);
        expect([...runs.values()].every((c) => c === 1)).to.equal(true);
      } finally {
        await db2.close();
      }
    });

    it('a job leased by a dead runner is taken over when its lease runs out', async () => {
      await store.enqueue(
        [{ kind: 'test.orphan', payload: '{"x":1}', key: 'orphan', runAt: new Date() }],
        new Date(),
      );
      // a runner that claims and then dies (never settles, never renews)
      // (a 3 s lease: the check below runs at most ~0.3 s after the claim, even if the claim is slow)
      const claimed = await store.claim('dead-runner.1', ['test.orphan'], new Date(), 10, 3000);
      expect(claimed.map((j) => j.key)).to.deep.equal(['orphan']);
      let ran = 0;
      const r = runner({ 'test.orphan': async () => (ran++, done()) });
      r.start();
      await new Promise((res) => setTimeout(res, 200));
      expect(ran).to.equal(0); // still leased
      await waitFor('takeover', () => ran === 1, 15_000);
      // the dead runner's late settlement changes nothing
      expect(await store.complete('dead-runner.1', claimed[0]?.id ?? '', new Date())).to.equal(false);
    });

    it('a restart loses nothing: jobs enqueued before a stop run after the next start', async () => {
      const db2 = await openDatabase(url);
      const store2 = new SqlJobStore(db2);
      const first = new JobRunner({ store: store2, log, options: fast });
      first.register('test.restart', async () => done());
      // enqueued while no runner runs, some in the future
      await first.enqueueMany(
        Array.from({ length: 20 }, (_, n) => ({
          kind: 'test.restart',
          payload: { n },
          delayMs: n % 2 === 0 ? 0 : 300,
        })),
      );
      await first.stop();
      await db2.close();
      const seen = new Set<number>();
      const r = runner({ 'test.restart': async (p) => (seen.add((p as { n: number }).n), done()) });
      r.start();
      await waitFor('every job', () => seen.size === 20);
    });

    it('wakeKeys makes waiting keyed jobs due now', async () => {
      let ran = 0;
      const r = runner({ 'test.wake': async () => (ran++, done()) });
      r.start();
      await r.enqueue('test.wake', {}, { key: 'loc:9:x', delayMs: 60_000 });
      await r.enqueue('test.wake', {}, { key: 'loc:10:x', delayMs: 60_000 });
      await new Promise((res) => setTimeout(res, 150));
      expect(ran).to.equal(0);
      await r.wakeKeys('loc:9:');
      await waitFor('woken job', () => ran === 1);
      expect((await store.getByKey('loc:10:x'))?.status).to.equal('pending');
    });
  });
}
