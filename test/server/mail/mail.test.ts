import net from 'node:net';
import { expect } from 'chai';
import { renderInvitationEmail } from '../../../server/mail/invitation-email.ts';
import { MailError, toMailError } from '../../../server/mail/mailer.ts';
import { parseSmtpUrl, SmtpMailer } from '../../../server/mail/smtp-mailer.ts';
import { startSmtpCapture, type SmtpCapture } from '../../helpers/smtp-capture.ts';

const REG_URL = 'https://mdm.example.test/register/Zk3vQ9pX2mT7bW1cR8yN4aLd6sHj0uEo';

async function caught(p: Promise<unknown>): Promise<MailError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(MailError);
    return err as MailError;
  }
  throw new Error('expected a MailError');
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

describe('renderInvitationEmail', () => {
  it('replaces every %@ in the message with the registration URL, in text and HTML', () => {
    const out = renderInvitationEmail({
      subject: 'Register for apps',
      message: 'Open %@ to register.\nOr copy this: %@',
      registrationUrl: REG_URL,
      senderName: 'IT',
      senderAddress: 'it@example.com',
    });
    expect(out.subject).to.equal('Register for apps');
    expect(out.text).to.equal(`Open ${REG_URL} to register.\nOr copy this: ${REG_URL}`);
    expect(out.text).not.to.include('%@');
    expect(out.html).not.to.include('%@');
    expect(out.html.match(new RegExp(`<a href="${REG_URL}"`, 'g'))).to.have.length(2);
    expect(out.html).to.include('to register.<br>');
  });

  it("escapes the admin's text in HTML and keeps paragraphs and line breaks", () => {
    const out = renderInvitationEmail({
      subject: 'Hi <b>there</b>',
      message: 'Dear <script>alert(1)</script> & "friends",\n\nClick %@ \'now\'.\r\nThanks',
      registrationUrl: `${REG_URL}?a=1&b=<2>`,
      senderName: 'IT <Dept>',
      senderAddress: 'it@example.com',
    });
    expect(out.html).not.to.include('<script>');
    expect(out.html).to.include('Dear &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;friends&quot;,</p>');
    expect(out.html).to.include(`href="${REG_URL}?a=1&amp;b=&lt;2&gt;"`);
    expect(out.html).to.include('&#39;now&#39;.<br>');
    expect(out.html).to.include('<title>Hi &lt;b&gt;there&lt;/b&gt;</title>');
    expect(out.html).to.include('IT &lt;Dept&gt; &lt;it@example.com&gt;');
    expect(out.html.match(/<p style="margin:0 0 16px">/g)).to.have.length(2);
    expect(out.text).to.equal(
      `Dear <script>alert(1)</script> & "friends",\n\nClick ${REG_URL}?a=1&b=<2> 'now'.\nThanks`,
    );
  });

  it('keeps the subject on one line (no header injection)', () => {
    const out = renderInvitationEmail({
      subject: 'Register\r\nBcc: victim@example.com',
      message: '%@',
      registrationUrl: REG_URL,
      senderName: 'IT',
      senderAddress: 'it@example.com',
    });
    expect(out.subject).to.equal('Register Bcc: victim@example.com');
  });
});

describe('MailError classification', () => {
  const table: Array<[string, Record<string, unknown>, boolean]> = [
    ['550 recipient rejected', { code: 'EENVELOPE', responseCode: 550, response: '550 no such user' }, true],
    ['554 transaction failed', { code: 'EMESSAGE', responseCode: 554, response: '554 spam' }, true],
    ['535 auth failed', { code: 'EAUTH', responseCode: 535, response: '535 bad' }, true],
    ['503 bad sequence (session, not message)', { code: 'EPROTOCOL', responseCode: 503 }, false],
    ['451 try later', { code: 'EENVELOPE', responseCode: 451, response: '451 later' }, false],
    ['421 shutting down', { code: 'EPROTOCOL', responseCode: 421 }, false],
    ['connection refused', { code: 'ESOCKET', message: 'connect ECONNREFUSED' }, false],
    ['timeout', { code: 'ETIMEDOUT' }, false],
    ['no recipients (client side)', { code: 'EENVELOPE', message: 'No recipients defined' }, true],
    ['unknown', {}, false],
  ];
  for (const [what, err, permanent] of table) {
    it(`${what} → ${permanent ? 'permanent' : 'temporary'}`, () => {
      const e = toMailError(Object.assign(new Error(String(err.message ?? what)), err));
      expect(e.permanent).to.equal(permanent);
      expect(e.responseCode).to.equal(typeof err.responseCode === 'number' ? err.responseCode : null);
    });
  }
});

describe('parseSmtpUrl', () => {
  it('reads host, port, TLS mode and percent-decoded credentials', () => {
    expect(parseSmtpUrl('smtps://mailer%40corp:p%3Ass@mail.example.com')).to.deep.equal({
      host: 'mail.example.com',
      port: 465,
      secure: true,
      requireTLS: false,
      auth: { user: 'mailer@corp', pass: 'p:ss' },
    });
    expect(parseSmtpUrl('smtp://[::1]:2525?requireTLS=true')).to.deep.equal({
      host: '::1',
      port: 2525,
      secure: false,
      requireTLS: true,
      auth: null,
    });
  });

  it('refuses unknown options and other schemes', () => {
    expect(() => parseSmtpUrl('smtp://h?rejectUnauthorized=false')).to.throw(/unsupported query/);
    expect(() => parseSmtpUrl('http://h')).to.throw(/smtp/);
  });
});

