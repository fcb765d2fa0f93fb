import { createHash } from 'node:crypto';
import { expect } from 'chai';
import type { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import {
  NotificationReceiver,
  eventDone,
  obj,
  request,
  startService,
  subscribe,
  waitFor,
} from './helpers.ts';

describe('simulator/apple-vpp: the invitation page', function () {
  let service: AppleVppService;
  let url: string;
  let receiver: NotificationReceiver;
  let receiverUrl: string;
  let sToken: string;
  let uId: string;
  let template: string;

  before(async function () {
    ({ service, url } = await startService());
    receiver = new NotificationReceiver();
    receiverUrl = await receiver.start();
    sToken = service.mintServiceToken({ orgName: 'Lycée Exemple & Co' });
    const config = obj(await subscribe(url, sToken, receiverUrl));
    uId = String(config.uId);
    const ev = obj(
      await request('POST', `${url}/users/create`, {
        sToken,
        body: {
          users: ['i-1', 'i-2', 'i-3', 'i-4'].map((clientUserId) => ({
            clientUserId,
            email: `${clientUserId}@example.test`,
          })),
        },
      }),
    );
    await eventDone(url, sToken, String(ev.eventId));
    const serviceConfig = obj(await request('GET', `${url}/service/config`));
    template = String((serviceConfig.urls as Record<string, string>).invitationEmail);
  });
  after(async function () {
    await service.stop();
    await receiver.stop();
  });

  /** What the MDM server does: the template with %25inviteCode%25 replaced. */
  function invitationUrl(clientUserId: string): { code: string; link: string } {
    const code = service.users(sToken).find((u) => u.clientUserId === clientUserId)?.inviteCode ?? '';
    return { code, link: template.replace('%25inviteCode%25', code) };
  }

  it('shows the sign-in form at the invitation URL built from the template', async function () {
    const { code, link } = invitationUrl('i-1');
    expect(link).to.equal(service.invitationUrl(code));
    const page = await request('GET', link);
    expect(page.status).to.equal(200);
    expect(page.headers['content-type']).to.match(/text\/html/);
    expect(page.text).to.contain('Sign in with your Apple ID to join Lycée Exemple &amp; Co&#39;s program');
    expect(page.text).to.match(/<form method="post"/);
    expect(page.text).to.contain('name="appleId"');
    expect(page.text).to.contain('value="accept"');
  });

  it('accepts through the form: Associated with the Apple ID hash, and a USER_ASSOCIATED notification', async function () {
    const { link } = invitationUrl('i-1');
    const page = await request('POST', link, {
      form: { appleId: 'Student.One@iCloud.test', action: 'accept' },
    });
    expect(page.status).to.equal(200);
    expect(page.text).to.contain("You're in");
    const expectedHash = createHash('sha256').update('student.one@icloud.test').digest('hex');

    const user = obj(await request('GET', `${url}/users?clientUserId=i-1`, { sToken }));
    expect((user.users as unknown[])[0]).to.deep.include({
      clientUserId: 'i-1',
      status: 'Associated',
      idHash: expectedHash,
    });
    const n = await waitFor('USER_ASSOCIATED', () => receiver.ofType('USER_ASSOCIATED')[0]);
    expect(n.authorization).to.equal('Bearer notify-secret');
    expect(n.body.uId).to.equal(uId);
    expect(n.body.notificationId).to.be.a('string');
    const associated = n.body.notification.associatedUsers as Record<string, unknown>[];
    expect(associated).to.have.length(1);
    expect(associated[0]).to.include({ clientUserId: 'i-1', idHash: expectedHash, status: 'Associated' });
    expect(service.users(sToken).find((u) => u.clientUserId === 'i-1')?.appleId).to.equal(
      'Student.One@iCloud.test',
    );
  });

  it('is idempotent for the same Apple ID and keeps the first Apple ID against another one', async function () {
    const { link, code } = invitationUrl('i-1');
    const queued = service.stats().notifications.queued;
    const same = await request('POST', link, {
      form: { appleId: 'student.one@icloud.test', action: 'accept' },
    });
    expect(same.status).to.equal(200);
    expect(same.text).to.contain("You're in");
    const other = await request('POST', link, {
      form: { appleId: 'intruder@icloud.test', action: 'accept' },
    });
    expect(other.status).to.equal(409);
    expect(other.text).to.contain('already accepted with another Apple ID');
    const inProcess = service.acceptInvitation(code, 'intruder@icloud.test');
    expect(inProcess.result).to.equal('kept_first_apple_id');
    const first = createHash('sha256').update('student.one@icloud.test').digest('hex');
    expect(service.users(sToken).find((u) => u.clientUserId === 'i-1')?.idHash).to.equal(first);
    expect(service.stats().invitations.keptFirstAppleId).to.equal(2);
    // nothing new is queued for either (queueing is synchronous with the acceptance)
    expect(service.stats().notifications.queued).to.equal(queued);
  });

  it('accepts in process for simulated users, with the same outcome as the page', async function () {
    const { code } = invitationUrl('i-2');
    const r = service.acceptInvitation(code, 'two@icloud.test');
    expect(r).to.deep.equal({
      result: 'associated',
      uId,
      clientUserId: 'i-2',
      idHash: createHash('sha256').update('two@icloud.test').digest('hex'),
    });
    await waitFor('USER_ASSOCIATED for i-2', () =>
      receiver
        .ofType('USER_ASSOCIATED')
        .find(
          (n) =>
            (n.body.notification.associatedUsers as { clientUserId: string }[])[0]?.clientUserId === 'i-2',
        ),
    );
    expect(service.acceptInvitation(code, 'two@icloud.test').result).to.equal('already_associated');
  });

  it('declines without changing the user, and asks again for an empty Apple ID', async function () {
    const { link, code } = invitationUrl('i-3');
    const declined = await request('POST', link, { form: { action: 'decline' } });
    expect(declined.status).to.equal(200);
    expect(declined.text).to.contain('Invitation declined');
    expect(service.declineInvitation(code).result).to.equal('declined');
    const user = service.users(sToken).find((u) => u.clientUserId === 'i-3');
    expect(user?.status).to.equal('Registered');
    expect(user?.declines).to.equal(2);
    const empty = await request('POST', link, { form: { appleId: '  ', action: 'accept' } });
    expect(empty.status).to.equal(400);
    expect(empty.text).to.contain('Enter your Apple ID.');
    // the invitation still works afterwards
    const ok = await request('POST', link, { form: { appleId: 'three@icloud.test' } });
    expect(ok.status).to.equal(200);
  });

  it('answers 404 to an unknown code and 410 once the user is retired', async function () {
    const unknown = await request('GET', service.invitationUrl('0123456789abcdef0123456789abcdef'));
    expect(unknown.status).to.equal(404);
    expect(unknown.text).to.contain('Invitation not found');
    expect((await request('GET', template.replace(/\?.*$/, ''))).status).to.equal(404);
    expect(service.acceptInvitation('nope', 'a@b.test')).to.deep.equal({ result: 'not_found' });

    const { link } = invitationUrl('i-4');
    const ev = obj(
      await request('POST', `${url}/users/retire`, { sToken, body: { users: [{ clientUserId: 'i-4' }] } }),
    );
    await eventDone(url, sToken, String(ev.eventId));
    expect((await request('GET', link)).status).to.equal(410);
    expect((await request('POST', link, { form: { appleId: 'four@icloud.test' } })).status).to.equal(410);
  });
});
