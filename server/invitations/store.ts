/**
 * Storage of invitations and their usage (implemented in `server/storage/invitation-store.ts`). Ids are
 * strings; times come from the caller. Usage changes are conditional on the row's stage (and never
 * overwrite `registered`/`auto_registered` unless they say so), so the fan-out job, the event listeners
 * and the channels can change rows concurrently, on several instances.
 */
import type { RegistrationState } from '../vpp/store.ts';
import type { DeliveryOutcome, UsageDeviceReport, UsageRef, UsageReport } from './channels.ts';
import type {
  Invitation,
  InvitationPatch,
  NewInvitation,
  Page,
  ResendCohort,
  UsageCounts,
  UsageItem,
  UsageStage,
  UsageStatus,
} from './model.ts';

export interface InvitationListOptions {
  limit: number;
  cursor: string | null;
  /** a case-insensitive substring of the name */
  q: string | null;
  locationId: string | null;
  /** only the invitations of that site (a site-limited API token's list) */
  siteId?: string | null;
}

export interface UsageListOptions {
  limit: number;
  cursor: string | null;
  status: UsageStatus | null;
  /** a case-insensitive substring of the username, full name or email */
  q: string | null;
  /** read the device rows (the CSV export does not need them) */
  withDevices: boolean;
}

/** A usage row with the user's registration at the invitation's location (null: none). */
export interface UsageRegistrationView {
  usageId: string;
  userId: string;
  stage: UsageStage;
  status: UsageStatus;
  registration: {
    state: RegistrationState;
    managed: boolean;
    errorNumber: number | null;
    errorMessage: string | null;
  } | null;
}

/** A usage row ready (or nearly) for a channel: the registration's invite code and URL when known. */
export interface DeliveryRow {
  usageId: string;
  userId: string;
  username: string;
  fullName: string | null;
  email: string | null;
  hasPassword: boolean;
  registrationCode: string;
  sentAt: Date | null;
  status: UsageStatus;
  registrationState: RegistrationState | null;
  clientUserId: string | null;
  inviteCode: string | null;
  /** the registration's invitation URL, else built from the location's template */
  invitationUrl: string | null;
}

export interface StageChange {
  usageIds: readonly string[];
  /** only rows in one of these stages change */
  from: readonly UsageStage[];
  to: UsageStage;
  status?: UsageStatus;
  /** set with `status` (null clears) */
  reason?: string | null;
  /** the new `lastAction` (left as it is when missing) */
  lastAction?: string;
  at: Date;
}

/** What the registration page needs about a code (see `server/registration/targets.ts`). */
export interface CodeTarget {
  usageId: string;
  userId: string;
  username: string;
  invitationName: string;
  orgName: string | null;
  requireLogin: boolean;
  status: UsageStatus;
  registrationState: RegistrationState | null;
  invitationUrl: string | null;
}

export interface InvitationStore {
  // ---- invitations ----
  createInvitation(input: NewInvitation, now: Date): Promise<Invitation>;
  /** Also a deleted one (`deletedAt` set) until the fan-out job has removed it. */
  getInvitation(id: string): Promise<Invitation | null>;
  /** Live invitations, ordered by id. */
  listInvitations(opts: InvitationListOptions): Promise<Page<Invitation>>;
  /**
   * Changes a live invitation; null when it does not exist (or is deleted). With `ifGeneration`, only
   * when its `scopeGeneration` is still that one (else null too: read it again).
   */
  updateInvitation(
    id: string,
    patch: InvitationPatch,
    now: Date,
    opts?: { ifGeneration?: number },
  ): Promise<Invitation | null>;
  /** Marks a live invitation deleted (its usage is withdrawn and removed by the fan-out job). */
  markInvitationDeleted(id: string, now: Date): Promise<boolean>;
  /** Removes the invitation row and whatever usage is left. */
  removeInvitation(id: string): Promise<void>;
  /** Live invitations of a location. */
  invitationsOfLocation(locationId: string): Promise<Invitation[]>;
  /** Records that the usage reflects `generation` (only while it is the current one). */
  markComputed(id: string, generation: number, now: Date): Promise<boolean>;
  setFanout(
    id: string,
    values: { startedAt?: Date | null; finishedAt?: Date | null; error?: string | null },
    now: Date,
  ): Promise<void>;
  /** Bumps the scope generation of every live invitation (the directory may have changed); their ids. */
  rescopeAll(now: Date): Promise<string[]>;
  /**
   * Invitations with fan-out work: deleted ones, scope not computed for the current generation, rows
   * in an active stage, or rows waiting for one of `channelMethods`.
   */
  invitationsNeedingWork(channelMethods: readonly string[]): Promise<string[]>;
  /** Live invitations waiting for the channel of this method. */
  invitationsWaitingFor(method: string): Promise<string[]>;
  /** Locations whose live invitations carry another site than the location's. */
  locationsWithStaleSite(): Promise<string[]>;
  /** Live invitations whose location no longer exists. */
  orphanedInvitations(): Promise<string[]>;
  /** Usage counts per invitation (every requested id is in the map). */
  counts(invitationIds: readonly string[]): Promise<Map<string, UsageCounts>>;