describe('SmtpMailer against a real SMTP server', function () {
  this.timeout(30_000);
  let smtp: SmtpCapture;
  let mailer: SmtpMailer;

  beforeEach(async () => {
    smtp = await startSmtpCapture();
    mailer = new SmtpMailer({
      url: smtp.url,
      mailFrom: 'bounces@mdm.example.test',
      connectionTimeoutMs: 3000,
    });
  });
  afterEach(async () => {
    await mailer.close();
    await smtp.stop();
  });

  it('sends the rendered invitation: From name/address, envelope sender, subject, text and HTML parts', async () => {
    const rendered = renderInvitationEmail({
      subject: 'Régistrez-vous <now>',
      message: 'Bonjour,\n\nOpen %@ to register & enjoy.',
      registrationUrl: REG_URL,
      senderName: 'IT Département',
      senderAddress: 'it@example.com',
    });
    const sent = await mailer.send({
      from: { name: 'IT Département', address: 'it@example.com' },
      to: 'alice@example.com',
      ...rendered,
      headers: { 'Auto-Submitted': 'auto-generated' },
    });
    expect(sent.messageId).to.match(/^<.+@.+>$/);
    expect(sent.response).to.match(/^250 /);

    const [mail] = await smtp.waitForMessages(1);
    if (!mail) throw new Error('no message');
    expect(mail.envelopeFrom).to.equal('bounces@mdm.example.test');
    expect(mail.recipients).to.deep.equal(['alice@example.com']);
    expect(mail.from).to.deep.equal({ name: 'IT Département', address: 'it@example.com' });
    expect(mail.header('to')).to.equal('alice@example.com');
    expect(mail.subject).to.equal('Régistrez-vous <now>');
    expect(mail.header('message-id')).to.equal(sent.messageId);
    expect(mail.header('auto-submitted')).to.equal('auto-generated');
    expect(mail.header('content-type')).to.match(/^multipart\/alternative/);
    expect(mail.text).to.equal(`Bonjour,\n\nOpen ${REG_URL} to register & enjoy.`);
    expect(mail.html).to.include(`<a href="${REG_URL}"`);
    expect(mail.html).to.include('to register &amp; enjoy.');
  });

  it('uses the From address as envelope sender when MDM_MAIL_FROM is not set', async () => {
    const plain = new SmtpMailer({ url: smtp.url });
    try {
      await plain.send({
        from: { name: 'IT', address: 'it@example.com' },
        to: 'bob@example.com',
        subject: 's',
        text: 't',
        html: '<p>t</p>',
      });
    } finally {
      await plain.close();
    }
    const [mail] = await smtp.waitForMessages(1);
    expect(mail?.envelopeFrom).to.equal('it@example.com');
  });

  it('a 5xx answer is a permanent MailError carrying the answer', async () => {
    smtp.rejectRecipient('nobody@example.com', 550, '5.1.1 <nobody@example.com>: Recipient address rejected');
    const err = await caught(
      mailer.send({
        from: { name: 'IT', address: 'it@example.com' },
        to: 'nobody@example.com',
        subject: 's',
        text: 't',
        html: 'h',
      }),
    );
    expect(err.permanent).to.equal(true);
    expect(err.responseCode).to.equal(550);
    expect(err.response).to.include('Recipient address rejected');
    expect(err.reason).to.include('550');
    expect(smtp.messages).to.have.length(0);
  });

  it('a 4xx answer is a temporary MailError carrying the answer; the next try goes through', async () => {
    smtp.rejectRecipient('carol@example.com', 452, '4.2.2 Mailbox full, try later');
    const msg = {
      from: { name: 'IT', address: 'it@example.com' },
      to: 'carol@example.com',
      subject: 's',
      text: 't',
      html: 'h',
    };
    const err = await caught(mailer.send(msg));
    expect(err.permanent).to.equal(false);
    expect(err.responseCode).to.equal(452);
    expect(err.response).to.include('Mailbox full');
    smtp.clearRejections();
    await mailer.send(msg);
    expect(await smtp.waitForMessages(1)).to.have.length(1);
  });

  it('a server that is down is a temporary MailError without an SMTP answer', async () => {
    const down = new SmtpMailer({ url: `smtp://127.0.0.1:${await closedPort()}`, connectionTimeoutMs: 2000 });
    try {
      const err = await caught(
        down.send({
          from: { name: 'IT', address: 'it@example.com' },
          to: 'a@example.com',
          subject: 's',
          text: 't',
          html: 'h',
        }),
      );
      expect(err.permanent).to.equal(false);
      expect(err.responseCode).to.equal(null);
      expect(err.message).to.match(/ECONNREFUSED|connect/i);
    } finally {
      await down.close();
    }
  });

  it('a server that goes down between messages is a temporary MailError', async () => {
    const msg = {
      from: { name: 'IT', address: 'it@example.com' },
      to: 'a@example.com',
      subject: 's',
      text: 't',
      html: 'h',
    };
    await mailer.send(msg);
    await smtp.stop();
    const err = await caught(mailer.send(msg));
    expect(err.permanent).to.equal(false);
  });

  it('refuses header names or values that would inject headers', async () => {
    const err = await caught(
      mailer.send({
        from: { name: 'IT', address: 'it@example.com' },
        to: 'a@example.com',
        subject: 's',
        text: 't',
        html: 'h',
        headers: { 'X-Note': 'a\r\nBcc: victim@example.com' },
      }),
    );
    expect(err.permanent).to.equal(true);
  });
});
