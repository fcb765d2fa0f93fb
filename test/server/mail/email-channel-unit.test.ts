import { expect } from 'chai';
import type {
  InvitationForDelivery,
  UsageForDelivery,
  UsageReport,
} from '../../../server/invitations/channels.ts';
import type { Invitation } from '../../../server/invitations/model.ts';
import type { JobContext } from '../../../server/jobs/job-runner.ts';
import { createLogger } from '../../../server/log.ts';
import { EMAIL_SEND_JOB, EmailChannel } from '../../../server/mail/email-channel.ts';
import type { EmailMessage, EmailStore, NewEmailMessage } from '../../../server/mail/email-store.ts';
import { MailError, type Mailer, type OutgoingMail, type SentMail } from '../../../server/mail/mailer.ts';

/** An in-memory `EmailStore` (the SQL one is tested on every database in `sql-stores.test.ts`). */
class MemoryEmailStore implements EmailStore {
  readonly rows: EmailMessage[] = [];

  async latest(usageIds: readonly string[]) {
    const out = new Map<string, EmailMessage>();
    for (const r of this.rows) if (usageIds.includes(r.usageId)) out.set(r.usageId, { ...r });
    return out;
  }
  async add(
    messages: readonly NewEmailMessage[],
    messageId: (m: NewEmailMessage, seq: number) => string,
    now: Date,
  ) {
    return messages.map((m) => {
      const seq = this.rows.filter((r) => r.usageId === m.usageId).length + 1;
      const row: EmailMessage = {
        ...m,
        id: String(this.rows.length + 1),
        seq,
        messageId: messageId(m, seq),
        status: 'queued',
        attempts: 0,
        lastError: null,
        smtpResponse: null,
        sentAt: null,
        createdAt: now,
      };
      this.rows.push(row);
      return { ...row };
    });
  }
  async get(id: string) {
    const r = this.rows.find((x) => x.id === id);
    return r ? { ...r } : null;
  }
  private row(id: string) {
    const r = this.rows.find((x) => x.id === id);
    return r && (r.status === 'queued' || r.status === 'sending') ? r : null;
  }
  async markSending(id: string) {
    const r = this.row(id);
    if (!r) return false;
    r.status = 'sending';
    r.attempts += 1;
    return true;
  }
  async markSent(id: string, response: string, now: Date) {
    const r = this.row(id);
    if (r) Object.assign(r, { status: 'sent', smtpResponse: response, sentAt: now });
  }
  async markRetrying(id: string, error: string) {
    const r = this.row(id);
    if (r) Object.assign(r, { status: 'queued', lastError: error });
  }
  async markFailed(id: string, reason: string) {
    const r = this.row(id);
    if (r) Object.assign(r, { status: 'failed', lastError: reason });
  }
  async cancelQueued(usageIds: readonly string[]) {
    let n = 0;
    for (const r of this.rows) {
      if (usageIds.includes(r.usageId) && r.status === 'queued') {
        r.status = 'cancelled';
        n++;
      }
    }
    return n;
  }
}

class FakeMailer implements Mailer {
  readonly sent: OutgoingMail[] = [];
  failWith: MailError | null = null;
  async send(message: OutgoingMail): Promise<SentMail> {
    if (this.failWith) throw this.failWith;
    this.sent.push(message);
    return { messageId: message.messageId ?? '<x@y>', response: '250 2.0.0 Ok' };
  }
  async close() {}
}

const email = { senderName: 'IT', senderAddress: 'it@example.test', subject: 'Register', message: 'Open %@' };
const inv: InvitationForDelivery = {
  id: '1',
  name: 'Staff',
  locationId: '1',
  siteId: null,
  distributionMethod: 'email',
  requireLogin: false,
  email,
};
const item = (usageId: string, extra: Partial<UsageForDelivery> = {}): UsageForDelivery => ({
  usageId,
  userId: `u${usageId}`,
  username: `user${usageId}`,
  fullName: null,
  email: `user${usageId}@example.test`,
  hasPassword: false,
  clientUserId: `c${usageId}`,
  inviteCode: 'INVITE-1',
  invitationUrl: 'https://apple.example/invite?inviteCode=INVITE-1',
  registrationCode: `code${usageId}`,
  registrationUrl: `https://mdm.example.test/register/code${usageId}`,
  sentAt: null,
  ...extra,
});

