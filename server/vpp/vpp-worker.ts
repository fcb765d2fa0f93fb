import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { EventBus } from '../events.ts';
import {
  done,
  later,
  retry,
  type JobContext,
  type JobQueue,
  type JobResult,
  type JobRunner,
} from '../jobs/job-runner.ts';
import type { Logger } from '../log.ts';
import { AppleError, type AppsAndBooks, type ManagedUserInput } from './apple-client.ts';
import {
  syncKey,
  VPP_RETIRE,
  VPP_SYNC,
  VPP_WORK,
  workKey,
  type LocationService,
} from './location-service.ts';
import type { AppliedUsers, EventOutcome, Location, LocationSecrets, VppStore } from './store.ts';

export interface VppWorkerOptions {
  /** the periodic `users` sync of every location */
  syncIntervalMs: number;
  /** how long an event is left to Apple's notification before its status is polled */
  pollAfterMs: number;
  /** how often a location with events in flight is looked at again */
  pollEveryMs: number;
  /** how long one run of the work job goes on before it yields (and renews its lease) */
  runBudgetMs: number;
  /** how long a location whose token does not work waits before it looks again */
  tokenWaitMs: number;
  /** how long applied notification ids are kept */
  notificationRetentionMs: number;
}

export const DEFAULT_VPP_WORKER_OPTIONS: Readonly<VppWorkerOptions> = Object.freeze({
  syncIntervalMs: 10 * 60_000,
  pollAfterMs: 1000,
  pollEveryMs: 1000,
  runBudgetMs: 20_000,
  tokenWaitMs: 10 * 60_000,
  notificationRetentionMs: 30 * 24 * 60 * 60_000,
});

const payloadSchema = z.object({ locationId: z.string().min(1).max(32) });
const retirePayloadSchema = payloadSchema.extend({
  clientUserIds: z.array(z.string().min(1).max(255)).min(1).max(1000),
});

/** Events polled per run; the rest wait for their notification or the next run. */
const EVENTS_PER_RUN = 10;
/** Users read one by one (`users?clientUserId=`) per run. */
const LOOKUPS_PER_RUN = 50;
/** The longest wait between two looks at events in flight. */
const MAX_POLL_MS = 60_000;

/** Raises the domain events for what applying Apple's answers changed. */
export function emitApplied(
  events: EventBus,
  locationId: string,
  applied: Pick<AppliedUsers, 'registered' | 'associated'> & { failed?: EventOutcome['failed'] },
): void {
  if (applied.registered.length > 0) {
    events.emit('registration.registered', { locationId, userIds: applied.registered.map((r) => r.userId) });
  }
  for (const a of applied.associated) {
    events.emit('registration.associated', { userId: a.userId, locationId, idHash: a.idHash });
  }
  const byError = new Map<string, { errorNumber: number; errorMessage: string; userIds: string[] }>();
  for (const f of applied.failed ?? []) {
    const key = `${f.errorNumber}`;
    const group = byError.get(key) ?? {
      errorNumber: f.errorNumber,
      errorMessage: f.errorMessage,
      userIds: [],
    };
    group.userIds.push(f.userId);
    byError.set(key, group);
  }
  for (const g of byError.values()) events.emit('registration.failed', { locationId, ...g });
}

/**
 * The background work of every location, as two durable job kinds keyed per location (so one instance
 * at a time works on a location):
 * - `vpp.work`: reads users Apple said exist (9716), creates pending registrations in batches, polls
 *   the events in flight; it runs again while anything is in flight.
 * - `vpp.sync`: the periodic `users` sync (from the stored `versionId`; all pages the first time), which
 *   applies what notifications missed; it reschedules itself every `syncIntervalMs`.
 */
export class VppWorker {
  private readonly opts: VppWorkerOptions;

