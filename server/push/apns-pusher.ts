import { randomBytes } from 'node:crypto';
import type { DeviceStore } from '../checkin/store.ts';
import type { Pusher } from '../commands/pusher.ts';
import { PushCertificateMissingError } from '../enrollment/enrollment-service.ts';
import type { Logger } from '../log.ts';
import type { ApnsSender, MdmPush, PushOutcome } from './apns-sender.ts';
import type { ActivePushCertificate } from './push-certificate-service.ts';
import type { ClaimedPush, PushQueueStore, PushSettlement } from './store.ts';

export interface PushOptions {
  /** rows claimed and sent together (all in flight at once on the HTTP/2 connection) */
  batchSize: number;
  /** batches in flight at once: the next claim overlaps the sending of the previous batch */
  parallelBatches: number;
  /** how often the queue is looked at for rows from other instances, restarts and retries */
  pollMs: number;
  /** at most one push per enrollment per window; requests inside it become one push at its end */
  coalesceMs: number;
  /** how long a claim holds; an instance that dies leaves its rows to others after it */
  leaseMs: number;
  retryBaseMs: number;
  retryCapMs: number;
  /** a row that failed this often is dropped (the sweep asks again while commands wait) */
  maxAttempts: number;
  /** how often the sweep runs, and how old an unanswered command and the last push must be */
  sweepMs: number;
  /** enrollments re-requested per sweep at most */
  sweepLimit: number;
}

export const DEFAULT_PUSH_OPTIONS: Readonly<PushOptions> = Object.freeze({
  batchSize: 500,
  parallelBatches: 2,
  pollMs: 1000,
  coalesceMs: 1000,
  leaseMs: 60_000,
  retryBaseMs: 1000,
  retryCapMs: 5 * 60_000,
  maxAttempts: 100,
  sweepMs: 5 * 60_000,
  sweepLimit: 10_000,
});

/** What happened to one channel on `POST /devices/{udid}/push`. */
export interface PushNowResult {
  enrollmentId: string;
  status: 'sent' | 'failed' | 'skipped';
  apnsStatus?: number;
  reason?: string;
}

export type OutcomeClass = 'sent' | 'dead' | 'retry';

/** Reasons that mean this token will never work again (until the device sends a new one). */
const DEAD_REASONS = new Set(['BadDeviceToken', 'DeviceTokenNotForTopic', 'Unregistered', 'ExpiredToken']);

/**
 * 200 → sent. 410 (Unregistered, ExpiredToken), 400 BadDeviceToken / DeviceTokenNotForTopic → the token is
 * dead: never retried. Anything else (429, 5xx, no answer, certificate or topic problems that a renewal
 * fixes) → retried with back-off.
 */
export function classifyOutcome(outcome: PushOutcome): OutcomeClass {
  if (outcome.ok) return 'sent';
  if (outcome.status === 410) return 'dead';
  if (outcome.status === 400 && DEAD_REASONS.has(outcome.reason)) return 'dead';
  return 'retry';
}

/** Exponential back-off with jitter: base·2^(attempts−1), capped, then scaled by [0.5, 1). */
export function retryDelayMs(
  attempts: number,
  opts: Pick<PushOptions, 'retryBaseMs' | 'retryCapMs'>,
  random: () => number,
): number {
  const exp = Math.min(opts.retryCapMs, opts.retryBaseMs * 2 ** Math.min(30, Math.max(0, attempts - 1)));
  return Math.round(exp * (0.5 + random() * 0.5));
}

const TOKEN_HEX = /^[0-9a-f]{16,200}$/;

interface CertificateSource {
  active(): Promise<ActivePushCertificate | null>;
}

/**
 * The durable `Pusher`: a request becomes (or joins) a `push_requests` row; a worker claims due rows in
 * batches, sends them over one HTTP/2 connection and settles the outcome (delete, retry later, or mark the
 * token dead). In-process requests wake the worker at once; a poll finds rows of other instances,
 * retries and leftovers of a restart. A slow sweep asks again for enrollments whose commands wait.
 */
