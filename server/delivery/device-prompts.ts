/**
 * `InviteToProgram` prompts on the devices of invited users (the `prompt_and_self_service` channel's
 * device half). One prompt per (user, location, device): a second invitation of the same location, or
 * a resend while one is pending, reuses it (rule 5). Commands are queued with an APNs push; answers
 * update the prompt rows and the usage (`Acknowledged` → `acknowledged`; an `InvitationResult` other
 * than `Acknowledged`, `Error` or `CommandFormatError` → `failed` with the reason; `NotNow` → the
 * command stays queued and is offered again on the device's next poll or the push sweep). When Apple
 * reports the user associated, every pending prompt of that (user, location) is withdrawn (rule 4).
 *
 * Durable work: `delivery.device` (one device: prompts for its user's pending invitations, withdraws
 * prompts of a user it is no longer assigned to), `delivery.reconcile` (periodic: answers missed by the
 * in-process events, read from the command results table; prompts of registered users; devices
 * assigned meanwhile). Events (`command.result`, `registration.associated`, `device.assigned`,
 * `enrollment.token_updated`) only make things happen sooner.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { encodeCommand, type CommandPayload } from '../../shared/mdm/index.ts';
import { decodePlistDict } from '../../shared/plist/index.ts';
import type { DeviceStore } from '../checkin/store.ts';
import type { Pusher } from '../commands/pusher.ts';
import type { CommandStore } from '../commands/store.ts';
import type { DomainEvents, EventBus } from '../events.ts';
import type {
  DeliveryOutcome,
  InvitationForDelivery,
  UsageDeviceReport,
  UsageForDelivery,
  UsageRef,
  UsageReport,
  UsageReporter,
  WithdrawReason,
} from '../invitations/channels.ts';
import { FINAL_STATUSES } from '../invitations/model.ts';
import {
  done,
  later,
  type JobContext,
  type JobQueue,
  type JobResult,
  type JobRunner,
} from '../jobs/job-runner.ts';
import type { Logger } from '../log.ts';
import {
  noPromptReason,
  promptTarget,
  deviceLabel,
  type DeviceSkipReason,
  type PromptDevice,
  type PromptUser,
} from './eligibility.ts';
import {
  isActivePrompt,
  pairKey,
  type ClaimResult,
  type DeliveryStore,
  type DeliveryUsage,
  type PromptClaim,
  type PromptRecord,
  type PromptResult,
  type UserLocation,
} from './store.ts';

export const PROMPT_METHOD = 'prompt_and_self_service';
export const CLOUD_VPP_PROGRAM_ID = 'com.apple.cloudvpp';
export const DELIVERY_DEVICE_JOB = 'delivery.device';
export const DELIVERY_RECONCILE_JOB = 'delivery.reconcile';
export const deviceJobKey = (udid: string) => `delivery:device:${udid}`;
export const DELIVERY_RECONCILE_KEY = 'delivery:reconcile';

export interface DevicePromptOptions {
  /** command results from the events are applied in batches collected this long */
  resultBatchMs: number;
  /** how often the reconcile job runs */
  reconcileIntervalMs: number;
  /** an active prompt whose command left the queue is looked at by the reconcile after this long */
  orphanGraceMs: number;
  /** rows looked at per reconcile step */
  reconcileLimit: number;
}

export const DEFAULT_DEVICE_PROMPT_OPTIONS: Readonly<DevicePromptOptions> = Object.freeze({
  resultBatchMs: 20,
  reconcileIntervalMs: 60_000,
  orphanGraceMs: 60_000,
  reconcileLimit: 1000,
});

/** usage-device rewrites in flight at once */
const SET_DEVICES_PARALLEL = 8;

const devicePayload = z.object({ udid: z.string().min(1).max(255) });

/** The `InviteToProgram` command for an invitation URL. */
export function inviteToProgram(invitationUrl: string): CommandPayload {
  return { RequestType: 'InviteToProgram', ProgramID: CLOUD_VPP_PROGRAM_ID, InvitationURL: invitationUrl };
}

type ResultStatus = 'acknowledged' | 'error' | 'command_format_error' | 'not_now' | 'withdrawn';

const text = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? v.trim() : null);