  constructor(
    private readonly deps: {
      store: VppStore;
      apple: AppsAndBooks;
      locations: LocationService;
      jobs: JobQueue;
      events: EventBus;
      log: Logger;
      options?: Partial<VppWorkerOptions>;
      now?: () => Date;
    },
  ) {
    this.opts = { ...DEFAULT_VPP_WORKER_OPTIONS, ...deps.options };
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  register(runner: JobRunner): void {
    runner.register(VPP_WORK, (job) => this.work(job), { maxAttempts: 50 });
    runner.register(VPP_SYNC, (job) => this.sync(job), { maxAttempts: 1_000_000 });
    runner.register(VPP_RETIRE, (job) => this.retire(job), { maxAttempts: 50 });
  }

  /** At start: every location gets its sync (and a look at leftover work) now. */
  async scheduleAll(): Promise<void> {
    const ids = await this.deps.store.allLocationIds();
    for (const locationId of ids) {
      await this.deps.jobs.enqueue(VPP_SYNC, { locationId }, { key: syncKey(locationId) });
      await this.deps.jobs.enqueue(VPP_WORK, { locationId }, { key: workKey(locationId) });
    }
  }

  // ---------- vpp.work ----------

  async work(job: JobContext): Promise<JobResult> {
    const { locationId } = payloadSchema.parse(job.payload);
    const loc = await this.deps.store.getLocation(locationId);
    if (!loc) return done();
    const waiting = this.waitForLocation(loc);
    if (waiting) return waiting;
    const log = this.deps.log.child({ locationId });
    const sToken = this.deps.locations.tokenOf(loc);
    const deadline = Date.now() + this.opts.runBudgetMs;
    let needSync = false;
    let oldestEventMs = 0;
    let stuckLookups = 0;
    try {
      // 1. Users Apple said exist (9716): read them, never create them again.
      for (const l of await this.deps.store.lookups(locationId, LOOKUPS_PER_RUN)) {
        const page = await this.deps.apple.users(sToken, { clientUserId: l.clientUserId });
        const found = page.users.filter((u) => u.clientUserId === l.clientUserId);
        const active = found.find((u) => u.status !== 'Retired');
        if (active && !active.inviteCode && !active.idHash) {
          // Apple knows the user but tells nothing more: the sync will (no hot loop on it meanwhile).
          stuckLookups += 1;
        } else if (active) {
          const applied = await this.deps.store.applyAppleUsers(locationId, [active], this.now());
          emitApplied(this.deps.events, locationId, applied);
        } else {
          // Not at Apple (or only retired there): create it (retired: under a new clientUserId).
          await this.deps.store.restartRegistration(l.id, found.length > 0 ? randomUUID() : null, this.now());
        }
      }

      // 2. Pending registrations: users/create, one batch (≤ maxUsers) per call.
      const { limits } = await this.deps.apple.serviceConfig();
      while (Date.now() < deadline && !job.stopping) {
        const batch = await this.deps.store.pendingRegistrations(locationId, limits.maxUsers);
        if (batch.length === 0) break;
        const users: ManagedUserInput[] = batch.map((r) => ({
          clientUserId: r.clientUserId,
          ...(r.managed && r.managedAppleId ? { managedAppleId: r.managedAppleId } : {}),
        }));
        try {
          const [accepted] = await this.deps.apple.createUsers(sToken, users);
          if (accepted) {
            await this.deps.store.markCreating(
              batch.map((r) => r.id),
              accepted.eventId,
              this.now(),
            );
          }
        } catch (err) {
          if (err instanceof AppleError && err.errorNumber === 9716) {
            // The whole request refused because a user exists: read each one (never create twice).
            const ids = batch.map((r) => r.id);
            await this.deps.store.failRegistrations(
              ids,
              { errorNumber: 9716, errorMessage: err.message },
              this.now(),
            );
            await this.deps.store.markLookup(
              locationId,
              batch.map((r) => r.clientUserId),
              this.now(),
            );
            continue;
          }
          if (err instanceof AppleError && !err.transient && !err.tokenProblem) {
            // Apple refused the request itself (e.g. 9714, 9717): these users failed.
            const failed = await this.deps.store.failRegistrations(
              batch.map((r) => r.id),
              { errorNumber: err.errorNumber, errorMessage: err.message },
              this.now(),
            );
            log.warn(
              { errorNumber: err.errorNumber, users: failed.length },
              'Apple refused a users/create batch',
            );
            emitApplied(this.deps.events, locationId, {
              registered: [],
              associated: [],
              failed: failed.map((f) => ({
                ...f,
                errorNumber: err.errorNumber ?? 0,
                errorMessage: err.message,
              })),
            });
            continue;
          }
          throw err;
        }
      }

      // 3. Events in flight that no notification finished: ask Apple.
      const sentBefore = new Date(this.now().getTime() - this.opts.pollAfterMs);
      const open = await this.deps.store.openEvents(locationId, sentBefore, EVENTS_PER_RUN);
      oldestEventMs = open[0] ? this.now().getTime() - open[0].sentAt.getTime() : 0;
      for (const { eventId } of open) {
        let status;
        try {
          status = await this.deps.apple.eventStatus(sToken, eventId);
        } catch (err) {
          if (err instanceof AppleError && err.errorNumber === 9708) {
            // Apple does not know the event (any more): the sync tells what became of its users.
            await this.deps.store.finishEvent(locationId, eventId, [], this.now());
            needSync = true;
            continue;
          }
          throw err;
        }
        if (status.eventStatus === 'PENDING') continue;
        const outcome = await this.deps.store.finishEvent(locationId, eventId, status.failures, this.now());
        if (outcome.created > 0) needSync = true;
        emitApplied(this.deps.events, locationId, { registered: [], associated: [], failed: outcome.failed });
      }
    } catch (err) {
      return this.onError(loc, err, log, 'work');
    }
    if (needSync) await this.deps.jobs.enqueue(VPP_SYNC, { locationId }, { key: syncKey(locationId) });
    const o = await this.deps.store.outstanding(locationId);
    if (o.pending > 0 || o.lookup > stuckLookups) return later(0);
    if (o.creating > 0) {
      // The longer Apple takes, the less often it is asked (notifications usually come first).
      return later(Math.min(MAX_POLL_MS, Math.max(this.opts.pollEveryMs, Math.round(oldestEventMs / 10))));
    }
    if (o.lookup > 0) return later(MAX_POLL_MS);
    return done();
  }

  // ---------- vpp.sync ----------

  async sync(job: JobContext): Promise<JobResult> {
    const { locationId } = payloadSchema.parse(job.payload);
    const loc = await this.deps.store.getLocation(locationId);
    if (!loc) return done();
    const waiting = this.waitForLocation(loc);
    if (waiting) return waiting;
    const log = this.deps.log.child({ locationId });
    const sToken = this.deps.locations.tokenOf(loc);
    const started = this.now();
    let versionId = loc.versionId;
    const totals = { pages: 0, users: 0, registered: 0, associated: 0, retired: 0, unknown: 0 };
    try {
      const config = await this.deps.apple.serviceConfig();
      if (config.urls.invitationEmail !== loc.invitationTemplate) {
        await this.deps.store.updateLocation(
          locationId,
          { invitationTemplate: config.urls.invitationEmail },
          this.now(),
        );
      }
      let newVersion: string | null = null;
      for (let restart = 0; ; restart++) {
        try {
          newVersion = null;
          let pageIndex: number | undefined = 0;
          while (pageIndex !== undefined) {
            const page = await this.deps.apple.users(
              sToken,
              versionId ? { sinceVersionId: versionId, pageIndex } : { pageIndex },
            );
            // The version of the first page: changes during paging show up in the next sync.
            newVersion ??= page.versionId ?? null;
            const applied = await this.deps.store.applyAppleUsers(locationId, page.users, this.now());
            emitApplied(this.deps.events, locationId, applied);
            totals.pages += 1;
            totals.users += page.users.length;
            totals.registered += applied.registered.length;
            totals.associated += applied.associated.length;
            totals.retired += applied.retired.length;
            totals.unknown += applied.unknown;
            const next = page.nextPageIndex;
            pageIndex = next !== undefined && next > pageIndex ? next : undefined;
            if (job.stopping) return later(0);
          }
          break;
        } catch (err) {
          // 9721: the stored version is no good (any more): read everything once.
          if (err instanceof AppleError && err.errorNumber === 9721 && versionId !== null && restart === 0) {
            log.info('stored versionId refused: full sync');
            versionId = null;
            continue;
          }
          throw err;
        }
      }
      await this.deps.store.setSyncState(
        locationId,
        { versionId: newVersion ?? versionId, syncedAt: started, error: null },
        this.now(),
      );
    } catch (err) {
      if (err instanceof AppleError && !err.tokenProblem) {
        await this.deps.store.setSyncState(locationId, { error: err.message }, this.now());
      }
      const r = await this.onError(loc, err, log, 'sync');
      // The recurring sync never fails for good: it waits (at most its interval) and tries again.
      if (r.kind === 'retry') return later(Math.min(this.opts.syncIntervalMs, 30_000), r.error, false);
      return r;
    }
    if (totals.registered + totals.associated + totals.retired > 0) {
      log.info(totals, 'users sync applied changes');
    } else {
      log.debug(totals, 'users sync');
    }
    // Rows Apple created before this sync began that it did not report: read them one by one.
    const stale = await this.deps.store.lookupStaleCreated(locationId, started);
    const o = await this.deps.store.outstanding(locationId);
    if (stale > 0 || o.pending > 0 || o.lookup > 0 || o.creating > 0) {
      await this.deps.jobs.enqueue(VPP_WORK, { locationId }, { key: workKey(locationId) });
    }
    await this.deps.store.purgeNotifications(
      new Date(this.now().getTime() - this.opts.notificationRetentionMs),
    );
    return later(this.opts.syncIntervalMs);
  }

  // ---------- vpp.retire ----------

  /**
   * Retires at Apple the registrations of users deleted here (their rows are gone). A location deleted
   * meanwhile ends it (Apple is no longer told about it); a location whose token does not work waits.
   */
  async retire(job: JobContext): Promise<JobResult> {
    const { locationId, clientUserIds } = retirePayloadSchema.parse(job.payload);
    const loc = await this.deps.store.getLocation(locationId);
    if (!loc) return done();
    const waiting = this.waitForLocation(loc);
    if (waiting) return waiting;
    const log = this.deps.log.child({ locationId });
    try {
      await this.deps.apple.retireUsers(this.deps.locations.tokenOf(loc), clientUserIds);
    } catch (err) {
      return this.onError(loc, err, log, 'users/retire');
    }
    log.info({ users: clientUserIds.length }, 'retired at Apple: their users were deleted here');
    return done();
  }

  // ---------- shared ----------

  /** A location that cannot work now: when to look again. */
  private waitForLocation(loc: Location): JobResult | null {
    if (loc.status === 'active') return null;
    if (loc.status === 'setting_up') return later(2000, 'location being set up');
    return later(
      this.opts.tokenWaitMs,
      `location ${loc.status.replace('_', ' ')}: ${loc.statusMessage ?? 'renew the service token'}`,
      false,
    );
  }

  private async onError(
    loc: Location & LocationSecrets,
    err: unknown,
    log: Logger,
    what: string,
  ): Promise<JobResult> {
    const problem = await this.deps.locations.onAppleError(loc, err);
    if (problem) {
      return later(
        this.opts.tokenWaitMs,
        `location ${problem.replace('_', ' ')}: ${(err as Error).message}`,
        false,
      );
    }
    if (err instanceof AppleError && err.rateLimited) {
      const wait = err.retryAfterMs ?? 5000;
      log.info({ errorNumber: err.errorNumber, waitMs: wait }, `Apple asks to slow down (${what})`);
      return later(wait, `rate limited by Apple: ${err.message}`, false);
    }
    const message = err instanceof Error ? err.message : String(err);
    log.warn({ err }, `Apple ${what} failed`);
    return retry(message);
  }
}