export class ApnsPusher implements Pusher {
  private readonly opts: PushOptions;
  /** unique per process: claims are `<owner>.<n>` */
  private readonly owner = randomBytes(8).toString('hex');
  private claims = 0;
  private started = false;
  private stopped = false;
  private running: Promise<void> | null = null;
  private again = false;
  private pollTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private wakeTimer: { at: number; timer: NodeJS.Timeout } | null = null;
  private lastNoCertificateWarning = 0;
  /** Running totals of this instance's worker (for monitoring and tests). */
  readonly totals = { batches: 0, claimed: 0, sent: 0, failed: 0, dead: 0, dropped: 0, deferred: 0 };

  constructor(
    private readonly deps: {
      queue: PushQueueStore;
      devices: DeviceStore;
      certificates: CertificateSource;
      sender: ApnsSender;
      log: Logger;
      options?: Partial<PushOptions>;
      now?: () => Date;
      random?: () => number;
    },
  ) {
    this.opts = { ...DEFAULT_PUSH_OPTIONS, ...deps.options };
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  async pushEnrollments(enrollmentIds: string[]): Promise<void> {
    if (enrollmentIds.length === 0) return;
    await this.deps.queue.request(enrollmentIds, this.now());
    this.wake();
  }

  /**
   * Asks for a push to those of these enrollments that have unanswered commands: after a TokenUpdate
   * (a new token, or one that was dead), the commands that waited meanwhile go out without the sweep.
   */
  async pushIfPending(enrollmentIds: readonly string[]): Promise<void> {
    const pending = await this.deps.queue.withUnanswered(enrollmentIds);
    if (pending.length > 0) await this.pushEnrollments(pending);
  }

  /** Starts the worker (poll) and the sweep. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.pollTimer = setInterval(() => this.wake(), this.opts.pollMs);
    this.pollTimer.unref();
    this.sweepTimer = setInterval(() => {
      this.sweep().catch((err: unknown) => this.deps.log.error({ err }, 'push sweep failed'));
    }, this.opts.sweepMs);
    this.sweepTimer.unref();
    this.wake();
  }

  /** Stops the timers and waits for the batch in flight (its rows are settled, or their lease runs out). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.wakeTimer) clearTimeout(this.wakeTimer.timer);
    this.pollTimer = this.sweepTimer = this.wakeTimer = null;
    await this.running;
  }

  /** Runs the worker now (or once more right after the batch in flight). */
  wake(): void {
    if (!this.started || this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.cycle().finally(() => {
      this.running = null;
    });
  }

  private wakeAt(at: Date): void {
    if (!this.started || this.stopped) return;
    const ms = at.getTime() - Date.now();
    if (this.wakeTimer && this.wakeTimer.at <= at.getTime()) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer.timer);
    const timer = setTimeout(
      () => {
        this.wakeTimer = null;
        this.wake();
      },
      Math.max(0, ms),
    );
    timer.unref();
    this.wakeTimer = { at: at.getTime(), timer };
  }

  /**
   * Claims batches while rows are due, up to `parallelBatches` in flight (the next claim overlaps the
   * sending of the previous batch), and once more when woken meanwhile.
   */
  private async cycle(): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    try {
      for (;;) {
        this.again = false;
        while (!this.stopped) {
          while (inFlight.size >= this.opts.parallelBatches) await Promise.race(inFlight);
          const batch = await this.startBatch();
          if (!batch) break;
          const done: Promise<void> = batch.done
            .catch((err: unknown) =>
              this.deps.log.error({ err }, 'push batch failed; its rows wait for their lease'),
            )
            .finally(() => inFlight.delete(done));
          inFlight.add(done);
          // A short batch may mean a race lost to another instance, not an empty queue: look again
          // (a probe that finds nothing due costs one read).
        }
        if (this.again && !this.stopped) continue;
        await Promise.all(inFlight);
        if (!this.again || this.stopped) break;
      }
    } catch (err) {
      this.deps.log.error({ err }, 'push worker failed; trying again at the next poll');
    } finally {
      await Promise.all(inFlight);
    }
  }

  /** Claims and sends one batch of due rows, and settles it. Returns how many rows it claimed. */
  async runOnce(): Promise<number> {
    const batch = await this.startBatch();
    if (!batch) return 0;
    await batch.done;
    return batch.claimed;
  }

