/**
 * The `email` delivery channel: one message per user in scope, from the invitation's sender, with its
 * subject and message, every `%@` replaced by the user's registration link (`<public URL>/register/<code>`).
 *
 * Durable and paced. `deliver`/`resend` record a message row (`EmailStore`) and enqueue one job per
 * message (key `email:<usageId>:<seq>`, `seq` counting the usage's messages), and answer `pending`.
 * The job sends through the `Mailer` and reports through the `UsageReporter`: accepted → `sent`;
 * a temporary failure (4xx, no answer) → retried with back-off, the usage saying so; a permanent one
 * (5xx) → `failed` with the server's answer as `reason`.
 *
 * Sent once: a message row goes `queued` → `sending` (recorded before the message is handed to SMTP)
 * → `sent`/`failed`, and a job finds a `sent` row and stops. What cannot be excluded is a crash in the
 * moment between the SMTP server accepting a message and `sent` being recorded: the row is then still
 * `sending`, and the job, run again after the restart, sends it again with the same Message-ID
 * (`<vpp-invitation.<usageId>.<seq>.<random>@<public host>>`), so the duplicate is recognisable (and
 * dropped by mail systems that de-duplicate on Message-ID). The alternative, never retrying an
 * interrupted message, could lose an invitation silently.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type {
  DeliveryChannel,
  DeliveryOutcome,
  InvitationForDelivery,
  UsageForDelivery,
  UsageRef,
  UsageReporter,
  WithdrawReason,
} from '../invitations/channels.ts';
import type { InvitationStore } from '../invitations/store.ts';
import {
  done,
  fail,
  later,
  retry,
  type JobContext,
  type JobResult,
  type JobRunner,
} from '../jobs/job-runner.ts';
import type { Logger } from '../log.ts';
import type { EmailMessage, EmailStore, NewEmailMessage } from './email-store.ts';
import { renderInvitationEmail } from './invitation-email.ts';
import { toMailError, type Mailer } from './mailer.ts';

export const EMAIL_SEND_JOB = 'invitations.email';
export const emailJobKey = (usageId: string, seq: number) => `email:${usageId}:${seq}`;

export interface EmailChannelOptions {
  /** Pacing: messages handed to SMTP per second by this process (`MDM_MAIL_RATE`). */
  messagesPerSecond: number;
  /** Tries of a message before a temporary failure becomes `failed` (with the job runner's back-off). */
  maxAttempts: number;
  /** A job waits this long at most for its sending slot; beyond, it comes back later. */
  maxPacingWaitMs: number;
}

export const DEFAULT_EMAIL_OPTIONS: Readonly<EmailChannelOptions> = Object.freeze({
  messagesPerSecond: 5,
  maxAttempts: 30,
  maxPacingWaitMs: 2000,
});

export interface EmailChannelDeps {
  store: EmailStore;
  mailer: Mailer;
  jobs: Pick<JobRunner, 'enqueueMany'>;
  reporter: UsageReporter;
  invitations: Pick<InvitationStore, 'getInvitation'>;
  /** The server's public URL (the Message-IDs' domain). */
  publicUrl: string;
  /** An LDAP directory is configured: with `requireLogin`, users without a local password can log in. */
  ldapConfigured: boolean;
  log: Logger;
  options?: Partial<EmailChannelOptions>;
  now?: () => Date;
}

const jobPayload = z.object({ emailId: z.string().regex(/^[1-9][0-9]{0,15}$/) });

/** Evenly spaced slots: at most one per `intervalMs`. */
export class Pacer {
  private next = 0;

  constructor(private readonly intervalMs: number) {}

  /** Books the next free slot when it comes within `maxWaitMs`: answers how long to wait for it, else null. */
  take(now: number, maxWaitMs: number): number | null {
    const slot = Math.max(now, this.next);
    if (slot - now > maxWaitMs) return null;
    this.next = slot + this.intervalMs;
    return slot - now;
  }

  /** How long until the next slot is free. */
  waitMs(now: number): number {
    return Math.max(0, this.next - now);
  }
}

