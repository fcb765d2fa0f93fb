/**
 * Storage of device prompts (`InviteToProgram` per user, location and device) and the reads of
 * invitations, registrations and devices that device delivery and Self Service need (implemented in
 * `server/storage/delivery-store.ts`). Ids are strings; times come from the caller. Every change of a
 * prompt row is conditional on its state (and revision), so jobs, result handlers and instances can
 * change prompts concurrently.
 */
import type { CommandStatus } from '../commands/store.ts';
import type { UsageStage, UsageStatus } from '../invitations/model.ts';
import type { PromptDevice, PromptUser } from './eligibility.ts';

export const PROMPT_STATES = ['skipped', 'queued', 'not_now', 'acknowledged', 'failed', 'withdrawn'] as const;
export type PromptState = (typeof PROMPT_STATES)[number];
/** A command waits in the queue for the device. */
export const ACTIVE_PROMPT_STATES: readonly PromptState[] = ['queued', 'not_now'];

export const isActivePrompt = (state: PromptState) => ACTIVE_PROMPT_STATES.includes(state);

/** A user's registration at a location: the unit a prompt is for (rule 5). */
export interface UserLocation {
  userId: string;
  locationId: string;
}

export const pairKey = (p: UserLocation) => `${p.userId}:${p.locationId}`;

/** A device's current prompt for one (user, location), or why it got none. */
export interface PromptRecord {
  id: string;
  userId: string;
  locationId: string;
  udid: string;
  enrollmentId: string | null;
  commandUuid: string | null;
  inviteCode: string | null;
  state: PromptState;
  /** the command's status as the usage shows it (null for skipped rows) */
  commandStatus: CommandStatus | null;
  reason: string | null;
  queuedAt: Date | null;
  answeredAt: Date | null;
  updatedAt: Date;
  /** how the device is named in last actions */
  deviceLabel: string;
}

/** What one device should have for one (user, location): a prompt on a channel, or none (why). */
export type PromptClaim = UserLocation & { udid: string } & (
    | {
        kind: 'prompt';
        enrollmentId: string;
        inviteCode: string;
        /** used when a new prompt is needed */
        newCommandUuid: string;
      }
    | { kind: 'skip'; reason: string }
  );

export interface NewPrompt extends UserLocation {
  udid: string;
  enrollmentId: string;
  commandUuid: string;
}

export interface ClaimResult {
  /** new prompts: their commands must be queued now */
  queued: NewPrompt[];
  /** prompts already pending for the same invite code on the same channel (no duplicate) */
  kept: PromptRecord[];
  /** commands of active prompts replaced by a new one (another invite code or channel): to withdraw */
  replaced: string[];
}

/** A command's answer, as a prompt records it. */
export interface PromptResult {
  commandUuid: string;
  enrollmentId: string;
  state: 'not_now' | 'acknowledged' | 'failed' | 'withdrawn';
  commandStatus: CommandStatus;
  reason: string | null;
}

/** A usage row of a live invitation (for reports and device rows). */
export interface DeliveryUsage extends UserLocation {
  usageId: string;
  invitationId: string;
  status: UsageStatus;
  stage: UsageStage;
}

/** A (user, location) whose prompt-method usages wait for devices (the registration has an invite code). */
export interface PromptWork extends UserLocation {
  inviteCode: string;
  invitationUrl: string;
  usages: { usageId: string; status: UsageStatus }[];
}

/** One invitation as Self Service lists it. */
export interface SelfServiceItem {
  usageId: string;
  invitationId: string;
  invitationName: string;
  locationName: string;
  userId: string;
  status: UsageStatus;
  /** Apple reports the user associated, or the usage says registered */
  registered: boolean;
  invitationUrl: string;
}

/** An active prompt whose command is no longer queued, with what the results table says. */
export interface OrphanedPrompt {
  prompt: PromptRecord;
  result: { status: string; resultXml: string | null } | null;
}

export interface DeliveryStore {
  // ---- devices and users ----
  /** The devices assigned to these users, with their channels. */
  devicesOfUsers(userIds: readonly string[]): Promise<PromptDevice[]>;
  promptDevice(udid: string): Promise<PromptDevice | null>;
  promptUsers(userIds: readonly string[]): Promise<PromptUser[]>;

  // ---- prompts ----
  promptsOf(pairs: readonly UserLocation[]): Promise<PromptRecord[]>;
  promptsOnDevice(udid: string): Promise<PromptRecord[]>;
  /**
   * Records what each device should have. A prompt claim keeps an active prompt of the same invite code
   * and channel, else makes the row a new `queued` prompt (`newCommandUuid`); a skip claim records the
   * reason unless the row holds a prompt. Concurrent claims of one row end in one prompt.
   */
  claim(claims: readonly PromptClaim[], now: Date): Promise<ClaimResult>;
  /** Records answers of active prompts (by command and enrollment); answers the rows changed. */
  applyResults(results: readonly PromptResult[], now: Date): Promise<PromptRecord[]>;
  /** Active prompts of these commands become `withdrawn`; answers the rows changed. */
  markWithdrawn(commandUuids: readonly string[], reason: string, now: Date): Promise<PromptRecord[]>;

  // ---- invitations ----
  /** Usage rows of live invitations of these methods for these (user, location) pairs. */
  usagesOf(pairs: readonly UserLocation[], methods: readonly string[]): Promise<DeliveryUsage[]>;
  /** The user's `prompt_and_self_service` usages that the channel has and that are not registered. */
  promptWorkForUser(userId: string): Promise<PromptWork[]>;
  /** What Self Service lists for the user (invitations handed to a Self Service channel), by usage id. */
  selfServiceItems(userId: string): Promise<SelfServiceItem[]>;
  selfServiceItem(usageId: string): Promise<SelfServiceItem | null>;

  // ---- reconcile ----
  /** Active prompts not changed since `before` whose command is not in the queue any more (of one device). */
  orphanedPrompts(before: Date, limit: number, udid?: string): Promise<OrphanedPrompt[]>;
  /** Active prompts of registrations Apple reports associated. */
  activePromptsOfAssociated(limit: number): Promise<PromptRecord[]>;
  /** Devices with active prompts for a user they are no longer assigned to (or gone). */
  devicesWithStrayPrompts(limit: number): Promise<string[]>;
  /** Enrolled devices whose user has prompt work at a location where the device has no prompt row. */
  devicesMissingPrompts(limit: number): Promise<string[]>;
}
