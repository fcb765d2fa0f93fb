import { expect } from 'chai';
import { SqlJobStore } from '../../../server/storage/job-store.ts';
import { SqlEmailStore } from '../../../server/storage/email-store.ts';
import { EMAIL_SEND_JOB, maskAddress, Pacer } from '../../../server/mail/email-channel.ts';
import type { CapturedMail } from '../../helpers/smtp-capture.ts';
import { getInvitation } from '../invitations/helpers.ts';
import { waitFor } from '../vpp/helpers.ts';
import { emailFixture, linkOf, MAIL_FROM, messagesTo, type EmailFixture } from './helpers.ts';

/** Waits until no email job is left (sent, failed for good, or cancelled). */
async function emailJobsDrained(f: EmailFixture): Promise<void> {
  const jobs = new SqlJobStore(f.ts.server.db);
  await waitFor('email jobs to drain', async () => {
    const pending = (await jobs.list(EMAIL_SEND_JOB, 1000)).filter((j) => j.status === 'pending');
    return pending.length === 0;
  });
}

describe('email channel (pure parts)', () => {
  it('masks the address in the last action', () => {
    expect(maskAddress('alice@example.com')).to.equal('a…@example.com');
    expect(maskAddress('nobody')).to.equal('…');
  });

  it('paces: one slot per interval, a slot too far away is not booked', () => {
    const p = new Pacer(200);
    expect(p.take(1000, 0)).to.equal(0);
    expect(p.take(1000, 500)).to.equal(200);
    expect(p.take(1000, 100)).to.equal(null);
    expect(p.waitMs(1000)).to.equal(400);
    expect(p.take(1000, 400)).to.equal(400);
    expect(p.take(5000, 0)).to.equal(0);
  });
});