/** `alice@example.com` → `a…@example.com` (the usage's last action names the address without spelling it). */
export function maskAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at <= 0) return '…';
  return `${address.slice(0, 1)}…${address.slice(at)}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class EmailChannel implements DeliveryChannel {
  readonly method = 'email' as const;
  private readonly opts: EmailChannelOptions;
  /** the sending slots (jobs take one right before sending) */
  private readonly sending: Pacer;
  /** when new messages' jobs are due: spread at the same rate, so a large batch does not crowd the runner */
  private readonly schedule: Pacer;
  private readonly host: string;

  constructor(private readonly deps: EmailChannelDeps) {
    this.opts = { ...DEFAULT_EMAIL_OPTIONS, ...deps.options };
    const interval = 1000 / Math.max(0.001, this.opts.messagesPerSecond);
    this.sending = new Pacer(interval);
    this.schedule = new Pacer(interval);
    this.host = new URL(deps.publicUrl).hostname || 'localhost';
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  /** Registers the sending job's handler (before the runner starts). */
  register(runner: Pick<JobRunner, 'register'>): void {
    runner.register(EMAIL_SEND_JOB, (job) => this.sendJob(job), { maxAttempts: this.opts.maxAttempts + 5 });
  }

  async deliver(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    return this.hand(inv, items, 'invite');
  }

  async resend(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    return this.hand(inv, items, 'resend');
  }

  async withdraw(
    _inv: InvitationForDelivery,
    items: readonly UsageRef[],
    reason: WithdrawReason,
  ): Promise<void> {
    const cancelled = await this.deps.store.cancelQueued(
      items.map((i) => i.usageId),
      this.now(),
    );
    if (cancelled > 0) this.deps.log.info({ cancelled, reason }, 'queued invitation emails cancelled');
  }

  /**
   * Idempotent per (usage, invite code) for `invite`: a usage that already has a message for this
   * invite code gets that message's outcome (and its job again, in case it was never enqueued). A
   * `resend` makes a new message unless one is still on its way.
   */
  private async hand(
    inv: InvitationForDelivery,
    items: readonly UsageForDelivery[],
    kind: 'invite' | 'resend',
  ): Promise<DeliveryOutcome[]> {
    const now = this.now();
    const outcomes: DeliveryOutcome[] = [];
    const eligible: UsageForDelivery[] = [];
    for (const item of items) {
      if (!item.email) {
        outcomes.push({
          usageId: item.usageId,
          status: 'skipped',
          reason: 'no_email',
          lastAction: 'Skipped: the user has no email address',
          at: now,
        });
      } else if (inv.requireLogin && !this.deps.ldapConfigured && !item.hasPassword) {
        outcomes.push({
          usageId: item.usageId,
          status: 'skipped',
          reason: 'no_login_method',
          lastAction:
            'Skipped: the invitation requires a login, and the user has no local password (no LDAP directory is configured)',
          at: now,
        });
      } else if (!inv.email) {
        outcomes.push({
          usageId: item.usageId,
          status: 'failed',
          reason: 'no_email_settings',
          lastAction: 'The invitation has no email settings',
          at: now,
        });
      } else {
        eligible.push(item);
      }
    }
    if (eligible.length === 0) return outcomes;

    const latest = await this.deps.store.latest(eligible.map((i) => i.usageId));
    const again: EmailMessage[] = [];
    const fresh: NewEmailMessage[] = [];
    for (const item of eligible) {
      const prev = latest.get(item.usageId);
      const onItsWay = prev !== undefined && (prev.status === 'queued' || prev.status === 'sending');
      const sameCode =
        prev !== undefined && prev.status !== 'cancelled' && prev.inviteCode === item.inviteCode;
      if (prev && (onItsWay || (kind === 'invite' && sameCode))) {
        outcomes.push(this.outcomeOf(prev, now));
        if (onItsWay) again.push(prev);
        continue;
      }
      fresh.push({
        usageId: item.usageId,
        invitationId: inv.id,
        kind,
        inviteCode: item.inviteCode,
        toAddress: item.email ?? '',
        toName: item.fullName,
        registrationUrl: item.registrationUrl,
      });
    }
    const created = await this.deps.store.add(
      fresh,
      (m, seq) => `<vpp-invitation.${m.usageId}.${seq}.${randomBytes(6).toString('hex')}@${this.host}>`,
      now,
    );
    for (const m of created) outcomes.push(this.outcomeOf(m, now));
    await this.enqueue([...again, ...created]);
    if (created.length > 0) {
      this.deps.log.info({ invitationId: inv.id, kind, queued: created.length }, 'invitation emails queued');
    }
    return outcomes;
  }

  private outcomeOf(m: EmailMessage, now: Date): DeliveryOutcome {
    const to = maskAddress(m.toAddress);
    switch (m.status) {
      case 'sent':
        return { usageId: m.usageId, status: 'sent', lastAction: `Email sent to ${to}`, at: m.sentAt ?? now };
      case 'failed':
        return {
          usageId: m.usageId,
          status: 'failed',
          reason: m.lastError ?? 'refused by the mail server',
          lastAction: `Email to ${to} failed`,
          at: now,
        };
      default:
        return {
          usageId: m.usageId,
          status: 'pending',
          lastAction:
            m.kind === 'resend' ? `Email queued again for ${to} (resend)` : `Email queued for ${to}`,
          at: now,
        };
    }
  }

  /** One job per message, due at the pace of sending (a job that exists already is left as it is). */
  private async enqueue(messages: readonly EmailMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const now = Date.now();
    await this.deps.jobs.enqueueMany(
      messages.map((m) => ({
        kind: EMAIL_SEND_JOB,
        payload: { emailId: m.id },
        key: emailJobKey(m.usageId, m.seq),
        delayMs: this.schedule.take(now, Number.POSITIVE_INFINITY) ?? 0,
      })),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // the sending job

  async sendJob(job: JobContext): Promise<JobResult> {
    const parsed = jobPayload.safeParse(job.payload);
    if (!parsed.success) return fail('invalid payload');
    const m = await this.deps.store.get(parsed.data.emailId);
    if (!m) return done(); // its usage went (left the scope, invitation deleted)
    const log = this.deps.log.child({ emailId: m.id, usageId: m.usageId });
    const to = maskAddress(m.toAddress);
    if (m.status === 'sent') {
      // Recorded as sent, but the report may not have been (a crash in between): report it again.
      await this.report(m.usageId, 'sent', `Email sent to ${to}`, null, m.sentAt ?? this.now());
      return done();
    }
    if (m.status === 'failed' || m.status === 'cancelled') return done();

    const inv = await this.deps.invitations.getInvitation(m.invitationId);
    if (!inv || inv.deletedAt !== null || !inv.email) {
      await this.deps.store.markFailed(m.id, 'the invitation was deleted', this.now());
      return done();
    }
    if (job.stopping) return later(0);
    const wait = this.sending.take(Date.now(), this.opts.maxPacingWaitMs);
    if (wait === null)
      return later(this.sending.waitMs(Date.now()), 'paced: waiting for a sending slot', false);
    if (wait > 0) await sleep(wait);

    const interrupted = m.status === 'sending';
    if (!(await this.deps.store.markSending(m.id, this.now()))) return done(); // cancelled meanwhile
    if (interrupted) {
      log.warn(
        { messageId: m.messageId },
        'an earlier try of this email was interrupted before its result was recorded: sending it again with the same Message-ID',
      );
    }
    const email = inv.email;
    const rendered = renderInvitationEmail({
      subject: email.subject,
      message: email.message,
      registrationUrl: m.registrationUrl,
      senderName: email.senderName,
      senderAddress: email.senderAddress,
    });
    try {
      const sent = await this.deps.mailer.send({
        from: { name: email.senderName, address: email.senderAddress },
        to: m.toName ? { name: m.toName, address: m.toAddress } : m.toAddress,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        headers: { 'Auto-Submitted': 'auto-generated' },
        messageId: m.messageId,
      });
      const at = this.now();
      await this.deps.store.markSent(m.id, sent.response, at);
      await this.report(m.usageId, 'sent', `Email sent to ${to}`, null, at);
      log.info({ messageId: m.messageId, seq: m.seq }, 'invitation email sent');
      return done();
    } catch (err) {
      const e = toMailError(err);
      const at = this.now();
      const tries = job.attempts + 1;
      if (e.permanent) {
        await this.deps.store.markFailed(m.id, e.reason, at);
        await this.report(m.usageId, 'failed', `Email to ${to} refused by the mail server`, e.reason, at);
        log.warn({ reason: e.reason }, 'invitation email refused for good');
        return done();
      }
      if (tries >= this.opts.maxAttempts) {
        const reason = `${e.reason} (gave up after ${tries} attempts)`;
        await this.deps.store.markFailed(m.id, reason, at);
        await this.report(m.usageId, 'failed', `Email to ${to} could not be sent`, reason, at);
        log.warn({ reason }, 'invitation email given up');
        return fail(reason);
      }
      await this.deps.store.markRetrying(m.id, e.reason, at);
      await this.report(
        m.usageId,
        'pending',
        `Email to ${to} not sent yet (attempt ${tries}: ${e.reason}): retrying`,
        null,
        at,
      );
      log.info({ reason: e.reason, tries }, 'invitation email will be retried');
      return retry(e.reason);
    }
  }

  private async report(
    usageId: string,
    status: 'sent' | 'failed' | 'pending',
    lastAction: string,
    reason: string | null,
    at: Date,
  ): Promise<void> {
    await this.deps.reporter.report([
      {
        usageId,
        status,
        lastAction,
        at,
        ...(status === 'sent' ? { sentAt: at } : {}),
        ...(reason !== null ? { reason } : {}),
      },
    ]);
  }
}