/** The first error of an `ErrorChain`, as a short reason: `Error 12079 (MCMDMErrorDomain): …`. */
function errorReason(kind: string, report: Record<string, unknown> | null): string {
  const chain = report?.['ErrorChain'];
  const first: unknown = Array.isArray(chain) ? chain[0] : undefined;
  if (first && typeof first === 'object') {
    const e = first as Record<string, unknown>;
    const code = typeof e['ErrorCode'] === 'number' ? ` ${e['ErrorCode']}` : '';
    const domain = text(e['ErrorDomain']);
    const description = text(e['USEnglishDescription']) ?? text(e['LocalizedDescription']);
    return `${kind}${code}${domain ? ` (${domain})` : ''}${description ? `: ${description}` : ''}`;
  }
  return kind;
}

/** What an answer to `InviteToProgram` means for the prompt (pure). */
export function promptResultOf(
  status: ResultStatus,
  report: Record<string, unknown> | null,
): Pick<PromptResult, 'state' | 'commandStatus' | 'reason'> {
  switch (status) {
    case 'not_now':
      return { state: 'not_now', commandStatus: 'not_now', reason: null };
    case 'withdrawn':
      return { state: 'withdrawn', commandStatus: 'withdrawn', reason: 'withdrawn from the queue' };
    case 'acknowledged': {
      const result = text(report?.['InvitationResult']);
      if (result === null || result === 'Acknowledged') {
        return { state: 'acknowledged', commandStatus: 'acknowledged', reason: null };
      }
      return { state: 'failed', commandStatus: 'acknowledged', reason: result };
    }
    case 'error':
      return { state: 'failed', commandStatus: 'error', reason: errorReason('Error', report) };
    case 'command_format_error':
      return {
        state: 'failed',
        commandStatus: 'command_format_error',
        reason: errorReason('CommandFormatError', report),
      };
  }
}

const RESULT_STATUSES: readonly ResultStatus[] = [
  'acknowledged',
  'error',
  'command_format_error',
  'withdrawn',
];

/** The usage item's `devices` from a pair's prompts (skipped devices are not listed). */
function deviceRows(prompts: readonly PromptRecord[]): UsageDeviceReport[] {
  return prompts
    .filter((p) => p.enrollmentId !== null && p.commandUuid !== null)
    .map((p) => ({
      udid: p.udid,
      enrollmentId: p.enrollmentId ?? p.udid,
      commandUuid: p.commandUuid,
      commandStatus: p.commandStatus,
    }));
}

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = out.get(k);
    if (list) list.push(item);
    else out.set(k, [item]);
  }
  return out;
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

export interface DevicePromptsDeps {
  store: DeliveryStore;
  commands: Pick<CommandStore, 'enqueue' | 'withdraw'>;
  pusher: Pusher;
  reporter: UsageReporter;
  jobs: JobQueue;
  /** to look at a device before enqueuing its job (events) */
  devices: Pick<DeviceStore, 'getDevice'>;
  /** `command.queued` is emitted for each prompt */
  events?: Pick<EventBus, 'emit'>;
  log: Logger;
  options?: Partial<DevicePromptOptions>;
  now?: () => Date;
  newCommandUuid?: () => string;
}