  /** Claims a batch; `done` settles when it is sent and settled. Null when nothing is due (or no certificate). */
  private async startBatch(): Promise<{ claimed: number; done: Promise<void> } | null> {
    const cert = await this.deps.certificates.active();
    if (!cert) {
      if (Date.now() - this.lastNoCertificateWarning > 60_000) {
        this.lastNoCertificateWarning = Date.now();
        this.deps.log.warn('pushes wait: no push certificate');
      }
      return null;
    }
    const started = Date.now();
    const claimNow = this.now();
    const owner = `${this.owner}.${++this.claims}`;
    const claimed = await this.deps.queue.claim(owner, claimNow, this.opts.batchSize, this.opts.leaseMs);
    if (claimed.length === 0) return null;
    return { claimed: claimed.length, done: this.finishBatch(cert, owner, claimed, claimNow, started) };
  }

  private async finishBatch(
    cert: ActivePushCertificate,
    owner: string,
    claimed: ClaimedPush[],
    claimNow: Date,
    started: number,
  ): Promise<void> {
    const settlement: PushSettlement = {
      sent: [],
      followUpAt: claimNow,
      dead: [],
      dropped: [],
      deferred: [],
      failed: [],
    };
    const toSend: { claim: ClaimedPush & { pushToken: string }; push: MdmPush }[] = [];
    for (const c of claimed) {
      if (!c.enabled || c.pushTokenDead || !c.pushToken || !c.pushMagic || !TOKEN_HEX.test(c.pushToken)) {
        settlement.dropped.push(c.enrollmentId);
        continue;
      }
      const windowEnd = c.lastPushedAt ? c.lastPushedAt.getTime() + this.opts.coalesceMs : 0;
      if (windowEnd > claimNow.getTime()) {
        settlement.deferred.push({ enrollmentId: c.enrollmentId, dueAt: new Date(windowEnd) });
        continue;
      }
      toSend.push({
        claim: { ...c, pushToken: c.pushToken },
        push: { token: c.pushToken, pushMagic: c.pushMagic },
      });
    }

    const outcomes =
      toSend.length > 0
        ? await this.deps.sender.send(
            cert,
            toSend.map((s) => s.push),
          )
        : [];
    const sentAt = this.now();
    settlement.followUpAt = new Date(sentAt.getTime() + this.opts.coalesceMs);
    const retryDue = new Map<number, Date>();
    const reasons = new Map<string, number>();
    toSend.forEach(({ claim }, i) => {
      const outcome = outcomes[i] ?? { ok: false, status: null, reason: 'no outcome' };
      switch (classifyOutcome(outcome)) {
        case 'sent':
          settlement.sent.push(claim.enrollmentId);
          return;
        case 'dead':
          settlement.dead.push({ enrollmentId: claim.enrollmentId, pushToken: claim.pushToken });
          return;
        case 'retry': {
          const error = outcome.ok ? '' : `${outcome.status ?? 'no answer'} ${outcome.reason}`;
          reasons.set(error, (reasons.get(error) ?? 0) + 1);
          const attempts = claim.attempts + 1;
          if (attempts >= this.opts.maxAttempts) {
            settlement.dropped.push(claim.enrollmentId);
            return;
          }
          // One jittered due time per attempt count in a batch, so that the batch settles in few writes.
          let dueAt = retryDue.get(attempts);
          if (!dueAt) {
            dueAt = new Date(
              sentAt.getTime() + retryDelayMs(attempts, this.opts, this.deps.random ?? Math.random),
            );
            retryDue.set(attempts, dueAt);
          }
          settlement.failed.push({ enrollmentId: claim.enrollmentId, attempts, dueAt, error });
        }
      }
    });
    await this.deps.queue.settle(owner, settlement, sentAt);

    this.totals.batches++;
    this.totals.claimed += claimed.length;
    this.totals.sent += settlement.sent.length;
    this.totals.failed += settlement.failed.length;
    this.totals.dead += settlement.dead.length;
    this.totals.dropped += settlement.dropped.length;
    this.totals.deferred += settlement.deferred.length;
    const summary = {
      claimed: claimed.length,
      sent: settlement.sent.length,
      failed: settlement.failed.length,
      dead: settlement.dead.length,
      dropped: settlement.dropped.length,
      deferred: settlement.deferred.length,
      ms: Date.now() - started,
    };
    if (summary.failed > 0) {
      this.deps.log.warn(
        { ...summary, reasons: Object.fromEntries(reasons) },
        'pushes failed; retrying later',
      );
    } else {
      this.deps.log.debug(summary, 'push batch');
    }
    if (summary.dead > 0)
      this.deps.log.info({ count: summary.dead }, 'push tokens no longer valid (marked dead)');
    // Follow-ups (requests that came in while sending) and deferred rows are due soon: look then.
    if (summary.sent > 0) this.wakeAt(settlement.followUpAt);
    for (const d of settlement.deferred) this.wakeAt(d.dueAt);
    const earliestRetry = [...retryDue.values()].sort((a, b) => a.getTime() - b.getTime())[0];
    if (earliestRetry) this.wakeAt(earliestRetry);
  }

