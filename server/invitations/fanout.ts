/**
 * Sending invitations: a durable job per invitation (`invitations.fanout`, keyed by invitation, so one
 * worker at a time across instances) that is idempotent and resumable. Each run:
 * 1. scope (when the scope generation changed): computes who is in scope, adds `pending` usage rows
 *    for new users, withdraws and removes the rows of users who left;
 * 2. register: `ensureRegistered` in batches (1,000 users), reusing the user's registration at the
 *    location (managed for auto-registration);
 * 3. reconcile: rows waiting for Apple are compared with their registrations (a net under the events);
 * 4. deliver: registered rows (invite code known) go to the method's channel in batches (500);
 * 5. resend, 6. tell the channel about users who registered after it had them.
 * It yields after `runBudgetMs` and waits (polling with back-off, woken by events) while Apple works.
 *
 * Events (`registration.*`, `location.*`) only accelerate: they move rows right away and wake the job;
 * every change is also found by the job itself or by the periodic reconcile job.
 */
import { z } from 'zod';
import type { GroupStore, UserStore } from '../directory/store.ts';
import { NotFoundError } from '../errors.ts';
import type { EventBus } from '../events.ts';
import {
  done,
  later,
  type JobContext,
  type JobQueue,
  type JobResult,
  type JobRunner,
} from '../jobs/job-runner.ts';
import type { Logger } from '../log.ts';
import { newRegistrationCode, registrationUrl } from '../registration/targets.ts';
import type { EnsureRegisteredResult, RegistrationService } from '../vpp/registration-service.ts';
import type { Location, VppStore } from '../vpp/store.ts';
import {
  channelName,
  type ChannelRegistry,
  type DeliveryChannel,
  type InvitationForDelivery,
  type UsageForDelivery,
} from './channels.ts';
import type { Invitation, UsageStage } from './model.ts';
import { limitExplicitUsersToSite, resolveScope, siteUserSet, type ScopeSources } from './scope.ts';
import type { DeliveryRow, InvitationStore, UsageRegistrationView } from './store.ts';

export const INVITATION_FANOUT = 'invitations.fanout';
export const INVITATION_LOCATION = 'invitations.location';
export const INVITATION_RECONCILE = 'invitations.reconcile';
export const fanoutKey = (invitationId: string) => `invitation:${invitationId}:fanout`;
export const locationJobKey = (locationId: string) => `invitations:location:${locationId}`;
export const RECONCILE_KEY = 'invitations:reconcile';

export interface FanoutOptions {
  /** users per `ensureRegistered` call */
  registerBatch: number;
  /** usages per channel call */
  deliverBatch: number;
  /** how long one run goes on before it yields (and renews its lease) */
  runBudgetMs: number;
  /** first wait while rows wait for Apple; doubles while nothing moves, up to `maxPollMs` */
  pollMs: number;
  maxPollMs: number;
  /** how often rows waiting for Apple are compared with their registrations (per invitation) */
  reconcileEveryMs: number;
  /** the periodic reconcile job: missed events, sites, directory changes (scopes computed again) */
  reconcileIntervalMs: number;
  /** in-process events about associated users are applied in batches collected this long */
  eventBatchMs: number;
}

export const DEFAULT_FANOUT_OPTIONS: Readonly<FanoutOptions> = Object.freeze({
  registerBatch: 1000,
  deliverBatch: 500,
  runBudgetMs: 20_000,
  pollMs: 1000,
  maxPollMs: 60_000,
  reconcileEveryMs: 5000,
  reconcileIntervalMs: 5 * 60_000,
  eventBatchMs: 20,
});

const fanoutPayload = z.object({ invitationId: z.string().min(1).max(32) });
const locationPayload = z.object({ locationId: z.string().min(1).max(32) });

export interface FanoutDeps {
  store: InvitationStore;
  users: Pick<UserStore, 'missing' | 'allUserIds' | 'listUserIdsInSite'>;
  groups: Pick<GroupStore, 'listMemberIds'>;
  locations: Pick<VppStore, 'getLocation'>;
  registrations: Pick<RegistrationService, 'ensureRegistered' | 'registrationsAt'>;
  jobs: JobQueue;
  channels: ChannelRegistry;
  publicUrl: string;
  log: Logger;
  options?: Partial<FanoutOptions>;
  now?: () => Date;
}

