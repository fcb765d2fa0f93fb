import { UnknownIdsError } from '../directory/errors.ts';
import type { GroupStore, UserStore } from '../directory/store.ts';
import { BadRequestError, NotFoundError } from '../errors.ts';
import type { JobQueue } from '../jobs/job-runner.ts';
import type { Logger } from '../log.ts';
import { LocationTokenError } from '../vpp/errors.ts';
import type { VppStore } from '../vpp/store.ts';
import {
  AutoRegisterNotEnabledError,
  ImmutableFieldError,
  LocationNotFoundError,
  NotInScopeError,
  PushCertificateMissingError,
  SmtpNotConfiguredError,
} from './errors.ts';
import { fanoutKey, INVITATION_FANOUT } from './fanout.ts';
import {
  emptyCounts,
  type Invitation,
  type Page,
  type ResendCohort,
  type ScopeDefinition,
  type UsageCounts,
  type UsageItem,
  type UsageStatus,
} from './model.ts';
import { limitExplicitUsersToSite, normaliseScope, sameScope, siteUserSet } from './scope.ts';
import type { InvitationCreateBody, InvitationPatchBody, ResendBody } from './schemas.ts';
import type { InvitationStore } from './store.ts';
import type { CommandStore } from '../commands/store.ts';

/** What saving an invitation needs to know about the server's configuration. */
export interface InvitationRequirements {
  smtpConfigured: boolean;
  /** true when a push certificate is in use (uploaded, or the development one) */
  pushCertificatePresent(): Promise<boolean>;
}

export interface InvitationServiceDeps {
  store: InvitationStore;
  users: Pick<UserStore, 'missing' | 'listUserIdsInSite'>;
  groups: Pick<GroupStore, 'missing'>;
  locations: Pick<VppStore, 'getLocation'>;
  jobs: JobQueue;
  requirements: InvitationRequirements;
  log: Logger;
  /**
   * Where prompts still wait in a device's queue: the usage shows `sent` (served, no answer yet) from
   * the live queue, which the prompts' own records do not follow (see `withLiveCommandStatus`).
   */
  commands?: Pick<CommandStore, 'queueStatuses'>;
  /** how long a save waits for the scope to be applied, so that its answer counts the users */
  saveWaitMs?: number;
  now?: () => Date;
}

export interface InvitationView {
  invitation: Invitation;
  counts: UsageCounts;
}

const ID_CHUNK = 1000;

/** The admin side of invitations: save (with every requirement checked), read, change, delete, resend. */
export class InvitationService {
  constructor(private readonly deps: InvitationServiceDeps) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  /**
   * Saves an invitation and starts sending it: requirements are checked first (each a `409` naming it),
   * then the invitation is stored and its fan-out job queued. The answer waits (briefly) for the scope
   * to be applied, so that it counts the users in scope.
   */
  async create(body: InvitationCreateBody): Promise<InvitationView> {
    await this.checkScopeIds(body.scope);
    const loc = await this.deps.locations.getLocation(body.locationId);
    if (!loc) throw new LocationNotFoundError(body.locationId);
    if (loc.status !== 'active') throw new LocationTokenError(loc.status, loc.statusMessage);
    if (body.distributionMethod === 'email' && !this.deps.requirements.smtpConfigured) {
      throw new SmtpNotConfiguredError();
    }
    if (
      body.distributionMethod === 'prompt_and_self_service' &&
      !(await this.deps.requirements.pushCertificatePresent())
    ) {
      throw new PushCertificateMissingError();
    }
    if (
      (body.distributionMethod === 'auto_register_only' || body.autoRegisterManagedUsers) &&
      !loc.autoRegisterManagedUsers
    ) {
      throw new AutoRegisterNotEnabledError(loc.id);
    }
    const scope = limitExplicitUsersToSite(
      normaliseScope(body.scope),
      await siteUserSet(loc.siteId, this.deps.users),
    );
    const inv = await this.deps.store.createInvitation(
      {
        name: body.name,
        locationId: loc.id,
        siteId: loc.siteId,
        distributionMethod: body.distributionMethod,
        autoRegisterManagedUsers: body.autoRegisterManagedUsers,
        requireLogin: body.requireLogin,
        email: body.email ?? null,
        scope,
      },
      this.now(),
    );
    this.deps.log.info(
      { invitationId: inv.id, locationId: loc.id, method: inv.distributionMethod },
      'invitation saved: sending starts',
    );
    await this.deps.jobs.enqueue(INVITATION_FANOUT, { invitationId: inv.id }, { key: fanoutKey(inv.id) });
    return this.viewAfterScope(inv.id, inv.scopeGeneration);
  }

