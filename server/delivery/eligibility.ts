/**
 * Which channel of a device gets a user's `InviteToProgram`, or why none does (pure functions, no I/O).
 * Apple: iOS/iPadOS 7.0+ on the device channel; macOS 10.9+ on the user channel only; a Shared iPad on
 * its user channel; never under User Enrollment.
 */
import type { ChannelType } from '../../shared/mdm/index.ts';
import type { Platform } from '../checkin/store.ts';

export const SKIP_REASONS = [
  'user_enrollment_not_supported',
  'os_too_old',
  'os_version_unknown',
  'no_user_channel',
  'not_enrolled',
] as const;
/** Why one device gets no prompt (shown as the usage's reason when no device of the user gets one). */
export type DeviceSkipReason = (typeof SKIP_REASONS)[number];

/** The user has no device at all (no prompt, and no Self Service to list it in). */
export const NO_DEVICE = 'no_device';
/** Several devices, none eligible, for different reasons. */
export const NO_ELIGIBLE_DEVICE = 'no_eligible_device';

export interface PromptChannel {
  id: string;
  channel: ChannelType;
  userShortName: string | null;
  enabled: boolean;
  tokenUpdatedAt: Date | null;
}

export interface PromptDevice {
  udid: string;
  platform: Platform;
  osVersion: string | null;
  userEnrollment: boolean;
  enrolled: boolean;
  deviceName: string | null;
  productName: string | null;
  model: string | null;
  /** the directory user it is assigned to */
  userId: string | null;
  channels: PromptChannel[];
}

/** Who the prompt is for: the names a user channel's short name may carry. */
export interface PromptUser {
  userId: string;
  username: string;
  email: string | null;
  managedAppleId: string | null;
}

export type PromptTarget =
  { kind: 'prompt'; enrollmentId: string } | { kind: 'skip'; reason: DeviceSkipReason };

/** The first versions that take `InviteToProgram`. */
export const MIN_IOS: readonly number[] = [7, 0];
export const MIN_MACOS: readonly number[] = [10, 9];

/** `"10.15.7"` → `[10, 15, 7]`; the leading numeric part only (`"17.5 (a)"` → `[17, 5]`); else null. */
export function parseOsVersion(version: string | null | undefined): number[] | null {
  if (typeof version !== 'string') return null;
  const m = /^\s*(\d{1,6})(?:\.(\d{1,6}))?(?:\.(\d{1,6}))?/.exec(version);
  if (!m) return null;
  return [m[1], m[2], m[3]].filter((p): p is string => p !== undefined).map(Number);
}

/** Compares versions part by part (missing parts are 0): negative, zero or positive. */
export function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

const same = (a: string | null, b: string | null) =>
  a !== null && b !== null && a.trim().toLowerCase() === b.trim().toLowerCase();

/** The most recently updated of these channels (the one in use now). */
function latest(channels: readonly PromptChannel[]): PromptChannel | undefined {
  return [...channels].sort(
    (a, b) =>
      (b.tokenUpdatedAt?.getTime() ?? 0) - (a.tokenUpdatedAt?.getTime() ?? 0) || a.id.localeCompare(b.id),
  )[0];
}

/**
 * The channel of `device` that gets `user`'s prompt:
 * - User Enrollment: none (`user_enrollment_not_supported`);
 * - not enrolled (checked out, or not yet): none (`not_enrolled`);
 * - too old or unknown OS version: none (`os_too_old`, `os_version_unknown`);
 * - macOS: the user channel whose short name is the user's username, else the console user's channel
 *   (the user channel updated last); none enrolled: `no_user_channel`;
 * - a Shared iPad (it has Shared iPad user channels): the channel of the user (short name = Managed
 *   Apple ID, username or email), else the one signed in last;
 * - iOS and iPadOS: the device channel.
 */
export function promptTarget(device: PromptDevice, user: PromptUser): PromptTarget {
  if (device.userEnrollment || device.channels.some((c) => c.channel.startsWith('user_enrollment'))) {
    return { kind: 'skip', reason: 'user_enrollment_not_supported' };
  }
  if (!device.enrolled) return { kind: 'skip', reason: 'not_enrolled' };
  const version = parseOsVersion(device.osVersion);
  if (version === null) return { kind: 'skip', reason: 'os_version_unknown' };
  const enabled = device.channels.filter((c) => c.enabled);
  if (device.platform === 'macos') {
    if (compareVersions(version, MIN_MACOS) < 0) return { kind: 'skip', reason: 'os_too_old' };
    const users = enabled.filter((c) => c.channel === 'user');
    const channel = users.find((c) => same(c.userShortName, user.username)) ?? latest(users);
    return channel
      ? { kind: 'prompt', enrollmentId: channel.id }
      : { kind: 'skip', reason: 'no_user_channel' };
  }
  if (compareVersions(version, MIN_IOS) < 0) return { kind: 'skip', reason: 'os_too_old' };
  const shared = device.channels.filter((c) => c.channel === 'shared_ipad_user');
  if (shared.length > 0) {
    const signedIn = shared.filter((c) => c.enabled);
    const channel =
      signedIn.find(
        (c) =>
          same(c.userShortName, user.managedAppleId) ||
          same(c.userShortName, user.username) ||
          same(c.userShortName, user.email),
      ) ?? latest(signedIn);
    return channel
      ? { kind: 'prompt', enrollmentId: channel.id }
      : { kind: 'skip', reason: 'no_user_channel' };
  }
  const deviceChannel = enabled.find((c) => c.channel === 'device' && c.id === device.udid);
  return deviceChannel
    ? { kind: 'prompt', enrollmentId: deviceChannel.id }
    : { kind: 'skip', reason: 'not_enrolled' };
}

/** The usage's reason when none of the user's devices gets a prompt. */
export function noPromptReason(skips: readonly DeviceSkipReason[]): string {
  if (skips.length === 0) return NO_DEVICE;
  const distinct = [...new Set(skips)];
  return distinct.length === 1 && distinct[0] !== undefined ? distinct[0] : NO_ELIGIBLE_DEVICE;
}

/** How a device is named in usage last actions: `iPhone15,2 00008120-…` or its name. */
export function deviceLabel(d: {
  udid: string;
  deviceName: string | null;
  productName: string | null;
  model: string | null;
  platform?: string;
}): string {
  const name = d.deviceName ?? d.productName ?? d.model ?? d.platform ?? 'device';
  return `${name} ${d.udid}`;
}