export function forDelivery(inv: Invitation): InvitationForDelivery {
  return {
    id: inv.id,
    name: inv.name,
    locationId: inv.locationId,
    siteId: inv.siteId,
    distributionMethod: inv.distributionMethod,
    requireLogin: inv.requireLogin,
    email: inv.email,
  };
}

/** How the run goes: a deadline and the runner's stop flag. */
interface Run {
  deadline: number;
  job: Pick<JobContext, 'stopping'>;
}
const outOfTime = (run: Run) => run.job.stopping || Date.now() >= run.deadline;

const appleReason = (v: UsageRegistrationView) => {
  const r = v.registration;
  const message = r?.errorMessage ?? 'refused by Apple';
  return r?.errorNumber !== null && r?.errorNumber !== undefined
    ? `Apple ${r.errorNumber}: ${message}`
    : message;
};

export class InvitationFanout {
  private readonly opts: FanoutOptions;
  private readonly sources: ScopeSources;
  /** consecutive runs in which nothing moved, per invitation (for the polling back-off) */
  private readonly idleRuns = new Map<string, number>();
  private readonly lastReconcile = new Map<string, number>();
  private associatedBatch = new Map<string, Set<string>>();
  private associatedTimer: NodeJS.Timeout | null = null;

  constructor(private readonly deps: FanoutDeps) {
    this.opts = { ...DEFAULT_FANOUT_OPTIONS, ...deps.options };
    this.sources = {
      allUserIds: (n) => deps.users.allUserIds(n),
      listUserIdsInSite: (siteId, n) => deps.users.listUserIdsInSite(siteId, n),
      listMemberIds: (groupIds, n) => deps.groups.listMemberIds(groupIds, n),
    };
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  register(runner: JobRunner): void {
    runner.register(INVITATION_FANOUT, (job) => this.fanout(job), { maxAttempts: 1000 });
    runner.register(INVITATION_LOCATION, (job) => this.location(job), { maxAttempts: 100 });
    runner.register(INVITATION_RECONCILE, (job) => this.reconcile(job), { maxAttempts: 1_000_000 });
    // Users waiting for a channel are handed over as soon as one is registered.
    this.deps.channels.onRegistered((method) => {
      this.deps.store
        .invitationsWaitingFor(method)
        .then((ids) => this.wake(ids))
        .catch((err: unknown) =>
          this.deps.log.warn({ err, method }, 'could not wake invitations for a channel'),
        );
    });
  }

  /** At start: the reconcile job (now), which wakes whatever has work left. */
  async scheduleAll(): Promise<void> {
    await this.deps.jobs.enqueue(INVITATION_RECONCILE, {}, { key: RECONCILE_KEY });
  }

  /** Asks for a run of these invitations' fan-out (now, or right after the one in progress). */
  async wake(invitationIds: Iterable<string>): Promise<void> {
    for (const invitationId of new Set(invitationIds)) {
      await this.deps.jobs.enqueue(INVITATION_FANOUT, { invitationId }, { key: fanoutKey(invitationId) });
    }
  }

  /** In-process events: they move usage rows at once and wake the jobs (the jobs find it all anyway). */
  listen(events: EventBus): void {
    const log = this.deps.log;
    const guard = (what: string, p: Promise<unknown>) =>
      p.catch((err: unknown) => log.warn({ err }, `invitations: could not apply ${what}`));
    events.on('registration.registered', ({ locationId, userIds }) => {
      void guard(
        'registrations',
        this.deps.store.advanceRegistered(locationId, userIds, this.now()).then((ids) => this.wake(ids)),
      );
    });
    events.on('registration.associated', ({ locationId, userId }) => {
      const set = this.associatedBatch.get(locationId) ?? new Set<string>();
      set.add(userId);
      this.associatedBatch.set(locationId, set);
      this.associatedTimer ??= setTimeout(() => {
        this.associatedTimer = null;
        void guard('associations', this.flushAssociated());
      }, this.opts.eventBatchMs);
    });
    events.on('registration.failed', ({ locationId, userIds, errorNumber, errorMessage }) => {
      const reason = errorNumber !== null ? `Apple ${errorNumber}: ${errorMessage}` : errorMessage;
      void guard(
        'failed registrations',
        this.deps.store.failAtApple(locationId, userIds, reason, this.now()).then((ids) => this.wake(ids)),
      );
    });
    events.on('registration.retired', ({ locationId, userId }) => {
      void guard('a retirement', this.deps.store.retireUsage(locationId, userId, this.now()));
    });
    const locationChanged = ({ locationId }: { locationId: string }) => {
      void guard(
        'a location change',
        this.deps.jobs.enqueue(INVITATION_LOCATION, { locationId }, { key: locationJobKey(locationId) }),
      );
    };
    events.on('location.site_changed', locationChanged);
    events.on('location.deleted', locationChanged);
  }

  private async flushAssociated(): Promise<void> {
    const batch = this.associatedBatch;
    this.associatedBatch = new Map();
    for (const [locationId, users] of batch) {
      const regs = await this.deps.registrations.registrationsAt(locationId, [...users]);
      const managed = regs.filter((r) => r.state === 'associated' && r.managed).map((r) => r.userId);
      const invited = regs.filter((r) => r.state === 'associated' && !r.managed).map((r) => r.userId);
      const touched: string[] = [];
      if (managed.length > 0) {
        touched.push(
          ...(await this.deps.store.markRegistered(
            { locationId, userIds: managed },
            true,
            'Registered with Apple with the Managed Apple ID (no invitation)',
            this.now(),
          )),
        );
      }
      if (invited.length > 0) {
        touched.push(
          ...(await this.deps.store.markRegistered(
            { locationId, userIds: invited },
            false,
            'Registered with Apple (the user accepted the invitation)',
            this.now(),
          )),
        );
      }
      await this.wake(touched);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // the fan-out job

  async fanout(job: JobContext): Promise<JobResult> {
    const { invitationId } = fanoutPayload.parse(job.payload);
    const run: Run = { deadline: Date.now() + this.opts.runBudgetMs, job };
    const inv = await this.deps.store.getInvitation(invitationId);
    if (!inv) return done();
    const log = this.deps.log.child({ invitationId });
    if (inv.deletedAt !== null) return this.removeAll(inv, run, log);
    const loc = await this.deps.locations.getLocation(inv.locationId);
    if (!loc) {
      // The location went: its invitations go too (their usage is withdrawn first).
      await this.deps.store.markInvitationDeleted(inv.id, this.now());
      log.info({ locationId: inv.locationId }, 'the location was deleted: removing its invitation');
      return later(0);
    }
    // Registrations wait while the location's token does not work: say so on the invitation.
    const tokenProblem =
      loc.status === 'active' || loc.status === 'setting_up'
        ? null
        : `waiting for the location's service token to be renewed (${loc.status.replace('_', ' ')})`;
    if (tokenProblem !== inv.fanoutError) {
      await this.deps.store.setFanout(inv.id, { error: tokenProblem }, this.now());
    }
    const channel = this.deps.channels.get(inv.distributionMethod);
    const d = forDelivery(inv);
    let moved = 0;
    try {
      if (inv.computedGeneration < inv.scopeGeneration)
        moved += await this.applyScope(inv, loc, channel, d, log);
      if (!outOfTime(run)) moved += await this.registerStep(inv, run, log);
      if (!outOfTime(run)) moved += await this.reconcileStep(inv, run);
      if (!outOfTime(run)) moved += await this.deliverStep(inv, channel, d, 'deliver', run, log);
      if (!outOfTime(run)) moved += await this.deliverStep(inv, channel, d, 'resend', run, log);
      if (!outOfTime(run)) moved += await this.notifyStep(inv, channel, d, run);
    } catch (err) {
      if (err instanceof NotFoundError) {
        log.info('the location went while sending: looking again');
        return later(0);
      }
      throw err;
    }
    if (outOfTime(run)) return later(0);

    const counts = (await this.deps.store.counts([inv.id])).get(inv.id);
    const stage = counts?.byStage;
    const fresh = await this.deps.store.getInvitation(inv.id);
    if (!fresh || fresh.deletedAt !== null || fresh.computedGeneration < fresh.scopeGeneration)
      return later(0);
    if (stage && stage.register + stage.resend + stage.notify_registered > 0) return later(0);
    if (stage && stage.apple + stage.deliver > 0) {
      // Waiting for Apple (invite codes) or for a location token renewal: poll with back-off.
      const idle = moved > 0 ? 0 : (this.idleRuns.get(inv.id) ?? 0) + 1;
      this.idleRuns.set(inv.id, idle);
      const waitMs = Math.min(this.opts.maxPollMs, this.opts.pollMs * 2 ** Math.min(10, idle));
      return later(waitMs, `waiting for Apple: ${stage.apple + stage.deliver} user(s)`);
    }
    this.idleRuns.delete(inv.id);
    this.lastReconcile.delete(inv.id);
    if (fresh.fanoutFinishedAt === null) {
      await this.deps.store.setFanout(inv.id, { finishedAt: this.now() }, this.now());
      log.info(
        {
          total: counts?.total ?? 0,
          byStatus: counts?.byStatus,
          waitingForChannel: stage?.waiting_channel ?? 0,
        },
        'invitation fan-out finished',
      );
    }
    return done();
  }

  /** Brings the usage rows to the current scope: new users `pending`, users who left withdrawn and removed. */
  private async applyScope(
    inv: Invitation,
    loc: Location,
    channel: DeliveryChannel | null,
    d: InvitationForDelivery,
    log: Logger,
  ): Promise<number> {
    const generation = inv.scopeGeneration;
    const started = Date.now();
    const scope = await resolveScope(inv.scope, loc.siteId, this.sources, {
      missingUsers: (ids) => this.deps.users.missing(ids),
    });
    const existing = new Set(await this.deps.store.usageUserIds(inv.id));
    const inScope = new Set(scope);
    const toAdd = scope.filter((id) => !existing.has(id));
    const toRemove = [...existing].filter((id) => !inScope.has(id));
    let added = 0;
    const batch = this.opts.registerBatch;
    for (let i = 0; i < toAdd.length; i += batch) {
      added += await this.deps.store.addUsage(
        inv.id,
        inv.locationId,
        toAdd.slice(i, i + batch),
        newRegistrationCode,
        this.now(),
      );
    }
    let removed = 0;
    for (let i = 0; i < toRemove.length; i += this.opts.deliverBatch) {
      const refs = await this.deps.store.usageOfUsers(inv.id, toRemove.slice(i, i + this.opts.deliverBatch));
      if (refs.length === 0) continue;
      if (channel) await channel.withdraw(d, refs, 'left_scope');
      removed += await this.deps.store.deleteUsage(refs.map((r) => r.usageId));
    }
    const current = await this.deps.store.markComputed(inv.id, generation, this.now());
    log.info(
      { generation, inScope: scope.length, added, removed, current, ms: Date.now() - started },
      'invitation scope applied',
    );
    return added + removed;
  }

  /** `ensureRegistered` for rows in `register`, a batch at a time; then their registrations are read. */
  private async registerStep(inv: Invitation, run: Run, log: Logger): Promise<number> {
    let moved = 0;
    let after: string | null = null;
    const managedOnly = inv.distributionMethod === 'auto_register_only';
    const managedFirst = managedOnly || inv.autoRegisterManagedUsers;
    while (!outOfTime(run)) {
      const refs = await this.deps.store.usageInStage(inv.id, 'register', after, this.opts.registerBatch);
      const last = refs[refs.length - 1];
      if (!last) break;
      after = last.usageId;
      const usageOf = new Map(refs.map((r) => [r.userId, r.usageId]));
      const userIds = refs.map((r) => r.userId);
      const gone: string[] = [];
      const noManagedId: string[] = [];
      const collect = (res: EnsureRegisteredResult) => {
        for (const s of res.skipped) (s.reason === 'user_not_found' ? gone : noManagedId).push(s.userId);
      };
      collect(
        await this.deps.registrations.ensureRegistered(inv.locationId, userIds, { managed: managedFirst }),
      );
      if (managedFirst && !managedOnly && noManagedId.length > 0) {
        // autoRegisterManagedUsers: the others are invited by the method.
        const others = noManagedId.splice(0);
        collect(await this.deps.registrations.ensureRegistered(inv.locationId, others, { managed: false }));
      }
      const at = this.now();
      const ids = (users: string[]) => users.map((u) => usageOf.get(u)).filter((u): u is string => !!u);
      if (gone.length > 0) await this.deps.store.deleteUsage(ids(gone));
      if (noManagedId.length > 0) {
        await this.deps.store.changeStage({
          usageIds: ids(noManagedId),
          from: ['register'],
          to: 'done',
          status: 'skipped',
          reason: 'no_managed_apple_id',
          lastAction: 'Skipped: the user has no Managed Apple ID',
          at,
        });
      }
      const skipped = new Set([...gone, ...noManagedId]);
      const requested = ids(userIds.filter((u) => !skipped.has(u)));
      await this.deps.store.changeStage({
        usageIds: requested,
        from: ['register'],
        to: 'apple',
        lastAction: managedFirst
          ? 'Registration with Apple requested (Managed Apple ID where the user has one)'
          : 'Registration with Apple requested',
        at,
      });
      // Users registered at the location already (another invitation, an earlier run) move on at once.
      await this.applyViews(inv, await this.deps.store.registrationViews(inv.id, requested));
      moved += refs.length;
      log.info(
        { step: 'register', batch: refs.length, requested: requested.length, skipped: skipped.size },
        'invitation fan-out batch',
      );
    }
    return moved;
  }

  /** Rows waiting for Apple, compared with their registrations (at most every `reconcileEveryMs`). */
  private async reconcileStep(inv: Invitation, run: Run): Promise<number> {
    const last = this.lastReconcile.get(inv.id) ?? 0;
    if (Date.now() - last < this.opts.reconcileEveryMs) return 0;
    this.lastReconcile.set(inv.id, Date.now());
    let moved = 0;
    let after: string | null = null;
    while (!outOfTime(run)) {
      const refs = await this.deps.store.usageInStage(inv.id, 'apple', after, this.opts.registerBatch);
      const lastRef = refs[refs.length - 1];
      if (!lastRef) break;
      after = lastRef.usageId;
      moved += await this.applyViews(
        inv,
        await this.deps.store.registrationViews(
          inv.id,
          refs.map((r) => r.usageId),
        ),
      );
    }
    return moved;
  }

  /** Moves rows (in `apple` or `deliver`) by what their registration says. Answers how many moved. */
  private async applyViews(inv: Invitation, views: readonly UsageRegistrationView[]): Promise<number> {
    const at = this.now();
    const of = (pred: (v: UsageRegistrationView) => boolean) => views.filter(pred);
    let moved = 0;
    const move = async (
      list: UsageRegistrationView[],
      to: UsageStage,
      lastAction: string,
      extra: { status?: 'pending' | 'failed'; reason?: string | null } = {},
    ) => {
      const byStage = new Map<UsageStage, string[]>();
      for (const v of list) byStage.set(v.stage, [...(byStage.get(v.stage) ?? []), v.usageId]);
      for (const [from, usageIds] of byStage) {
        moved += await this.deps.store.changeStage({ usageIds, from: [from], to, lastAction, at, ...extra });
      }
    };
    const associated = of((v) => v.registration?.state === 'associated');
    for (const managed of [true, false]) {
      const ids = associated.filter((v) => v.registration?.managed === managed).map((v) => v.usageId);
      if (ids.length === 0) continue;
      moved += ids.length;
      await this.deps.store.markRegistered(
        { usageIds: ids },
        managed,
        managed
          ? 'Registered with Apple with the Managed Apple ID (no invitation)'
          : 'Registered with Apple (the user accepted the invitation)',
        at,
      );
    }
    const registered = of((v) => v.registration?.state === 'registered' && v.stage === 'apple');
    if (inv.distributionMethod === 'auto_register_only') {
      await move(
        registered,
        'done',
        'Invited by Apple earlier (not registered with a Managed Apple ID): waiting for the user to accept',
      );
    } else {
      await move(registered, 'deliver', 'Registered with Apple: invite code received');
    }
    for (const v of of((v) => v.registration?.state === 'failed')) {
      await move([v], 'done', 'Apple refused the registration', { status: 'failed', reason: appleReason(v) });
    }
    await move(
      of((v) => v.registration?.state === 'retired'),
      'retired',
      'Registration retired at Apple: resend to invite again',
      { status: 'pending', reason: null },
    );
    await move(
      of((v) => v.registration === null),
      'register',
      'No registration with Apple yet: asking again',
    );
    // A row handed for delivery whose registration is not ready after all waits for Apple again.
    await move(
      of(
        (v) =>
          (v.stage === 'deliver' || v.stage === 'resend') &&
          v.registration !== null &&
          !['registered', 'associated', 'failed', 'retired'].includes(v.registration.state),
      ),
      'apple',
      'Waiting for Apple',
    );
    return moved;
  }

  /** Hands rows in `deliver` (or `resend`) to the channel in batches; without a channel they wait. */
  private async deliverStep(
    inv: Invitation,
    channel: DeliveryChannel | null,
    d: InvitationForDelivery,
    stage: 'deliver' | 'resend',
    run: Run,
    log: Logger,
  ): Promise<number> {
    const now = this.now();
    if (inv.distributionMethod === 'auto_register_only') {
      return this.deps.store.changeStageAll(
        inv.id,
        stage,
        'done',
        'Invited by Apple earlier (not registered with a Managed Apple ID): waiting for the user to accept',
        now,
      );
    }
    const name = channelName(inv.distributionMethod);
    if (!channel) {
      return this.deps.store.changeStageAll(
        inv.id,
        stage,
        'waiting_channel',
        `Waiting for the ${name} channel (not available yet)`,
        now,
      );
    }
    let moved = 0;
    if (stage === 'deliver') {
      moved += await this.deps.store.changeStageAll(
        inv.id,
        'waiting_channel',
        'deliver',
        `Handing to the ${name} channel`,
        now,
      );
    }
    let after: string | null = null;
    while (!outOfTime(run)) {
      const rows = await this.deps.store.deliveryRows(inv.id, stage, after, this.opts.deliverBatch);
      const last = rows[rows.length - 1];
      if (!last) break;
      after = last.usageId;
      const ready = rows.filter((r) => r.registrationState === 'registered' && isDeliverable(r));
      const notReady = rows.filter((r) => !ready.includes(r));
      if (notReady.length > 0) {
        moved += await this.applyViews(
          inv,
          await this.deps.store.registrationViews(
            inv.id,
            notReady.map((r) => r.usageId),
          ),
        );
      }
      if (ready.length === 0) continue;
      const items = ready.map((r) => this.toItem(r));
      const outcomes = stage === 'deliver' ? await channel.deliver(d, items) : await channel.resend(d, items);
      const applied = await this.deps.store.applyOutcomes(
        stage,
        items.map((i) => i.usageId),
        outcomes,
        {
          sentAction: `Sent by the ${name} channel`,
          pendingAction: `Handed to the ${name} channel`,
          failedAction: `The ${name} channel failed`,
          skippedAction: `Skipped by the ${name} channel`,
        },
        this.now(),
      );
      moved += applied;
      log.info({ step: stage, batch: items.length, applied }, 'invitation fan-out batch');
    }
    return moved;
  }

  /** Users who registered after the channel had them: the channel withdraws its prompts. */
  private async notifyStep(
    inv: Invitation,
    channel: DeliveryChannel | null,
    d: InvitationForDelivery,
    run: Run,
  ): Promise<number> {
    let moved = 0;
    while (!outOfTime(run)) {
      const refs = await this.deps.store.usageInStage(
        inv.id,
        'notify_registered',
        null,
        this.opts.deliverBatch,
      );
      if (refs.length === 0) break;
      if (channel) await channel.withdraw(d, refs, 'registered');
      moved += await this.deps.store.changeStage({
        usageIds: refs.map((r) => r.usageId),
        from: ['notify_registered'],
        to: 'done',
        at: this.now(),
      });
    }
    return moved;
  }

  /** A deleted invitation: every usage is withdrawn and removed, then the invitation. */
  private async removeAll(inv: Invitation, run: Run, log: Logger): Promise<JobResult> {
    const channel = this.deps.channels.get(inv.distributionMethod);
    const d = forDelivery(inv);
    let removed = 0;
    while (!outOfTime(run)) {
      const refs = await this.deps.store.usagePage(inv.id, null, this.opts.deliverBatch);
      if (refs.length === 0) {
        await this.deps.store.removeInvitation(inv.id);
        this.idleRuns.delete(inv.id);
        this.lastReconcile.delete(inv.id);
        log.info({ removed }, 'invitation deleted: its usage was withdrawn');
        return done();
      }
      if (channel) await channel.withdraw(d, refs, 'invitation_deleted');
      removed += await this.deps.store.deleteUsage(refs.map((r) => r.usageId));
    }
    return later(0);
  }

  private toItem(r: DeliveryRow): UsageForDelivery {
    return {
      usageId: r.usageId,
      userId: r.userId,
      username: r.username,
      fullName: r.fullName,
      email: r.email,
      hasPassword: r.hasPassword,
      clientUserId: r.clientUserId ?? '',
      inviteCode: r.inviteCode ?? '',
      invitationUrl: r.invitationUrl ?? '',
      registrationCode: r.registrationCode,
      registrationUrl: registrationUrl(this.deps.publicUrl, r.registrationCode),
      sentAt: r.sentAt,
    };
  }

  // ---------------------------------------------------------------------------------------------
  // a location's site changed, or the location went

  async location(job: JobContext): Promise<JobResult> {
    const { locationId } = locationPayload.parse(job.payload);
    const log = this.deps.log.child({ locationId });
    const loc = await this.deps.locations.getLocation(locationId);
    const invitations = await this.deps.store.invitationsOfLocation(locationId);
    if (!loc) {
      for (const inv of invitations) await this.deps.store.markInvitationDeleted(inv.id, this.now());
      if (invitations.length > 0)
        log.info({ invitations: invitations.length }, 'location deleted: removing its invitations');
      await this.wake(invitations.map((i) => i.id));
      return done();
    }
    let siteUsers: Set<string> | null | undefined;
    for (let inv of invitations) {
      for (let attempt = 0; inv.siteId !== loc.siteId; attempt++) {
        siteUsers ??= await siteUserSet(loc.siteId, this.deps.users);
        const scope = limitExplicitUsersToSite(inv.scope, siteUsers);
        const updated = await this.deps.store.updateInvitation(
          inv.id,
          { siteId: loc.siteId, scope, rescope: true },
          this.now(),
          { ifGeneration: inv.scopeGeneration },
        );
        if (updated) {
          log.info(
            {
              invitationId: inv.id,
              siteId: loc.siteId,
              explicitUsersRemoved: inv.scope.userIds.length - scope.userIds.length,
            },
            "invitation moved to its location's site: users outside it leave the scope",
          );
          await this.wake([inv.id]);
          break;
        }
        // Changed meanwhile (a PATCH): read it again.
        const fresh = await this.deps.store.getInvitation(inv.id);
        if (!fresh || fresh.deletedAt !== null || attempt >= 5) break;
        inv = fresh;
      }
    }
    return done();
  }

  // ---------------------------------------------------------------------------------------------
  // the periodic reconcile job

  async reconcile(job: JobContext): Promise<JobResult> {
    const log = this.deps.log;
    const wake = new Set<string>();
    // Users Apple reports associated whose usage does not say so (an event was missed).
    for (let round = 0; round < 20 && !job.stopping; round++) {
      const rows = await this.deps.store.unregisteredButAssociated(1000);
      if (rows.length === 0) break;
      for (const managed of [true, false]) {
        const ids = rows.filter((r) => r.managed === managed).map((r) => r.usageId);
        if (ids.length === 0) continue;
        const touched = await this.deps.store.markRegistered(
          { usageIds: ids },
          managed,
          managed
            ? 'Registered with Apple with the Managed Apple ID (no invitation)'
            : 'Registered with Apple (the user accepted the invitation)',
          this.now(),
        );
        for (const id of touched) wake.add(id);
      }
      if (rows.length < 1000) break;
    }
    // Invitations of deleted locations, and locations whose site changed without its event.
    for (const id of await this.deps.store.orphanedInvitations()) {
      await this.deps.store.markInvitationDeleted(id, this.now());
      wake.add(id);
    }
    for (const locationId of await this.deps.store.locationsWithStaleSite()) {
      await this.deps.jobs.enqueue(INVITATION_LOCATION, { locationId }, { key: locationJobKey(locationId) });
    }
    // The directory may have changed (group members, sites, users): every scope is computed again.
    await this.deps.store.rescopeAll(this.now());
    for (const id of await this.deps.store.invitationsNeedingWork(this.deps.channels.methods())) wake.add(id);
    await this.wake(wake);
    if (wake.size > 0) log.debug({ invitations: wake.size }, 'invitations reconciled');
    return later(this.opts.reconcileIntervalMs, undefined, true);
  }
}

function isDeliverable(r: DeliveryRow): boolean {
  return r.inviteCode !== null && r.invitationUrl !== null && r.clientUserId !== null;
}
