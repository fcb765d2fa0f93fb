/**
 * The invitations domain: volume-purchasing invitations, their scope, and the per-user usage rows.
 * Plain types only (no express, no ORM). Ids are strings; times are `Date`s.
 */

export const DISTRIBUTION_METHODS = [
  'email',
  'prompt_and_self_service',
  'self_service_only',
  'auto_register_only',
] as const;
export type DistributionMethod = (typeof DISTRIBUTION_METHODS)[number];

/** The methods that hand invitations to a delivery channel (`auto_register_only` sends nothing). */
export type ChannelMethod = Exclude<DistributionMethod, 'auto_register_only'>;

export function isChannelMethod(method: DistributionMethod): method is ChannelMethod {
  return method !== 'auto_register_only';
}

/** The usage statuses of `api.md`, in the order they are presented. */
export const USAGE_STATUSES = [
  'pending',
  'sent',
  'acknowledged',
  'registered',
  'auto_registered',
  'skipped',
  'failed',
] as const;
export type UsageStatus = (typeof USAGE_STATUSES)[number];

/** Statuses no channel outcome may overwrite (Apple said the user is registered). */
export const FINAL_STATUSES: readonly UsageStatus[] = ['registered', 'auto_registered'];

/**
 * Where a usage row is in the fan-out (internal, never presented):
 * - `register`: `ensureRegistered` must be called for the user;
 * - `apple`: registration asked for; waiting for Apple's `Registered` (invite code) or `Associated`;
 * - `deliver`: registered with an invite code: to hand to the method's channel;
 * - `waiting_channel`: no channel is registered for the method yet (looked at again on each run);
 * - `handed`: the channel has it (the status says what the channel reported);
 * - `resend`: the admin asked for a resend: to hand to the channel's `resend`;
 * - `notify_registered`: registered after the channel had it: the channel must withdraw its prompts;
 * - `retired`: the registration was retired at Apple: idle until a resend registers the user again;
 * - `done`: nothing more to do (registered, auto-registered, skipped or failed before any channel).
 */
export const USAGE_STAGES = [
  'register',
  'apple',
  'deliver',
  'waiting_channel',
  'handed',
  'resend',
  'notify_registered',
  'retired',
  'done',
] as const;
export type UsageStage = (typeof USAGE_STAGES)[number];

/** Stages with fan-out work still to do (the job keeps running while rows are in them). */
export const ACTIVE_STAGES: readonly UsageStage[] = [
  'register',
  'apple',
  'deliver',
  'resend',
  'notify_registered',
];

export interface ScopeExclusions {
  userIds: string[];
  groupIds: string[];
}

export interface ScopeDefinition {
  allUsers: boolean;
  userIds: string[];
  groupIds: string[];
  exclusions: ScopeExclusions;
}

export interface EmailSettings {
  senderName: string;
  senderAddress: string;
  subject: string;
  /** contains `%@` (each is replaced by the user's registration URL) */
  message: string;
}

export interface Invitation {
  id: string;
  name: string;
  locationId: string;
  /** the location's site (copied on save and when the location's site changes) */
  siteId: string | null;
  distributionMethod: DistributionMethod;
  autoRegisterManagedUsers: boolean;
  requireLogin: boolean;
  email: EmailSettings | null;
  scope: ScopeDefinition;
  /** bumped by every change that can change who is in scope (scope edits, site change, rescope) */
  scopeGeneration: number;
  /** the generation whose scope the usage rows reflect */
  computedGeneration: number;
  fanoutStartedAt: Date | null;
  fanoutFinishedAt: Date | null;
  fanoutError: string | null;
  deletedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface NewInvitation {
  name: string;
  locationId: string;
  siteId: string | null;
  distributionMethod: DistributionMethod;
  autoRegisterManagedUsers: boolean;
  requireLogin: boolean;
  email: EmailSettings | null;
  scope: ScopeDefinition;
}

export interface InvitationPatch {
  name?: string;
  requireLogin?: boolean;
  email?: EmailSettings | null;
  scope?: ScopeDefinition;
  siteId?: string | null;
  /** bump `scopeGeneration` (who is in scope must be computed again) */
  rescope?: boolean;
}

/** Per-status counts and per-stage counts of an invitation's usage. */
export interface UsageCounts {
  total: number;
  byStatus: Record<UsageStatus, number>;
  byStage: Record<UsageStage, number>;
}

export function emptyCounts(): UsageCounts {
  return {
    total: 0,
    byStatus: Object.fromEntries(USAGE_STATUSES.map((s) => [s, 0])) as Record<UsageStatus, number>,
    byStage: Object.fromEntries(USAGE_STAGES.map((s) => [s, 0])) as Record<UsageStage, number>,
  };
}

export interface UsageDevice {
  udid: string;
  enrollmentId: string;
  commandUuid: string | null;
  commandStatus: string | null;
}

/** One user in an invitation's scope, as the usage list shows it. */
export interface UsageItem {
  id: string;
  invitationId: string;
  userId: string;
  username: string;
  fullName: string | null;
  email: string | null;
  status: UsageStatus;
  reason: string | null;
  lastAction: string | null;
  lastActionAt: Date | null;
  sentAt: Date | null;
  registrationCode: string;
  /** the user's Apple invitation URL (known once Apple registered the user) */
  invitationUrl: string | null;
  devices: UsageDevice[];
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export type ResendCohort = 'not_registered' | 'never_sent' | 'failed';