describe('EmailChannel (with fakes)', () => {
  let store: MemoryEmailStore;
  let mailer: FakeMailer;
  let reports: UsageReport[];
  let jobs: { key?: string; payload: unknown }[];
  let channel: EmailChannel;

  const job = (payload: unknown, attempts = 0): JobContext => ({
    id: '1',
    kind: EMAIL_SEND_JOB,
    key: null,
    payload,
    attempts,
    stopping: false,
  });
  const runAll = async () => {
    const results = [];
    for (const j of jobs.splice(0)) results.push(await channel.sendJob(job(j.payload)));
    return results;
  };

  beforeEach(() => {
    store = new MemoryEmailStore();
    mailer = new FakeMailer();
    reports = [];
    jobs = [];
    channel = new EmailChannel({
      store,
      mailer,
      jobs: {
        enqueueMany: async (list) => {
          for (const j of list)
            jobs.push({ payload: j.payload, ...(j.key !== undefined ? { key: j.key } : {}) });
        },
      },
      reporter: {
        report: async (r) => {
          reports.push(...r);
          return r.length;
        },
        setDevices: async () => undefined,
      },
      invitations: {
        getInvitation: async () => ({ ...inv, email, deletedAt: null }) as unknown as Invitation,
      },
      publicUrl: 'https://mdm.example.test',
      ldapConfigured: false,
      log: createLogger('silent'),
      options: { messagesPerSecond: 1000 },
    });
  });

  it('deliver is idempotent per (usage, invite code); a new invite code makes a new message', async () => {
    expect((await channel.deliver(inv, [item('1')]))[0]?.status).to.equal('pending');
    expect(jobs.map((j) => j.key)).to.deep.equal(['email:1:1']);
    // Called again before the job ran (a fan-out crash): the same message, its job enqueued again (deduped by key).
    expect((await channel.deliver(inv, [item('1')]))[0]?.status).to.equal('pending');
    expect(store.rows).to.have.length(1);
    expect(jobs.map((j) => j.key)).to.deep.equal(['email:1:1', 'email:1:1']);
    await runAll();
    expect(mailer.sent).to.have.length(1);
    // Called again after it was sent: its outcome, nothing sent.
    const [again] = await channel.deliver(inv, [item('1')]);
    expect(again).to.include({ status: 'sent', lastAction: 'Email sent to u…@example.test' });
    expect(jobs).to.have.length(0);
    // Re-registered with Apple (a new invite code): a new message.
    await channel.deliver(inv, [item('1', { inviteCode: 'INVITE-2' })]);
    await runAll();
    expect(mailer.sent.map((m) => m.messageId)).to.have.length(2);
  });

  it('resend makes a new message, but not while one is still on its way', async () => {
    await channel.deliver(inv, [item('1')]);
    await channel.resend(inv, [item('1')]);
    expect(store.rows).to.have.length(1);
    await runAll();
    await channel.resend(inv, [item('1')]);
    expect(store.rows.map((r) => [r.seq, r.kind])).to.deep.equal([
      [1, 'invite'],
      [2, 'resend'],
    ]);
    await runAll();
    expect(mailer.sent).to.have.length(2);
    expect(mailer.sent[0]?.messageId).to.match(/^<vpp-invitation\.1\.1\.[0-9a-f]{12}@mdm\.example\.test>$/);
    expect(mailer.sent[1]?.messageId).to.match(/^<vpp-invitation\.1\.2\./);
  });

  it('an interrupted try (recorded as sending, no result) is sent again with the same Message-ID', async () => {
    await channel.deliver(inv, [item('1')]);
    const [row] = store.rows;
    row!.status = 'sending';
    row!.attempts = 1;
    await runAll();
    expect(mailer.sent).to.have.length(1);
    expect(mailer.sent[0]?.messageId).to.equal(row!.messageId);
    expect(row!.status).to.equal('sent');
  });

  it('a job for a message already sent only reports it again (a crash after recording)', async () => {
    await channel.deliver(inv, [item('1')]);
    const [queued] = jobs;
    await runAll();
    reports.splice(0);
    expect(await channel.sendJob(job(queued!.payload))).to.deep.equal({ kind: 'done' });
    expect(mailer.sent).to.have.length(1);
    expect(reports.map((r) => r.status)).to.deep.equal(['sent']);
  });

  it('temporary failures are retried until the last attempt, which fails the usage with the reason', async () => {
    await channel.deliver(inv, [item('1')]);
    const [j] = jobs;
    mailer.failWith = new MailError('busy', {
      permanent: false,
      responseCode: 421,
      response: '421 4.7.0 Try again later',
    });
    const first = await channel.sendJob(job(j!.payload, 0));
    expect(first).to.deep.equal({ kind: 'retry', error: '421 4.7.0 Try again later' });
    expect(reports.at(-1)).to.include({ status: 'pending' });
    expect(reports.at(-1)?.lastAction).to.match(/retrying/);
    const last = await channel.sendJob(job(j!.payload, 29));
    expect(last.kind).to.equal('fail');
    expect(reports.at(-1)).to.include({ status: 'failed' });
    expect(reports.at(-1)?.reason).to.equal('421 4.7.0 Try again later (gave up after 30 attempts)');
  });

  it('withdraw cancels queued messages: their jobs send nothing', async () => {
    await channel.deliver(inv, [item('1'), item('2')]);
    await channel.withdraw(inv, [{ usageId: '1', userId: 'u1' }], 'registered');
    await runAll();
    expect(mailer.sent.map((m) => m.to)).to.deep.equal(['user2@example.test']);
  });

  it('no email → skipped; requireLogin without LDAP or local password → skipped', async () => {
    const out = await channel.deliver({ ...inv, requireLogin: true }, [
      item('1', { email: null }),
      item('2', { hasPassword: false }),
      item('3', { hasPassword: true }),
    ]);
    expect(out.map((o) => [o.usageId, o.status, o.reason ?? null])).to.deep.equal([
      ['1', 'skipped', 'no_email'],
      ['2', 'skipped', 'no_login_method'],
      ['3', 'pending', null],
    ]);
  });
});
