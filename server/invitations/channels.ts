/**
 * Delivery channels: how an invitation reaches a user once Apple has registered them (an invite code
 * and invitation URL exist). One channel per distribution method (`email`, `prompt_and_self_service`,
 * `self_service_only`); `auto_register_only` has none. Until a method's channel is registered, its
 * users wait in `pending` (stage `waiting_channel`) and are handed over as soon as one is.
 *
 * Contract for implementations (see docs/invitations.md, "Plugging in a channel"):
 * - `deliver` and `resend` get batches (at most 500 items, all of one invitation) and answer one outcome
 *   per item; an item without an outcome counts as `pending` (handed over, nothing to report yet).
 *   They may be called again for the same usage (a crash between the call and the recording of its
 *   outcomes, or a re-registration with a new invite code): be idempotent per (usageId, inviteCode).
 *   Throwing makes the fan-out job retry the whole batch later (with back-off).
 * - Slow work (SMTP, APNs) belongs in the channel's own durable jobs: answer `pending` and report the
 *   result later through the `UsageReporter`.
 * - `withdraw` is told about usages that need no more prompting: the user left the scope, the
 *   invitation was deleted, or the user registered (rule 4: pending `InviteToProgram` commands are
 *   withdrawn and Self Service stops listing it as pending). It may receive usages the channel never saw
 *   and must be idempotent. Throwing makes the job try again later (the rows are removed only after).
 */
import type { ChannelMethod, DistributionMethod, EmailSettings, UsageStatus } from './model.ts';

/** The invitation a batch belongs to. */
export interface InvitationForDelivery {
  id: string;
  name: string;
  locationId: string;
  siteId: string | null;
  distributionMethod: DistributionMethod;
  requireLogin: boolean;
  email: EmailSettings | null;
}

/** One user to invite, with everything a channel needs. */
export interface UsageForDelivery {
  /** the usage id (the per-user invitation ID) */
  usageId: string;
  userId: string;
  username: string;
  fullName: string | null;
  email: string | null;
  /** the user has a local password (a login method for `requireLogin`) */
  hasPassword: boolean;
  /** Apple's registration of the user at the location (one per user and location) */
  clientUserId: string;
  inviteCode: string;
  /** the user's Apple invitation URL */
  invitationUrl: string;
  /** the code of the user's `/register/{code}` link, and the link itself */
  registrationCode: string;
  registrationUrl: string;
  /** when this user was last sent the invitation (null: never) */
  sentAt: Date | null;
}

export interface UsageRef {
  usageId: string;
  userId: string;
}

export type WithdrawReason = 'left_scope' | 'invitation_deleted' | 'registered';

/**
 * What a channel did with one usage. `sent` sets `sentAt`; `skipped` and `failed` need a `reason`
 * (e.g. `no_email`, `no_eligible_device`, an SMTP answer); `pending` means handed over, result later.
 */
export interface DeliveryOutcome {
  usageId: string;
  status: 'sent' | 'pending' | 'skipped' | 'failed';
  reason?: string | null;
  /** human-readable, shown as the usage's `lastAction` (a default is used when missing) */
  lastAction?: string;
  at?: Date;
}

export interface DeliveryChannel {
  readonly method: ChannelMethod;
  deliver(invitation: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]>;
  resend(invitation: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]>;
  withdraw(
    invitation: InvitationForDelivery,
    items: readonly UsageRef[],
    reason: WithdrawReason,
  ): Promise<void>;
}

/**
 * How channels report what happened later (an email accepted by SMTP, a command acknowledged, the link
 * opened). Reports never change a usage that is `registered` or `auto_registered`.
 */
export interface UsageReport {
  usageId: string;
  status: Exclude<UsageStatus, 'registered' | 'auto_registered'>;
  reason?: string | null;
  lastAction: string;
  at: Date;
  /** for `sent`: when (default `at`) */
  sentAt?: Date;
}

export interface UsageDeviceReport {
  udid: string;
  enrollmentId: string;
  commandUuid: string | null;
  commandStatus: string | null;
}

export interface UsageReporter {
  /** Applies status changes; answers how many usages changed. */
  report(reports: readonly UsageReport[]): Promise<number>;
  /** Replaces the device rows of a usage (the usage item's `devices`). */
  setDevices(usageId: string, devices: readonly UsageDeviceReport[], now: Date): Promise<void>;
}

/** The channels of this process, one per method. */
export class ChannelRegistry {
  private readonly channels = new Map<ChannelMethod, DeliveryChannel>();
  private readonly listeners: ((method: ChannelMethod) => void)[] = [];

  /** Registers (or replaces) the channel of its method; users waiting for it are handed over. */
  register(channel: DeliveryChannel): void {
    this.channels.set(channel.method, channel);
    for (const listener of this.listeners) listener(channel.method);
  }

  unregister(method: ChannelMethod): void {
    this.channels.delete(method);
  }

  get(method: DistributionMethod): DeliveryChannel | null {
    if (method === 'auto_register_only') return null;
    return this.channels.get(method) ?? null;
  }

  methods(): ChannelMethod[] {
    return [...this.channels.keys()];
  }

  onRegistered(listener: (method: ChannelMethod) => void): void {
    this.listeners.push(listener);
  }
}

const CHANNEL_NAMES: Record<ChannelMethod, string> = {
  email: 'email',
  prompt_and_self_service: 'device prompt and Self Service',
  self_service_only: 'Self Service',
};

export function channelName(method: ChannelMethod): string {
  return CHANNEL_NAMES[method];
}
