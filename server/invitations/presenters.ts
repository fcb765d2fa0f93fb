import { registrationUrl } from '../registration/targets.ts';
import type { Invitation, UsageCounts, UsageItem } from './model.ts';

/** JSON of invitations and their usage: camelCase, ISO 8601 times, ids as strings. */

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export type FanoutState =
  'scoping' | 'registering' | 'waiting_for_apple' | 'delivering' | 'waiting_for_channel' | 'done';

/** Progress of the fan-out, from the stages of the usage rows. */
export function fanoutProgress(inv: Invitation, counts: UsageCounts) {
  const s = counts.byStage;
  let state: FanoutState;
  if (inv.computedGeneration < inv.scopeGeneration) state = 'scoping';
  else if (s.register > 0) state = 'registering';
  else if (s.apple > 0) state = 'waiting_for_apple';
  else if (s.deliver + s.resend + s.notify_registered > 0) state = 'delivering';
  else if (s.waiting_channel > 0) state = 'waiting_for_channel';
  else state = 'done';
  const unprocessed = s.register + s.apple + s.deliver + s.resend;
  return {
    state,
    processed: counts.total - unprocessed,
    total: counts.total,
    waitingForChannel: s.waiting_channel,
    startedAt: iso(inv.fanoutStartedAt),
    finishedAt: state === 'done' ? iso(inv.fanoutFinishedAt) : null,
    error: inv.fanoutError,
  };
}

export function presentInvitation(inv: Invitation, counts: UsageCounts) {
  return {
    id: inv.id,
    name: inv.name,
    locationId: inv.locationId,
    siteId: inv.siteId,
    distributionMethod: inv.distributionMethod,
    autoRegisterManagedUsers: inv.autoRegisterManagedUsers,
    requireLogin: inv.requireLogin,
    email: inv.email,
    scope: inv.scope,
    counts: { ...counts.byStatus },
    fanout: fanoutProgress(inv, counts),
    createdAt: inv.createdAt.toISOString(),
    updatedAt: inv.updatedAt.toISOString(),
  };
}

/**
 * One usage item (`api.md`), plus `fullName`, `invitationUrl` (the user's Apple invitation URL, for
 * copying; null until Apple registered the user) and `registrationUrl` (the `/register/{code}` link the
 * email carries; email invitations only).
 */
export function presentUsage(
  item: UsageItem,
  inv: Pick<Invitation, 'distributionMethod'>,
  publicUrl: string,
) {
  return {
    id: item.id,
    userId: item.userId,
    username: item.username,
    fullName: item.fullName,
    email: item.email,
    status: item.status,
    lastAction: item.lastAction,
    lastActionAt: iso(item.lastActionAt),
    sentAt: iso(item.sentAt),
    reason: item.reason,
    devices: item.devices.map((d) => ({
      udid: d.udid,
      enrollmentId: d.enrollmentId,
      commandStatus: d.commandStatus,
      commandUuid: d.commandUuid,
    })),
    invitationUrl: item.invitationUrl,
    registrationUrl:
      inv.distributionMethod === 'email' ? registrationUrl(publicUrl, item.registrationCode) : null,
  };
}

/** The CSV export's columns, exactly these, in this order (`api.md`). */
export const USAGE_CSV_COLUMNS = [
  'id',
  'username',
  'email',
  'status',
  'lastAction',
  'lastActionAt',
  'sentAt',
  'reason',
] as const;

/** One RFC 4180 field: quoted when it holds a comma, a quote, CR or LF (quotes doubled). */
export function csvField(value: string | null): string {
  if (value === null) return '';
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/** One CSV record (CRLF-terminated). */
export function csvRecord(values: readonly (string | null)[]): string {
  return `${values.map(csvField).join(',')}\r\n`;
}

export function usageCsvRecord(item: UsageItem): string {
  return csvRecord([
    item.id,
    item.username,
    item.email,
    item.status,
    item.lastAction,
    iso(item.lastActionAt),
    iso(item.sentAt),
    item.reason,
  ]);
}