export class DevicePrompts {
  private readonly opts: DevicePromptOptions;
  private pendingResults: PromptResult[] = [];
  private resultTimer: NodeJS.Timeout | null = null;
  /** answer batches are applied one at a time in this process */
  private lane: Promise<unknown> = Promise.resolve();
  /**
   * Per (user, location): the usage-device rewrite in progress. Rewrites of one pair run one at a time
   * (each reads the prompts when it starts), so the last one written is never older than another.
   */
  private readonly pairLocks = new Map<string, Promise<void>>();
  /** work started by events (awaited by `stop`) */
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly deps: DevicePromptsDeps) {
    this.opts = { ...DEFAULT_DEVICE_PROMPT_OPTIONS, ...deps.options };
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  private newUuid(): string {
    return this.deps.newCommandUuid?.() ?? randomUUID().toUpperCase();
  }

  register(runner: JobRunner): void {
    runner.register(DELIVERY_DEVICE_JOB, (job) => this.deviceJob(job), { maxAttempts: 100 });
    runner.register(DELIVERY_RECONCILE_JOB, (job) => this.reconcile(job), { maxAttempts: 1_000_000 });
  }

  /** At start: the recurring reconcile job. */
  async scheduleAll(): Promise<void> {
    await this.deps.jobs.enqueue(DELIVERY_RECONCILE_JOB, {}, { key: DELIVERY_RECONCILE_KEY });
  }

  /** In-process events: they make things happen sooner (the jobs find everything anyway). */
  listen(events: EventBus): void {
    const log = this.deps.log;
    const guard = (what: string, p: Promise<unknown>) => {
      const run = p.then(
        () => undefined,
        (err: unknown) => log.warn({ err }, `device prompts: could not handle ${what}`),
      );
      this.inFlight.add(run);
      void run.finally(() => this.inFlight.delete(run));
    };
    events.on('command.result', (e) => this.onResult(e));
    events.on('registration.associated', ({ userId, locationId }) => {
      guard(
        'a registration',
        this.withdrawPairs([{ userId, locationId }], 'the user registered (accepted on another device)'),
      );
    });
    events.on('device.assigned', ({ udid }) => {
      guard('an assignment', this.wakeDevices([udid]));
    });
    events.on('enrollment.token_updated', ({ enrollmentId, udid, first }) => {
      // a device (re-)enrolled, or a user channel checked in: its user's prompts may go there now
      if (!first && enrollmentId === udid) return;
      guard(
        'a token update',
        this.deps.devices.getDevice(udid).then((d) => (d?.userId ? this.wakeDevices([udid]) : undefined)),
      );
    });
  }

  /** Asks for the device job of these devices (durable; deduplicated per device). */
  async wakeDevices(udids: Iterable<string>): Promise<void> {
    for (const udid of new Set(udids)) {
      await this.deps.jobs.enqueue(DELIVERY_DEVICE_JOB, { udid }, { key: deviceJobKey(udid) });
    }
  }

  /** Waits for the results in flight (the server calls this before closing the database). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resultTimer) clearTimeout(this.resultTimer);
    this.resultTimer = null;
    const batch = this.pendingResults.splice(0);
    if (batch.length > 0) await this.inLane(() => this.applyResults(batch)).catch(() => undefined);
    await this.lane.catch(() => undefined);
    await Promise.allSettled([...this.inFlight]);
  }

  private inLane<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lane.then(fn, fn);
    this.lane = run.catch(() => undefined);
    return run;
  }

  // ---------------------------------------------------------------------------------------------
  // the channel

  /**
   * Prompts every eligible device of each user (the channel's `deliver` and `resend`). Users with a
   * prompt queued (or already pending) are reported `sent` here, before the push, and answered
   * `pending` (so that a fast acknowledgement is never overwritten); users without an eligible device are
   * answered `skipped` with the reason.
   */
  async deliver(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    const now = this.now();
    const ready = items.filter((i) => i.inviteCode !== '' && i.invitationUrl !== '');
    const readyIds = new Set(ready.map((i) => i.usageId));
    const userIds = [...new Set(ready.map((i) => i.userId))];
    const [devices, users] = await Promise.all([
      this.deps.store.devicesOfUsers(userIds),
      this.deps.store.promptUsers(userIds),
    ]);
    const devicesOf = groupBy(devices, (d) => d.userId ?? '');
    const userOf = new Map(users.map((u) => [u.userId, u]));
    const claims: PromptClaim[] = [];
    const skipsOf = new Map<string, DeviceSkipReason[]>();
    const urlOf = new Map<string, string>();
    for (const item of ready) {
      const pair = { userId: item.userId, locationId: inv.locationId };
      urlOf.set(pairKey(pair), item.invitationUrl);
      const user: PromptUser = userOf.get(item.userId) ?? {
        userId: item.userId,
        username: item.username,
        email: item.email,
        managedAppleId: null,
      };
      const skips: DeviceSkipReason[] = [];
      for (const device of devicesOf.get(item.userId) ?? []) {
        claims.push(this.claimFor(device, user, pair, item.inviteCode, skips));
      }
      skipsOf.set(item.userId, skips);
    }
    const claimed = await this.deps.store.claim(claims, now);
    await this.queueCommands(claimed, urlOf, now);
    const prompted = new Map<string, string[]>();
    for (const p of [...claimed.queued, ...claimed.kept]) {
      prompted.set(p.userId, [...(prompted.get(p.userId) ?? []), p.udid]);
    }
    const pairs = ready.map((i) => ({ userId: i.userId, locationId: inv.locationId }));
    await this.refreshDevices(pairs, now);

    const outcomes: DeliveryOutcome[] = [];
    const reports: UsageReport[] = [];
    for (const item of items) {
      if (!readyIds.has(item.usageId)) {
        outcomes.push({ usageId: item.usageId, status: 'failed', reason: 'no_invitation_url' });
        continue;
      }
      const skips = skipsOf.get(item.userId) ?? [];
      const udids = prompted.get(item.userId) ?? [];
      const skipped =
        skips.length > 0
          ? `; no prompt on ${plural(skips.length, 'device')} (${[...new Set(skips)].join(', ')})`
          : '';
      if (udids.length > 0) {
        const lastAction = `InviteToProgram queued and pushed to ${plural(udids.length, 'device')}${skipped}`;
        reports.push({ usageId: item.usageId, status: 'sent', lastAction, at: now });
        outcomes.push({ usageId: item.usageId, status: 'pending', lastAction, at: now });
      } else {
        const reason = noPromptReason(skips);
        outcomes.push({
          usageId: item.usageId,
          status: 'skipped',
          reason,
          lastAction:
            skips.length === 0
              ? 'Not prompted: the user has no device'
              : `Not prompted: no eligible device${skipped}`,
          at: now,
        });
      }
    }
    await this.deps.reporter.report(reports);
    await this.push(claimed);
    return outcomes;
  }

  /** The claim of one device for one user's (user, location); records a skip's reason. */
  private claimFor(
    device: PromptDevice,
    user: PromptUser,
    pair: UserLocation,
    inviteCode: string,
    skips: DeviceSkipReason[],
  ): PromptClaim {
    const target = promptTarget(device, user);
    if (target.kind === 'skip') {
      skips.push(target.reason);
      return { ...pair, udid: device.udid, kind: 'skip', reason: target.reason };
    }
    return {
      ...pair,
      udid: device.udid,
      kind: 'prompt',
      enrollmentId: target.enrollmentId,
      inviteCode,
      newCommandUuid: this.newUuid(),
    };
  }

  /** Withdraws replaced prompts' commands and queues the new ones. */
  private async queueCommands(claimed: ClaimResult, urlOf: Map<string, string>, now: Date): Promise<void> {
    if (claimed.replaced.length > 0) await this.deps.commands.withdraw(claimed.replaced, now);
    const commands = claimed.queued.flatMap((q) => {
      const url = urlOf.get(pairKey(q));
      if (url === undefined) return [];
      return [
        {
          enrollmentId: q.enrollmentId,
          udid: q.udid,
          commandUuid: q.commandUuid,
          requestType: 'InviteToProgram',
          bodyXml: encodeCommand(q.commandUuid, inviteToProgram(url)),
        },
      ];
    });
    if (commands.length === 0) return;
    await this.deps.commands.enqueue(commands, now);
    for (const c of commands) {
      this.deps.events?.emit('command.queued', {
        udid: c.udid,
        enrollmentIds: [c.enrollmentId],
        commandUuid: c.commandUuid,
        requestType: c.requestType,
      });
    }
    this.deps.log.info({ prompts: commands.length }, 'InviteToProgram queued');
  }

  /** Pushes the channels of new prompts, and of kept ones (a resend wakes the device again). */
  private async push(claimed: ClaimResult): Promise<void> {
    const enrollments = [
      ...new Set([
        ...claimed.queued.map((q) => q.enrollmentId),
        ...claimed.kept.flatMap((k) => (k.enrollmentId === null ? [] : [k.enrollmentId])),
      ]),
    ];
    if (enrollments.length > 0) await this.deps.pusher.pushEnrollments(enrollments);
  }

  /**
   * Users who need no more prompting (the channel's `withdraw`): after a registration every pending
   * prompt of the (user, location) goes; when a usage leaves (scope, deleted invitation) its prompts go
   * unless another live invitation of the location still wants them.
   */
  async withdraw(
    inv: InvitationForDelivery,
    refs: readonly UsageRef[],
    reason: WithdrawReason,
  ): Promise<void> {
    let pairs: UserLocation[] = [
      ...new Map(refs.map((r) => [r.userId, { userId: r.userId, locationId: inv.locationId }])).values(),
    ];
    if (pairs.length === 0) return;
    if (reason !== 'registered') {
      const leaving = new Set(refs.map((r) => r.usageId));
      const others = await this.deps.store.usagesOf(pairs, [PROMPT_METHOD]);
      const wanted = new Set(
        others
          .filter((u) => !leaving.has(u.usageId) && !FINAL_STATUSES.includes(u.status))
          .map((u) => pairKey(u)),
      );
      pairs = pairs.filter((p) => !wanted.has(pairKey(p)));
    }
    const why =
      reason === 'registered'
        ? 'the user registered (accepted on another device)'
        : reason === 'left_scope'
          ? 'the user left the scope of the invitation'
          : 'the invitation was deleted';
    await this.withdrawPairs(pairs, why);
  }

  /** Withdraws every active prompt of these (user, location) pairs: never served again. */
  async withdrawPairs(pairs: readonly UserLocation[], why: string): Promise<number> {
    if (pairs.length === 0) return 0;
    const active = (await this.deps.store.promptsOf(pairs)).filter((p) => isActivePrompt(p.state));
    return this.withdrawPrompts(active, why);
  }

  /** Withdraws these prompts' commands, then records it (only for the commands really withdrawn). */
  private async withdrawPrompts(prompts: readonly PromptRecord[], why: string): Promise<number> {
    const uuids = prompts.map((p) => p.commandUuid).filter((u): u is string => u !== null);
    if (uuids.length === 0) return 0;
    const now = this.now();
    const withdrawn = await this.deps.commands.withdraw(uuids, now);
    const changed = await this.deps.store.markWithdrawn(
      withdrawn.map((w) => w.commandUuid),
      why,
      now,
    );
    if (changed.length > 0) {
      this.deps.log.info({ prompts: changed.length, why }, 'InviteToProgram withdrawn');
      await this.refreshDevices(changed, now);
    }
    return changed.length;
  }

  /** Runs `fn` once no other rewrite of these pairs is in progress (taken at once, so no cycles). */
  private async withPairs<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const prior = keys.map((k) => this.pairLocks.get(k)).filter((p): p is Promise<void> => p !== undefined);
    let release = () => {};
    const mine = new Promise<void>((resolve) => (release = resolve));
    for (const k of keys) this.pairLocks.set(k, mine);
    try {
      await Promise.all(prior);
      return await fn();
    } finally {
      release();
      for (const k of keys) if (this.pairLocks.get(k) === mine) this.pairLocks.delete(k);
    }
  }

  /** Rewrites the usage items' `devices` of these pairs from their prompts. */
  private async refreshDevices(
    pairs: readonly UserLocation[],
    now: Date,
  ): Promise<{ usages: DeliveryUsage[]; prompts: PromptRecord[] }> {
    const unique = [
      ...new Map(pairs.map((p) => [pairKey(p), { userId: p.userId, locationId: p.locationId }])).values(),
    ];
    if (unique.length === 0) return { usages: [], prompts: [] };
    return this.withPairs(
      unique.map((p) => pairKey(p)),
      () => this.rewriteDevices(unique, now),
    );
  }

  private async rewriteDevices(
    unique: readonly UserLocation[],
    now: Date,
  ): Promise<{ usages: DeliveryUsage[]; prompts: PromptRecord[] }> {
    const [usages, prompts] = await Promise.all([
      this.deps.store.usagesOf(unique, [PROMPT_METHOD]),
      this.deps.store.promptsOf(unique),
    ]);
    const byPair = groupBy(prompts, pairKey);
    // a few at a time: each is its own small transaction (a pool spreads them; SQLite's queue chains them)
    for (let i = 0; i < usages.length; i += SET_DEVICES_PARALLEL) {
      await Promise.all(
        usages
          .slice(i, i + SET_DEVICES_PARALLEL)
          .map((u) =>
            this.deps.reporter.setDevices(u.usageId, deviceRows(byPair.get(pairKey(u)) ?? []), now),
          ),
      );
    }
    return { usages, prompts };
  }

  // ---------------------------------------------------------------------------------------------
  // answers

  /** A command answer from this process (batched; the reconcile job finds the ones missed). */
  onResult(e: DomainEvents['command.result']): void {
    if (this.stopped) return;
    this.pendingResults.push({
      commandUuid: e.commandUuid,
      enrollmentId: e.enrollmentId,
      ...promptResultOf(e.status, e.report),
    });
    this.resultTimer ??= setTimeout(() => {
      this.resultTimer = null;
      const batch = this.pendingResults.splice(0);
      this.inLane(() => this.applyResults(batch)).catch((err: unknown) =>
        this.deps.log.warn({ err }, 'device prompts: could not apply command results (the reconcile will)'),
      );
    }, this.opts.resultBatchMs);
  }

  /** Applies answers to the prompts they belong to (others are ignored) and reports the usage. */
  async applyResults(results: readonly PromptResult[]): Promise<void> {
    if (results.length === 0) return;
    const now = this.now();
    const changed = await this.deps.store.applyResults(results, now);
    if (changed.length === 0) return;
    const { usages, prompts } = await this.refreshDevices(changed, now);
    const usagesOf = groupBy(usages, pairKey);
    const promptsOf = groupBy(prompts, pairKey);
    const reports: UsageReport[] = [];
    for (const row of changed) {
      const of = usagesOf.get(pairKey(row)) ?? [];
      if (row.state === 'acknowledged') {
        const lastAction = `InviteToProgram acknowledged on ${row.deviceLabel}`;
        for (const u of of) reports.push({ usageId: u.usageId, status: 'acknowledged', lastAction, at: now });
      } else if (row.state === 'failed') {
        // failed only when no other device of the user still has (or showed) the prompt
        const alive = (promptsOf.get(pairKey(row)) ?? []).some(
          (p) => isActivePrompt(p.state) || p.state === 'acknowledged',
        );
        if (alive) continue;
        const reason = row.reason ?? 'failed';
        const lastAction = `InviteToProgram failed on ${row.deviceLabel}: ${reason}`;
        for (const u of of)
          reports.push({ usageId: u.usageId, status: 'failed', reason, lastAction, at: now });
      }
    }
    await this.deps.reporter.report(reports);
    const counts = groupBy(changed, (c) => c.state);
    this.deps.log.debug(
      Object.fromEntries([...counts].map(([state, rows]) => [state, rows.length])),
      'InviteToProgram answers applied',
    );
  }

  // ---------------------------------------------------------------------------------------------
  // the device job

  async deviceJob(job: JobContext): Promise<JobResult> {
    const { udid } = devicePayload.parse(job.payload);
    await this.syncDevice(udid);
    return done();
  }

  /**
   * One device: prompts of a user it is no longer assigned to are withdrawn; its user's pending
   * `prompt_and_self_service` invitations get a prompt on it (or the reason it gets none).
   */
  async syncDevice(udid: string): Promise<void> {
    const now = this.now();
    // answers (or a re-enrollment's withdrawal) of its prompts that the events did not bring; commands
    // found nowhere are left to the reconcile job (they may be on their way into the queue)
    await this.settleOrphans(new Date(now.getTime() + 1), this.opts.reconcileLimit, udid);
    const device = await this.deps.store.promptDevice(udid);
    const stray = (await this.deps.store.promptsOnDevice(udid)).filter(
      (p) => isActivePrompt(p.state) && (device === null || device.userId !== p.userId),
    );
    if (stray.length > 0) await this.withdrawPrompts(stray, 'the device is no longer assigned to the user');
    if (!device?.userId) return;
    const userId = device.userId;
    const work = await this.deps.store.promptWorkForUser(userId);
    if (work.length === 0) return;
    const [user] = await this.deps.store.promptUsers([userId]);
    if (!user) return;
    const skips: DeviceSkipReason[] = [];
    const claims = work.map((w) => this.claimFor(device, user, w, w.inviteCode, skips));
    const claimed = await this.deps.store.claim(claims, now);
    const urlOf = new Map(work.map((w) => [pairKey(w), w.invitationUrl]));
    await this.queueCommands(claimed, urlOf, now);
    const { prompts } = await this.refreshDevices(work, now);
    const promptsOf = groupBy(prompts, pairKey);
    const fresh = new Set(claimed.queued.map((q) => pairKey(q)));
    const label = deviceLabel(device);
    const reports: UsageReport[] = [];
    let allDevices: PromptDevice[] | null = null;
    for (const w of work) {
      if (fresh.has(pairKey(w))) {
        const lastAction = `InviteToProgram queued and pushed to ${label} (assigned to the user)`;
        for (const u of w.usages) reports.push({ usageId: u.usageId, status: 'sent', lastAction, at: now });
        continue;
      }
      // still no prompt anywhere: a skipped usage's reason follows the user's devices
      const skipped = w.usages.filter((u) => u.status === 'skipped');
      const anyPrompt = (promptsOf.get(pairKey(w)) ?? []).some(
        (p) => isActivePrompt(p.state) || p.state === 'acknowledged',
      );
      if (skipped.length === 0 || anyPrompt || skips.length === 0) continue;
      allDevices ??= await this.deps.store.devicesOfUsers([userId]);
      const reasons = allDevices.flatMap((d) => {
        const t = promptTarget(d, user);
        return t.kind === 'skip' ? [t.reason] : [];
      });
      const reason = noPromptReason(reasons);
      for (const u of skipped) {
        reports.push({
          usageId: u.usageId,
          status: 'skipped',
          reason,
          lastAction: `Not prompted: no eligible device (${[...new Set(reasons)].join(', ')})`,
          at: now,
        });
      }
    }
    await this.deps.reporter.report(reports);
    await this.push(claimed);
    if (claimed.queued.length > 0) {
      this.deps.log.info({ udid, prompts: claimed.queued.length }, 'prompts for a device assigned later');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // the reconcile job

  /**
   * Active prompts whose command left the queue: their answer, read from the results table, is applied
   * (a command withdrawn by a re-enrollment makes the device's prompt `withdrawn`, to be sent again).
   * Answers the prompts whose command is nowhere (lost) and the devices whose commands were withdrawn.
   */
  private async settleOrphans(
    before: Date,
    limit: number,
    udid?: string,
  ): Promise<{ applied: number; lost: PromptRecord[]; withdrawnOn: string[] }> {
    const orphans = await this.deps.store.orphanedPrompts(before, limit, udid);
    const results: PromptResult[] = [];
    const lost: PromptRecord[] = [];
    const withdrawnOn: string[] = [];
    for (const o of orphans) {
      const status = RESULT_STATUSES.find((s) => s === o.result?.status);
      if (!o.result || !status || o.prompt.commandUuid === null || o.prompt.enrollmentId === null) {
        lost.push(o.prompt);
        continue;
      }
      let report: Record<string, unknown> | null = null;
      try {
        report = o.result.resultXml ? decodePlistDict(o.result.resultXml) : null;
      } catch {
        report = null;
      }
      if (status === 'withdrawn') withdrawnOn.push(o.prompt.udid);
      results.push({
        commandUuid: o.prompt.commandUuid,
        enrollmentId: o.prompt.enrollmentId,
        ...promptResultOf(status, report),
      });
    }
    if (results.length > 0) await this.inLane(() => this.applyResults(results));
    return { applied: results.length, lost, withdrawnOn };
  }

  async reconcile(job: JobContext): Promise<JobResult> {
    const now = this.now();
    const limit = this.opts.reconcileLimit;
    // 1. answers the events did not bring (another instance's crash, a restart): the results table
    const { applied, lost, withdrawnOn } = await this.settleOrphans(
      new Date(now.getTime() - this.opts.orphanGraceMs),
      limit,
    );
    // commands withdrawn by a re-enrollment: the device is prompted again (if its user still needs it)
    await this.wakeDevices(withdrawnOn);
    if (lost.length > 0) {
      // queued nowhere (a crash between recording and queueing): prompt again
      const changed = await this.deps.store.markWithdrawn(
        lost.map((p) => p.commandUuid).filter((u): u is string => u !== null),
        'the command was lost: prompting again',
        now,
      );
      if (changed.length > 0) await this.refreshDevices(changed, now);
      await this.wakeDevices(lost.map((p) => p.udid));
    }
    if (job.stopping) return later(0);
    // 2. prompts of users Apple reports associated (the event was missed)
    const registered = await this.deps.store.activePromptsOfAssociated(limit);
    if (registered.length > 0)
      await this.withdrawPrompts(registered, 'the user registered (accepted on another device)');
    // 3. devices reassigned or gone, and devices assigned without their job having run
    const wake = new Set([
      ...(await this.deps.store.devicesWithStrayPrompts(limit)),
      ...(await this.deps.store.devicesMissingPrompts(limit)),
    ]);
    await this.wakeDevices(wake);
    if (applied + lost.length + registered.length + wake.size > 0) {
      this.deps.log.info(
        { answers: applied, lost: lost.length, registered: registered.length, devices: wake.size },
        'device prompts reconciled',
      );
    }
    return later(this.opts.reconcileIntervalMs, undefined, true);
  }
}