  /**
   * Asks again for a push to enabled enrollments whose commands stay unanswered (queued, sent or NotNow)
   * for longer than the sweep period and that were not pushed within it. Returns how many.
   */
  async sweep(): Promise<number> {
    const now = this.now();
    const before = new Date(now.getTime() - this.opts.sweepMs);
    const ids = await this.deps.queue.sweepCandidates(before, before, this.opts.sweepLimit);
    if (ids.length === 0) return 0;
    await this.deps.queue.request(ids, now);
    this.deps.log.info({ count: ids.length }, 'sweep: pushing again to enrollments with unanswered commands');
    this.wake();
    return ids.length;
  }

  /**
   * Pushes every channel of a device now, outside the queue and its coalescing window (the admin's
   * "push now"). Null when the device is unknown.
   */
  async pushNow(udid: string): Promise<PushNowResult[] | null> {
    const device = await this.deps.devices.getDevice(udid);
    if (!device) return null;
    const cert = await this.deps.certificates.active();
    if (!cert) throw new PushCertificateMissingError();
    const enrollments = await this.deps.devices.listEnrollments(device.udid);
    const results: PushNowResult[] = [];
    const toSend: { index: number; enrollmentId: string; push: MdmPush }[] = [];
    for (const e of enrollments) {
      let reason: string | null = null;
      if (!e.enabled) reason = 'not_enrolled';
      else if (!e.pushToken || !e.pushMagic) reason = 'no_push_token';
      else if (e.pushTokenDead) reason = 'push_token_dead';
      if (reason !== null || !e.pushToken || !e.pushMagic) {
        results.push({ enrollmentId: e.id, status: 'skipped', reason: reason ?? 'no_push_token' });
        continue;
      }
      toSend.push({
        index: results.length,
        enrollmentId: e.id,
        push: { token: e.pushToken, pushMagic: e.pushMagic },
      });
      results.push({ enrollmentId: e.id, status: 'sent' });
    }
    const outcomes =
      toSend.length > 0
        ? await this.deps.sender.send(
            cert,
            toSend.map((s) => s.push),
          )
        : [];
    const now = this.now();
    const sent: string[] = [];
    const dead: { enrollmentId: string; pushToken: string }[] = [];
    toSend.forEach((s, i) => {
      const outcome = outcomes[i] ?? { ok: false, status: null, reason: 'no outcome' };
      if (outcome.ok) {
        results[s.index] = { enrollmentId: s.enrollmentId, status: 'sent', apnsStatus: outcome.status };
        sent.push(s.enrollmentId);
        return;
      }
      results[s.index] = {
        enrollmentId: s.enrollmentId,
        status: 'failed',
        ...(outcome.status !== null ? { apnsStatus: outcome.status } : {}),
        reason: outcome.reason,
      };
      if (classifyOutcome(outcome) === 'dead')
        dead.push({ enrollmentId: s.enrollmentId, pushToken: s.push.token });
    });
    await this.deps.queue.recordPushed(sent, now);
    await this.deps.queue.markTokensDead(dead, now);
    this.deps.log.info(
      { udid: device.udid, sent: sent.length, failed: toSend.length - sent.length, dead: dead.length },
      'push now',
    );
    return results;
  }
}