describe('email invitations through a real SMTP server', function () {
  this.timeout(90_000);
  let f: EmailFixture;

  beforeEach(async () => {
    f = await emailFixture();
  });
  afterEach(async () => {
    await f?.cleanup();
  });

  it('one message per user with an email: headers, %@ replaced, admin text escaped in HTML; no email → skipped', async () => {
    const alice = await f.addUser('alice', { email: 'alice@example.test', fullName: 'Alice Liddell' });
    const bob = await f.addUser('bob', { email: 'bob@example.test' });
    const noMail = await f.addUser('nomail');
    const message = 'Hello <b>team</b> & "friends",\n\nOpen %@ to register.\nOr paste it: %@';
    const inv = await f.invite([alice, bob, noMail], {
      email: {
        senderName: 'IT Department',
        senderAddress: 'it@example.test',
        subject: 'Register <now> & get apps',
        message,
      },
    });
    const usage = await f.waitForStatus(inv.id, [alice, bob], ['sent']);
    await f.waitForStatus(inv.id, [noMail], ['skipped']);
    const messages = await f.smtp.waitForMessages(2);
    await emailJobsDrained(f);
    expect(messages).to.have.length(2);

    const byUser = new Map(usage.map((u) => [u.userId, u]));
    const aliceUsage = byUser.get(alice)!;
    const mail = messagesTo(f.smtp, 'alice@example.test')[0] as CapturedMail;
    expect(mail.recipients).to.deep.equal(['alice@example.test']);
    expect(mail.envelopeFrom).to.equal(MAIL_FROM);
    expect(mail.from).to.deep.equal({ name: 'IT Department', address: 'it@example.test' });
    expect(mail.header('to')).to.match(/Alice Liddell.*<alice@example\.test>/);
    expect(mail.subject).to.equal('Register <now> & get apps');
    expect(mail.header('auto-submitted')).to.equal('auto-generated');
    expect(mail.header('message-id')).to.match(
      new RegExp(`^<vpp-invitation\\.${aliceUsage.id}\\.1\\.[0-9a-f]{12}@127\\.0\\.0\\.1>$`),
    );

    // The registration link: <public URL>/register/<code>, the code 256 random bits (base64url).
    const link = linkOf(mail);
    expect(link).to.match(
      new RegExp(`^${f.ts.server.url.replace(/\./g, '\\.')}/register/[A-Za-z0-9_-]{43}$`),
    );
    expect(link).to.equal(aliceUsage.registrationUrl);
    expect(link).not.to.equal(byUser.get(bob)!.registrationUrl);
    expect(mail.text).to.equal(
      `Hello <b>team</b> & "friends",\n\nOpen ${link} to register.\nOr paste it: ${link}`.replace(/\n$/, ''),
    );
    expect(mail.text).not.to.contain('%@');
    const html = mail.html ?? '';
    expect(html).to.contain('Hello &lt;b&gt;team&lt;/b&gt; &amp; &quot;friends&quot;,');
    expect(html).not.to.contain('<b>team');
    expect(html.split(`<a href="${link}"`)).to.have.length(3);
    expect(html).not.to.contain('%@');

    // Usage: sent with the time, an address-masked last action; no email → skipped with the reason.
    expect(aliceUsage.status).to.equal('sent');
    expect(aliceUsage.sentAt).to.be.a('string');
    expect(aliceUsage.lastAction).to.equal('Email sent to a…@example.test');
    const skipped = (await f.usage(inv.id)).find((u) => u.userId === noMail)!;
    expect(skipped).to.include({ status: 'skipped', reason: 'no_email', sentAt: null });

    // The link (no login required) records the opening and sends the user on to Apple's page.
    const res = await f.ts.request('GET', new URL(link).pathname);
    expect(res.status).to.equal(303);
    expect(res.headers.location).to.equal(aliceUsage.invitationUrl);
    expect(aliceUsage.invitationUrl).to.match(/\/invite\?inviteCode=/);
    await f.waitForStatus(inv.id, [alice], ['acknowledged']);
  });

  it('requireLogin without LDAP: a user without a local password is skipped (no_login_method)', async () => {
    const local = await f.addUser('lena', { email: 'lena@example.test', password: 'lena-local-Secret' });
    const none = await f.addUser('nick', { email: 'nick@example.test' });
    const inv = await f.invite([local, none], { requireLogin: true });
    await f.waitForStatus(inv.id, [local], ['sent']);
    const usage = await f.waitForStatus(inv.id, [none], ['skipped']);
    expect(usage.find((u) => u.userId === none)).to.include({ reason: 'no_login_method' });
    await emailJobsDrained(f);
    expect(f.smtp.messages.map((m) => m.recipients[0])).to.deep.equal(['lena@example.test']);
  });

  it('SMTP down, then up: retried with back-off, the usage says so, and the message is sent once', async () => {
    const carol = await f.addUser('carol', { email: 'carol@example.test' });
    await f.smtpDown();
    const inv = await f.invite([carol]);
    const waiting = await waitFor('a retrying usage', async () => {
      const u = (await f.usage(inv.id)).find((i) => i.userId === carol);
      return u && /retrying/.test(u.lastAction ?? '') ? u : undefined;
    });
    expect(waiting.status).to.equal('pending');
    expect(waiting.sentAt).to.equal(null);
    expect(f.smtp.messages).to.have.length(0);

    await f.smtpUp();
    const usage = await f.waitForStatus(inv.id, [carol], ['sent'], 30_000);
    await emailJobsDrained(f);
    expect(messagesTo(f.smtp, 'carol@example.test')).to.have.length(1);
    expect(usage[0]?.lastAction).to.equal('Email sent to c…@example.test');
    const [row] = [...(await new SqlEmailStore(f.ts.server.db).latest([usage[0]!.id])).values()];
    expect(row?.status).to.equal('sent');
    expect(row?.attempts).to.be.greaterThan(1);
  });

  it('a permanent rejection (5xx) → failed with the SMTP answer; the others are sent', async () => {
    const good = await f.addUser('good', { email: 'good@example.test' });
    const bad = await f.addUser('bad', { email: 'bad@example.test' });
    f.smtp.rejectRecipient('bad@example.test', 550, '5.1.1 <bad@example.test>: Recipient address rejected');
    const inv = await f.invite([good, bad]);
    await f.waitForStatus(inv.id, [good], ['sent']);
    const usage = await f.waitForStatus(inv.id, [bad], ['failed']);
    const failed = usage.find((u) => u.userId === bad)!;
    expect(failed.reason).to.match(/^550 .*5\.1\.1 <bad@example\.test>: Recipient address rejected/);
    expect(failed.lastAction).to.equal('Email to b…@example.test refused by the mail server');
    expect(failed.sentAt).to.equal(null);
    await emailJobsDrained(f);
    expect(f.smtp.messages.map((m) => m.recipients[0])).to.deep.equal(['good@example.test']);
    const counts = (await getInvitation(f.ts, inv.id)).counts;
    expect(counts).to.include({ sent: 1, failed: 1 });
  });

  it('resend: a second message with the same link and the same Apple invite code', async () => {
    const dora = await f.addUser('dora', { email: 'dora@example.test' });
    const inv = await f.invite([dora]);
    const [first] = await f.waitForStatus(inv.id, [dora], ['sent']);
    await f.smtp.waitForMessages(1);

    const res = await f.ts.api('POST', `/vpp-invitations/${inv.id}/resend`, {});
    expect(res.status).to.equal(200);
    expect(res.json<{ resent: number }>().resent).to.equal(1);
    const messages = await f.smtp.waitForMessages(2);
    await emailJobsDrained(f);
    expect(messages).to.have.length(2);
    const [m1, m2] = messages as [CapturedMail, CapturedMail];
    expect(linkOf(m2)).to.equal(linkOf(m1));
    expect(m2.header('message-id')).to.match(new RegExp(`^<vpp-invitation\\.${first!.id}\\.2\\.`));
    expect(m2.header('message-id')).not.to.equal(m1.header('message-id'));
    const after = await waitFor('the resend recorded', async () => {
      const [u] = await f.usage(inv.id);
      return u && u.status === 'sent' && u.sentAt !== first!.sentAt ? u : undefined;
    });
    expect(after.invitationUrl).to.equal(first!.invitationUrl);
    // Behind the link, the same Apple invitation URL (the same invite code).
    const open = await f.ts.request('GET', new URL(linkOf(m2)).pathname);
    expect(open.status).to.equal(303);
    expect(open.headers.location).to.equal(first!.invitationUrl);
  });
});