  // ---- usage (fan-out) ----
  /** Every user id with a usage row, ascending. */
  usageUserIds(invitationId: string): Promise<string[]>;
  /** Inserts `pending` rows (stage `register`) for users without one; answers how many were inserted. */
  addUsage(
    invitationId: string,
    locationId: string,
    userIds: readonly string[],
    newCode: () => string,
    now: Date,
  ): Promise<number>;
  /** The usage rows of these users (those that exist). */
  usageOfUsers(invitationId: string, userIds: readonly string[]): Promise<UsageRef[]>;
  /** Usage rows by id, ascending, after `afterId` (for removing them all). */
  usagePage(invitationId: string, afterId: string | null, limit: number): Promise<UsageRef[]>;
  deleteUsage(usageIds: readonly string[]): Promise<number>;
  /** Rows in a stage, ascending by id, after `afterId`. */
  usageInStage(
    invitationId: string,
    stage: UsageStage,
    afterId: string | null,
    limit: number,
  ): Promise<UsageRef[]>;
  /** The rows (by id) with their registration. */
  registrationViews(invitationId: string, usageIds: readonly string[]): Promise<UsageRegistrationView[]>;
  /** Rows in a stage with what a channel needs, ascending by id, after `afterId`. */
  deliveryRows(
    invitationId: string,
    stage: UsageStage,
    afterId: string | null,
    limit: number,
  ): Promise<DeliveryRow[]>;
  /** Moves rows between stages (conditional on `from`; final statuses are kept unless `status` is final). */
  changeStage(change: StageChange): Promise<number>;
  /** Moves every row of the invitation in `from` to `to` (e.g. to and from `waiting_channel`). */
  changeStageAll(
    invitationId: string,
    from: UsageStage,
    to: UsageStage,
    lastAction: string,
    now: Date,
  ): Promise<number>;
  /**
   * Records channel outcomes of rows in `from` (rows without an outcome are `pending`); the rows go to
   * `handed`. Registered rows are left alone.
   */
  applyOutcomes(
    from: UsageStage,
    usageIds: readonly string[],
    outcomes: readonly DeliveryOutcome[],
    defaults: { sentAction: string; pendingAction: string; failedAction: string; skippedAction: string },
    now: Date,
  ): Promise<number>;

  // ---- usage (Apple's word, any invitation of the location) ----
  /**
   * The users registered (Apple `Associated`): `auto_registered` when `managed`, else `registered`.
   * Rows the channel had go to `notify_registered`, others to `done`. Answers the invitations touched.
   */
  markRegistered(
    where: { locationId: string; userIds: readonly string[] } | { usageIds: readonly string[] },
    managed: boolean,
    lastAction: string,
    now: Date,
  ): Promise<string[]>;
  /** Apple gave these users an invite code: rows waiting for it (`apple`) go to `deliver`. Invitations touched. */
  advanceRegistered(locationId: string, userIds: readonly string[], now: Date): Promise<string[]>;
  /** Apple refused these users: rows waiting for it become `failed` (stage `done`). */
  failAtApple(locationId: string, userIds: readonly string[], reason: string, now: Date): Promise<string[]>;
  /** The user's registration was retired: rows go back to `pending`, stage `retired`. */
  retireUsage(locationId: string, userId: string, now: Date): Promise<number>;
  /** Rows whose registration is associated but which do not say so yet (missed events). */
  unregisteredButAssociated(limit: number): Promise<{ usageId: string; managed: boolean }[]>;

  // ---- admin ----
  listUsage(invitationId: string, opts: UsageListOptions): Promise<Page<UsageItem>>;
  /** The ids among `userIds` without a usage row in the invitation. */
  notInScope(invitationId: string, userIds: readonly string[]): Promise<string[]>;
  /**
   * Marks the cohort for a resend: rows the channel had go to `resend`, rows stopped before it (failed
   * at Apple, skipped, retired) go back to `register`; rows on their way are left. Answers how many
   * users the resend covers (registered ones never count).
   */
  markResend(
    invitationId: string,
    opts: { cohort: ResendCohort; userIds: readonly string[] | null },
    now: Date,
  ): Promise<number>;

  // ---- registration page ----
  findByCode(code: string): Promise<CodeTarget | null>;
  /** The user opened the link: `acknowledged` (unless registered). False for an unknown code. */
  recordOpened(code: string, lastAction: string, now: Date): Promise<boolean>;

  // ---- channels' reports ----
  report(reports: readonly UsageReport[], now: Date): Promise<number>;
  setDevices(usageId: string, devices: readonly UsageDeviceReport[], now: Date): Promise<void>;
}
