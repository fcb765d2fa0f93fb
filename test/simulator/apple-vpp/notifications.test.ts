import { expect } from 'chai';
import {
  eventDone,
  NotificationReceiver,
  obj,
  request,
  startService,
  subscribe,
  users,
  waitFor,
} from './helpers.ts';

describe('simulator/apple-vpp: notification delivery', function () {
  let receiver: NotificationReceiver;
  let receiverUrl: string;

  beforeEach(async function () {
    receiver = new NotificationReceiver();
    receiverUrl = await receiver.start();
  });
  afterEach(async function () {
    await receiver.stop();
  });

  it('retries with backoff until 2xx, with the same notificationId', async function () {
    const { service, url } = await startService();
    try {
      const sToken = service.mintServiceToken({ orgName: 'Retry' });
      expect((await subscribe(url, sToken, receiverUrl)).status).to.equal(200);
      let managementCalls = 0;
      receiver.answer = (n) => {
        if (n.notificationType !== 'USER_MANAGEMENT') return 200;
        managementCalls += 1;
        return managementCalls <= 2 ? 503 : 204;
      };
      const ev = obj(await request('POST', `${url}/users/create`, { sToken, body: { users: users(1) } }));
      const got = await waitFor('a delivered USER_MANAGEMENT', () => {
        const list = receiver.ofType('USER_MANAGEMENT');
        return list.some((r) => r.answered === 204) ? list : null;
      });
      expect(got.map((r) => r.answered)).to.deep.equal([503, 503, 204]);
      expect(new Set(got.map((r) => r.body.notificationId)).size).to.equal(1);
      expect(got[0]?.body.notification.eventId).to.equal(ev.eventId);
      // The receiver sees the 204 before the service has read it: wait for the service to record it.
      const log = await waitFor('the service to record the delivery', () =>
        service
          .notifications()
          .find((l) => l.notificationId === got[0]?.body.notificationId && l.state === 'delivered'),
      );
      expect(log?.state).to.equal('delivered');
      expect(log?.attempts.map((a) => a.status)).to.deep.equal([503, 503, 204]);
      expect(service.stats().notifications).to.include({ delivered: 1, pending: 0 });
    } finally {
      await service.stop();
    }
  });

  it('gives up after maxAttempts, and the change is still visible to a users sync', async function () {
    const { service, url } = await startService({
      notificationRetry: { maxAttempts: 3, initialDelayMs: 10, factor: 1, maxDelayMs: 10 },
    });
    try {
      const sToken = service.mintServiceToken({ orgName: 'Give up' });
      expect((await subscribe(url, sToken, receiverUrl)).status).to.equal(200);
      const v0 = String(obj(await request('GET', `${url}/users`, { sToken })).versionId);
      receiver.answer = (n) => (n.notificationType === 'TEST_NOTIFICATION' ? 200 : 500);
      const ev = obj(await request('POST', `${url}/users/create`, { sToken, body: { users: users(2) } }));
      await eventDone(url, sToken, String(ev.eventId));
      const failed = await waitFor('the notification to fail', () =>
        service.notifications().find((l) => l.notificationType === 'USER_MANAGEMENT' && l.state === 'failed'),
      );
      expect(failed.attempts).to.have.length(3);
      expect(receiver.ofType('USER_MANAGEMENT')).to.have.length(3);
      const since = obj(
        await request('GET', `${url}/users?sinceVersionId=${encodeURIComponent(v0)}`, { sToken }),
      );
      expect(since.users).to.have.length(2);
    } finally {
      await service.stop();
    }
  });

  it('sends only the subscribed types, and nothing without a notification URL', async function () {
    const { service, url } = await startService();
    try {
      const quiet = service.mintServiceToken({ orgName: 'No config' });
      const ev1 = obj(
        await request('POST', `${url}/users/create`, { sToken: quiet, body: { users: users(1) } }),
      );
      await eventDone(url, quiet, String(ev1.eventId));

      const onlyAssociated = service.mintServiceToken({ orgName: 'Only associated' });
      const r = await request('POST', `${url}/client/config`, {
        sToken: onlyAssociated,
        body: {
          notificationUrl: receiverUrl,
          notificationAuthToken: 't',
          notificationTypes: ['USER_ASSOCIATED'],
        },
      });
      expect(r.status).to.equal(200);
      const ev2 = obj(
        await request('POST', `${url}/users/create`, { sToken: onlyAssociated, body: { users: users(1) } }),
      );
      await eventDone(url, onlyAssociated, String(ev2.eventId));
      const code = service.users(onlyAssociated)[0]?.inviteCode ?? '';
      service.acceptInvitation(code, 'a@icloud.test');
      await waitFor('USER_ASSOCIATED', () => receiver.ofType('USER_ASSOCIATED')[0]);
      expect(receiver.ofType('USER_MANAGEMENT')).to.have.length(0);
      expect(service.stats().notifications.unsubscribed).to.equal(2);
    } finally {
      await service.stop();
    }
  });

  it('splits a notification into parts of at most 100 users', async function () {
    const { service, url } = await startService({ limits: { maxUsers: 250 } });
    try {
      const sToken = service.mintServiceToken({ orgName: 'Chunks' });
      expect((await subscribe(url, sToken, receiverUrl)).status).to.equal(200);
      const ev = obj(await request('POST', `${url}/users/create`, { sToken, body: { users: users(250) } }));
      const parts = await waitFor('three parts', () => {
        const list = receiver.ofType('USER_MANAGEMENT');
        return list.length === 3 ? list : null;
      });
      expect(parts.map((p) => (p.body.notification.users as unknown[]).length).sort()).to.deep.equal([
        100, 100, 50,
      ]);
      expect(parts.every((p) => p.body.notification.eventId === ev.eventId)).to.equal(true);
    } finally {
      await service.stop();
    }
  });
});
