/**
 * What the simulated users did, summed up by a pure function over their reports: outcomes by channel,
 * time to accept, devices prompted, NotNow answers, Self Service traffic.
 */
import { summarize } from '../load/stats.ts';
import type { LatencySummary } from '../load/stats.ts';
import type { SelfServiceStats } from '../selfservice/self-service-client.ts';
import { BEHAVIOURS } from './behaviour.ts';
import type { BehaviourKind } from './behaviour.ts';
import { INVITATION_CHANNELS, INVITATION_OUTCOMES } from './simulated-user.ts';
import type { InvitationChannel, InvitationOutcome, UserReport } from './simulated-user.ts';

export interface UsersSummary {
  users: number;
  /** users with at least one device */
  withDevices: number;
  /** users that saw at least one invitation (prompt or Self Service) */
  sawInvitation: number;
  /** the behaviours drawn */
  behaviours: Record<BehaviourKind, number>;
  /**
   * outcomes, one per (user, invitation) seen — a user invited at several locations counts once per
   * invitation — in total and by the channel it was first seen (and acted) on
   */
  outcomes: Record<InvitationOutcome, number>;
  byChannel: Record<InvitationChannel, Record<InvitationOutcome, number>>;
  /** from first seeing the invitation to the Apple page's answer, for accepted and wrong Apple ID */
  timeToAccept: LatencySummary;
  /** InviteToProgram prompts shown (Acknowledged) and the distinct devices that showed one */
  prompts: number;
  devicesPrompted: number;
  notNowAnswers: number;
  selfService: SelfServiceStats;
  /** failure details, grouped */
  failures: Record<string, number>;
}

function zeroOutcomes(): Record<InvitationOutcome, number> {
  return Object.fromEntries(INVITATION_OUTCOMES.map((o) => [o, 0])) as Record<InvitationOutcome, number>;
}

function groupable(detail: string): string {
  return detail
    .replace(/[0-9a-f]{16,}/gi, '…')
    .replace(/https?:\/\/\S+/g, '<url>')
    .slice(0, 160);
}

export function summarizeUsers(
  reports: readonly UserReport[],
  selfService: readonly SelfServiceStats[] = [],
): UsersSummary {
  const behaviours = Object.fromEntries(BEHAVIOURS.map((b) => [b, 0])) as Record<BehaviourKind, number>;
  const outcomes = zeroOutcomes();
  const byChannel = Object.fromEntries(INVITATION_CHANNELS.map((c) => [c, zeroOutcomes()])) as Record<
    InvitationChannel,
    Record<InvitationOutcome, number>
  >;
  const times: number[] = [];
  const failures: Record<string, number> = {};
  let prompts = 0;
  let devicesPrompted = 0;
  let notNowAnswers = 0;
  for (const r of reports) {
    behaviours[r.behaviour]++;
    prompts += r.prompts;
    devicesPrompted += r.devicesPrompted.length;
    notNowAnswers += r.notNowAnswers;
    for (const inv of r.invitations) {
      outcomes[inv.outcome]++;
      byChannel[inv.channel][inv.outcome]++;
      if ((inv.outcome === 'accepted' || inv.outcome === 'wrong_apple_id') && inv.timeToActMs !== undefined) {
        times.push(inv.timeToActMs);
      }
      if (inv.outcome === 'failed') {
        const reason = groupable(inv.detail ?? inv.result ?? 'failed');
        failures[reason] = (failures[reason] ?? 0) + 1;
      }
    }
  }
  const ss: SelfServiceStats = { polls: 0, failures: 0, accepts: 0, byError: {} };
  for (const s of selfService) {
    ss.polls += s.polls;
    ss.failures += s.failures;
    ss.accepts += s.accepts;
    for (const [code, n] of Object.entries(s.byError) as [keyof SelfServiceStats['byError'], number][]) {
      ss.byError[code] = (ss.byError[code] ?? 0) + n;
    }
  }
  return {
    users: reports.length,
    withDevices: reports.filter((r) => r.devices.length > 0).length,
    sawInvitation: reports.filter((r) => r.invitations.length > 0).length,
    behaviours,
    outcomes,
    byChannel,
    timeToAccept: summarize(times),
    prompts,
    devicesPrompted,
    notNowAnswers,
    selfService: ss,
    failures,
  };
}

function ms(v: number): string {
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`;
}

const OUTCOME_LABELS: Record<InvitationOutcome, string> = {
  accepted: 'accepted',
  wrong_apple_id: 'wrong Apple ID',
  declined: 'declined',
  ignored: 'ignored',
  failed: 'failed',
  pending: 'not acted on yet',
};

/** The users' part of the end-of-run summary, as text. */
export function formatUsersSummary(s: UsersSummary): string {
  const lines: string[] = [];
  lines.push(
    `users: ${s.users} (${s.withDevices} with devices), ${s.sawInvitation} saw an invitation, ` +
      `${s.users - s.sawInvitation} did not`,
  );
  const parts = INVITATION_OUTCOMES.filter((o) => o !== 'pending' || s.outcomes.pending > 0).map((o) => {
    const channels = INVITATION_CHANNELS.filter((c) => s.byChannel[c][o] > 0)
      .map((c) => `${c === 'prompt' ? 'prompt' : 'Self Service'} ${s.byChannel[c][o]}`)
      .join(', ');
    return `${OUTCOME_LABELS[o]} ${s.outcomes[o]}${channels ? ` (${channels})` : ''}`;
  });
  lines.push(`  ${parts.join('; ')}`);
  const t = s.timeToAccept;
  lines.push(
    t.count > 0
      ? `  time to accept: p50 ${ms(t.p50Ms)}, p99 ${ms(t.p99Ms)}, max ${ms(t.maxMs)} (${t.count} accepted)`
      : '  time to accept: - (nobody accepted)',
  );
  lines.push(
    `  devices prompted ${s.devicesPrompted} (${s.prompts} prompts), NotNow answers ${s.notNowAnswers}, ` +
      `Self Service polls ${s.selfService.polls} (failed ${s.selfService.failures}, taps ${s.selfService.accepts})`,
  );
  const errors = Object.entries(s.selfService.byError);
  if (errors.length > 0) {
    lines.push(`  Self Service errors: ${errors.map(([code, n]) => `${code} ${n}`).join(', ')}`);
  }
  const failures = Object.entries(s.failures).sort((a, b) => b[1] - a[1]);
  for (const [reason, n] of failures.slice(0, 10)) lines.push(`  ${n}  ${reason}`);
  return lines.join('\n');
}