describe('email invitations: paced, durable across a restart, withdrawn with the invitation', function () {
  this.timeout(90_000);
  let f: EmailFixture;

  beforeEach(async () => {
    f = await emailFixture({ env: { MDM_MAIL_RATE: '2' } });
  });
  afterEach(async () => {
    await f?.cleanup();
  });

  it('sends at the configured pace and, after a restart in the middle, every message exactly once', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await f.addUser(`paced-${i}`, { email: `paced-${i}@example.test` }));
    const inv = await f.invite(ids);
    await f.smtp.waitForMessages(1, 20_000);
    await f.stopServer();
    const beforeRestart = f.smtp.messages.length;
    expect(beforeRestart).to.be.lessThan(5);
    await f.startServer();
    await f.waitForStatus(inv.id, ids, ['sent'], 30_000);
    await emailJobsDrained(f);
    const recipients = f.smtp.messages.map((m) => m.recipients[0]).sort();
    expect(recipients).to.deep.equal(ids.map((_, i) => `paced-${i}@example.test`).sort());
  });

  it('at 2 messages per second, 4 messages are spread over about 1.5 s', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(await f.addUser(`pace-${i}`, { email: `pace-${i}@example.test` }));
    const inv = await f.invite(ids);
    await f.smtp.waitForMessages(4, 20_000);
    const arrivals = f.smtp.messages.map((m) => m.receivedAt).sort((a, b) => a - b);
    // Sending slots are 500 ms apart. The first message also pays for opening the SMTP connection (its
    // arrival is late by a variable amount), so the spread is measured from the second: the fourth
    // arrives about 1 s after it; unpaced, all four arrive within a few milliseconds of each other.
    expect(arrivals[3]! - arrivals[1]!).to.be.at.least(800);
    await f.waitForStatus(inv.id, ids, ['sent']);
  });

  it('deleting the invitation cancels the messages still queued', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push(await f.addUser(`gone-${i}`, { email: `gone-${i}@example.test` }));
    const inv = await f.invite(ids);
    await f.smtp.waitForMessages(1, 20_000);
    const del = await f.ts.api('DELETE', `/vpp-invitations/${inv.id}`);
    expect(del.status).to.equal(204);
    await waitFor(
      'the invitation removed',
      async () => (await f.ts.api('GET', `/vpp-invitations/${inv.id}`)).status === 404,
    );
    await emailJobsDrained(f);
    // At 2 per second the 10 would take 4.5 s; the invitation went long before.
    expect(f.smtp.messages.length).to.be.lessThan(10);
  });
});