  async get(id: string): Promise<InvitationView> {
    const inv = await this.live(id);
    const counts = await this.deps.store.counts([inv.id]);
    return { invitation: inv, counts: counts.get(inv.id) ?? emptyCounts() };
  }

  async list(opts: {
    limit: number;
    cursor: string | null;
    q: string | null;
    locationId: string | null;
    siteId?: string | null;
  }): Promise<Page<InvitationView>> {
    const page = await this.deps.store.listInvitations(opts);
    const counts = await this.deps.store.counts(page.items.map((i) => i.id));
    return {
      items: page.items.map((invitation) => ({
        invitation,
        counts: counts.get(invitation.id) ?? emptyCounts(),
      })),
      nextCursor: page.nextCursor,
    };
  }

  /**
   * Changes name, `requireLogin`, email and scope. `locationId`, `distributionMethod` and
   * `autoRegisterManagedUsers` are accepted only unchanged (`400 immutable_field`). A scope change
   * invites new users at once and withdraws what is pending for users who left.
   */
  async update(id: string, body: InvitationPatchBody): Promise<InvitationView> {
    const inv = await this.live(id);
    const immutable: string[] = [];
    if (body.locationId !== undefined && body.locationId !== inv.locationId) immutable.push('locationId');
    if (body.distributionMethod !== undefined && body.distributionMethod !== inv.distributionMethod)
      immutable.push('distributionMethod');
    if (
      body.autoRegisterManagedUsers !== undefined &&
      body.autoRegisterManagedUsers !== inv.autoRegisterManagedUsers
    )
      immutable.push('autoRegisterManagedUsers');
    if (immutable.length > 0) throw new ImmutableFieldError(immutable);
    if (body.email === null && inv.distributionMethod === 'email') {
      throw new BadRequestError('invalid body', { email: 'required for the email distribution method' });
    }
    let scope: ScopeDefinition | undefined;
    if (body.scope !== undefined) {
      await this.checkScopeIds(body.scope);
      const loc = await this.deps.locations.getLocation(inv.locationId);
      const siteId = loc ? loc.siteId : inv.siteId;
      scope = limitExplicitUsersToSite(
        normaliseScope(body.scope),
        await siteUserSet(siteId, this.deps.users),
      );
    }
    const rescope = scope !== undefined && !sameScope(scope, inv.scope);
    const updated = await this.deps.store.updateInvitation(
      id,
      {
        ...(body.name !== undefined ? { name: body.name } : {}),
        ...(body.requireLogin !== undefined ? { requireLogin: body.requireLogin } : {}),
        ...(body.email !== undefined ? { email: body.email } : {}),
        ...(scope !== undefined ? { scope } : {}),
        rescope,
      },
      this.now(),
    );
    if (!updated) throw new NotFoundError('invitation');
    if (!rescope) return this.get(id);
    await this.deps.store.setFanout(id, { startedAt: this.now(), finishedAt: null }, this.now());
    this.deps.log.info({ invitationId: id }, 'invitation scope changed: sending to new users');
    await this.deps.jobs.enqueue(INVITATION_FANOUT, { invitationId: id }, { key: fanoutKey(id) });
    return this.viewAfterScope(id, updated.scopeGeneration);
  }

  /** Deletes the invitation: everything pending is withdrawn (by its fan-out job) and it disappears. */
  async delete(id: string): Promise<void> {
    if (!(await this.deps.store.markInvitationDeleted(id, this.now()))) throw new NotFoundError('invitation');
    this.deps.log.info({ invitationId: id }, 'invitation deleted: withdrawing what is pending');
    await this.deps.jobs.enqueue(INVITATION_FANOUT, { invitationId: id }, { key: fanoutKey(id) });
  }

  async usage(
    id: string,
    opts: { limit: number; cursor: string | null; status: UsageStatus | null; q: string | null },
  ): Promise<{ invitation: Invitation; page: Page<UsageItem> }> {
    const invitation = await this.live(id);
    const page = await this.deps.store.listUsage(id, { ...opts, withDevices: true });
    return { invitation, page: { ...page, items: await this.withLiveCommandStatus(page.items) } };
  }

  /**
   * A usage's device rows record a prompt as `queued` (or `not_now`) until its answer; while it is
   * still in the device's queue, the queue's own status is shown instead, so a prompt served on a
   * connect and not answered yet reads `sent`. One query per page, off the devices' hot path.
   */
  private async withLiveCommandStatus(items: UsageItem[]): Promise<UsageItem[]> {
    const waiting = items.flatMap((i) =>
      i.devices.filter(
        (d) => d.commandUuid !== null && (d.commandStatus === 'queued' || d.commandStatus === 'not_now'),
      ),
    );
    if (!this.deps.commands || waiting.length === 0) return items;
    const live = new Map(
      (await this.deps.commands.queueStatuses(waiting.map((d) => d.commandUuid ?? ''))).map((q) => [
        `${q.enrollmentId}\n${q.commandUuid}`,
        q.status,
      ]),
    );
    return items.map((i) => ({
      ...i,
      devices: i.devices.map((d) => {
        const status = d.commandUuid === null ? undefined : live.get(`${d.enrollmentId}\n${d.commandUuid}`);
        return status !== undefined && (d.commandStatus === 'queued' || d.commandStatus === 'not_now')
          ? { ...d, commandStatus: status }
          : d;
      }),
    }));
  }

  /** The whole usage, a page at a time (for the CSV export). */
  async *usageAll(
    id: string,
    opts: { status: UsageStatus | null; q: string | null },
  ): AsyncGenerator<UsageItem[]> {
    let cursor: string | null = null;
    for (;;) {
      const page: Page<UsageItem> = await this.deps.store.listUsage(id, {
        limit: 1000,
        cursor,
        status: opts.status,
        q: opts.q,
        withDevices: false,
      });
      if (page.items.length > 0) yield page.items;
      if (page.nextCursor === null) return;
      cursor = page.nextCursor;
    }
  }

  /**
   * Sends again to a cohort (default `not_registered`) or to chosen users (which must be in scope),
   * reusing each user's Apple registration and invite code. Answers how many users it covers.
   */
  async resend(id: string, body: ResendBody): Promise<number> {
    await this.live(id);
    const cohort: ResendCohort = body.cohort ?? 'not_registered';
    const userIds = body.userIds ?? null;
    if (userIds !== null) {
      const outside = await this.deps.store.notInScope(id, userIds);
      if (outside.length > 0) throw new NotInScopeError(outside);
    }
    const resent = await this.deps.store.markResend(id, { cohort, userIds }, this.now());
    this.deps.log.info(
      { invitationId: id, cohort, users: userIds?.length ?? null, resent },
      'invitation resend',
    );
    if (resent > 0) {
      await this.deps.store.setFanout(id, { finishedAt: null }, this.now());
      await this.deps.jobs.enqueue(INVITATION_FANOUT, { invitationId: id }, { key: fanoutKey(id) });
    }
    return resent;
  }

  /** The live invitation, or 404. */
  async live(id: string): Promise<Invitation> {
    const inv = await this.deps.store.getInvitation(id);
    if (!inv || inv.deletedAt !== null) throw new NotFoundError('invitation');
    return inv;
  }

  /** Waits (at most `saveWaitMs`) for the fan-out job to apply this scope generation, then reads. */
  private async viewAfterScope(id: string, generation: number): Promise<InvitationView> {
    const deadline = Date.now() + (this.deps.saveWaitMs ?? 5000);
    for (;;) {
      const inv = await this.deps.store.getInvitation(id);
      if (!inv || inv.deletedAt !== null) throw new NotFoundError('invitation');
      if (inv.computedGeneration >= generation || Date.now() >= deadline) {
        const counts = await this.deps.store.counts([id]);
        return { invitation: inv, counts: counts.get(id) ?? emptyCounts() };
      }
      await new Promise((r) => setTimeout(r, 15));
    }
  }

  /** Unknown users or groups in a scope: `400 unknown_ids` naming each by its field. */
  private async checkScopeIds(scope: ScopeDefinition): Promise<void> {
    const unknown: Record<string, string[]> = {};
    const check = async (
      field: string,
      ids: readonly string[],
      missing: (ids: readonly string[]) => Promise<string[]>,
    ) => {
      const found: string[] = [];
      for (let i = 0; i < ids.length; i += ID_CHUNK)
        found.push(...(await missing(ids.slice(i, i + ID_CHUNK))));
      if (found.length > 0) unknown[field] = found;
    };
    await check('scope.userIds', scope.userIds, (ids) => this.deps.users.missing(ids));
    await check('scope.groupIds', scope.groupIds, (ids) => this.deps.groups.missing(ids));
    await check('scope.exclusions.userIds', scope.exclusions.userIds, (ids) => this.deps.users.missing(ids));
    await check('scope.exclusions.groupIds', scope.exclusions.groupIds, (ids) =>
      this.deps.groups.missing(ids),
    );
    if (Object.keys(unknown).length > 0) throw new UnknownIdsError(unknown);
  }
}
