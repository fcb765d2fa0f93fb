import https from 'node:https';
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import {
  errorCode,
  registrationAt,
  vppFixture,
  waitFor,
  type RegistrationJson,
  type VppFixture,
} from './helpers.ts';

/** Apple's `client/config` as JSON (the simulator shows the notification token there). */
function clientConfig(
  f: VppFixture,
  sToken: string,
): Promise<{ notificationAuthToken?: string; notificationUrl?: string; uId: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${f.service.url}/client/config`,
      { method: 'GET', ca: f.pki.caCertPem, headers: { authorization: `Bearer ${sToken}` } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as never));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('Apps and Books notifications', function () {
  this.timeout(60_000);
  let f: VppFixture;
  let location: { id: string; sToken: string };
  let bearer: string;
  let uId: string;
  let n = 0;

  const post = (locationId: string, body: unknown, token: string | null = bearer) =>
    f.ts.request('POST', `/apple/vpp/notifications/${locationId}`, {
      headers: {
        'content-type': 'application/json',
        ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
      },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  const registeredUser = async () => {
    const userId = await f.addUser(`note.user.${++n}`);
    await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, {});
    const reg = await waitFor('registered', async () => {
      const r = await registrationAt(f.ts, userId, location.id);
      return r?.status === 'registered' ? r : undefined;
    });
    return { userId, reg };
  };

  const rejectedId = randomUUID();
  const seenIds = async () =>
    (
      await f.ts.server.db.sequelize.query<{ notification_id: string }>(
        'SELECT notification_id FROM vpp_notifications',
        {
          type: QueryTypes.SELECT,
        },
      )
    ).map((r) => r.notification_id);

  const associated = (clientUserId: string, idHash: string, notificationId = randomUUID()) => ({
    notificationId,
    notificationType: 'USER_ASSOCIATED',
    uId,
    notification: { associatedUsers: [{ clientUserId, idHash, status: 'Associated' }] },
  });

  before(async () => {
    f = await vppFixture({ env: { MDM_VPP_SYNC_SECONDS: '1' } });
    location = await f.addLocation();
    const config = await clientConfig(f, location.sToken);
    bearer = config.notificationAuthToken ?? '';
    uId = config.uId;
    expect(config.notificationUrl).to.equal(`${f.ts.server.url}/apple/vpp/notifications/${location.id}`);
    expect(bearer).to.have.length.greaterThan(30);
  });
  afterEach(() => f.service.clearFaults());
  after(async () => {
    await f?.cleanup();
  });

  it('Apple delivered the TEST_NOTIFICATION while the location was being created', () => {
    const test = f.service.notifications().find((x) => x.notificationType === 'TEST_NOTIFICATION');
    expect(test?.state).to.equal('delivered');
    expect(test?.attempts[0]?.status).to.equal(200);
  });

  it('a wrong or missing bearer is 401 and applies nothing; so is an unknown location', async () => {
    const { userId, reg } = await registeredUser();
    for (const token of ['not-the-token', null]) {
      const res = await post(location.id, associated(reg.clientUserId, 'h-bad', rejectedId), token);
      expect(res.status).to.equal(401);
      expect(errorCode(res)).to.equal('unauthorized');
    }
    expect(await registrationAt(f.ts, userId, location.id)).to.deep.include({ status: 'registered' });
    for (const id of ['987654', 'not-an-id']) {
      const unknown = await post(id, associated(reg.clientUserId, 'h-bad'));
      expect(unknown.status).to.equal(401);
      expect(errorCode(unknown)).to.equal('unauthorized');
    }
    expect(await seenIds()).to.not.include(rejectedId);
  });

  it('a body that is not a notification is 400 and applies nothing', async () => {
    const { userId, reg } = await registeredUser();
    expect((await post(location.id, '{not json')).status).to.equal(400);
    const bad = await post(location.id, { notificationType: 'USER_ASSOCIATED' });
    expect(bad.status).to.equal(400);
    expect(errorCode(bad)).to.equal('invalid_notification');
    const badUsers = await post(location.id, {
      notificationId: randomUUID(),
      notificationType: 'USER_ASSOCIATED',
      notification: { associatedUsers: [{ idHash: 'x' }] },
    });
    expect(badUsers.status).to.equal(400);
    const otherLocation = await post(location.id, { ...associated(reg.clientUserId, 'h'), uId: '1234' });
    expect(otherLocation.status).to.equal(400);
    expect(errorCode(otherLocation)).to.equal('uid_mismatch');
    expect(await registrationAt(f.ts, userId, location.id)).to.deep.include({ status: 'registered' });
  });

  it('a duplicate notificationId is answered 200 and applied once', async () => {
    const { userId, reg } = await registeredUser();
    const seen: string[] = [];
    const off = f.ts.server.events.on('registration.associated', (e) => {
      if (e.userId === userId) seen.push(e.idHash);
    });
    const id = randomUUID();
    expect((await post(location.id, associated(reg.clientUserId, 'hash-one', id))).status).to.equal(200);
    expect((await post(location.id, associated(reg.clientUserId, 'hash-one', id))).status).to.equal(200);
    // the same id with other content: still the first one only
    expect((await post(location.id, associated(reg.clientUserId, 'hash-two', id))).status).to.equal(200);
    off();
    expect(seen).to.deep.equal(['hash-one']);
    expect(await registrationAt(f.ts, userId, location.id)).to.deep.include({
      status: 'associated',
      idHash: 'hash-one',
    });
  });

  it('TEST_NOTIFICATION is answered without waiting for the write lock', async () => {
    let release: () => void = () => undefined;
    let held: Promise<void> = Promise.resolve();
    // Take the (SQLite) write lock and keep it: the answer must come while it is still held.
    await new Promise<void>((acquired) => {
      held = f.ts.server.db.write(
        () =>
          new Promise<void>((r) => {
            release = r;
            acquired();
          }),
      );
    });
    try {
      const res = await Promise.race([
        post(location.id, {
          notificationId: randomUUID(),
          notificationType: 'TEST_NOTIFICATION',
          uId,
          notification: {},
        }),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('TEST_NOTIFICATION waited for the write lock')), 20_000),
        ),
      ]);
      expect(res.status).to.equal(200);
    } finally {
      release();
      await held;
    }
  });

  it("USER_MANAGEMENT failure with another error number fails the registration with Apple's reason", async () => {
    const userId = await f.addUser(`note.user.${++n}`);
    // hold Apple's events so that our notification comes first
    f.service.holdEvents(true);
    try {
      await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, {});
      const pending = await waitFor('sent to Apple', async () => {
        const r = (await f.ts.server.vpp.registrations.getRegistration(userId, location.id)) ?? undefined;
        return r?.state === 'creating' ? r : undefined;
      });
      const res = await post(location.id, {
        notificationId: randomUUID(),
        notificationType: 'USER_MANAGEMENT',
        uId,
        notification: {
          eventId: pending.eventId,
          result: 'FAILURE',
          type: 'CREATE',
          users: [{ clientUserId: pending.clientUserId }],
          error: {
            errorNumber: 9610,
            errorMessage: 'Some refusal.',
            errorInfo: { clientUserIds: [pending.clientUserId] },
          },
        },
      });
      expect(res.status).to.equal(200);
      const failed = await registrationAt(f.ts, userId, location.id);
      expect(failed?.status).to.equal('failed');
      expect(failed?.error).to.deep.equal({ errorNumber: 9610, message: 'Some refusal.' });
    } finally {
      f.service.holdEvents(false);
    }
  });

  it('USER_MANAGEMENT 9716: the user is read from Apple (users?clientUserId=), not created again', async () => {
    const userId = await f.addUser(`note.user.${++n}`);
    f.service.dropNotifications(true);
    f.service.holdEvents(true);
    try {
      await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, {});
      const sent = await waitFor('sent to Apple', async () => {
        const r = (await f.ts.server.vpp.registrations.getRegistration(userId, location.id)) ?? undefined;
        return r?.state === 'creating' ? r : undefined;
      });
      f.service.flushEvents(); // Apple created the user; its notification is lost
      const res = await post(location.id, {
        notificationId: randomUUID(),
        notificationType: 'USER_MANAGEMENT',
        uId,
        notification: {
          eventId: sent.eventId,
          result: 'FAILURE',
          type: 'CREATE',
          users: [{ clientUserId: sent.clientUserId }],
          error: {
            errorNumber: 9716,
            errorMessage: 'A registered user already exists with the specified clientUserId.',
            errorInfo: { clientUserIds: [sent.clientUserId] },
          },
        },
      });
      expect(res.status).to.equal(200);
      const reg = await waitFor('registered', async () => {
        const r = await registrationAt(f.ts, userId, location.id);
        return r?.status === 'registered' ? r : undefined;
      });
      const atApple = f.service.users(location.sToken).filter((u) => u.clientUserId === sent.clientUserId);
      expect(atApple).to.have.length(1);
      expect(reg.inviteCode).to.equal(atApple[0]?.inviteCode);
    } finally {
      f.service.holdEvents(false);
      f.service.dropNotifications(false);
    }
  });

  it('a missed notification is caught by the periodic sync', async () => {
    const { userId, reg } = await registeredUser();
    f.service.dropNotifications(true);
    try {
      const accepted = f.service.acceptInvitation(reg.inviteCode ?? '', 'missed@icloud.example');
      expect(accepted.result).to.equal('associated');
      expect(f.service.notifications().at(-1)?.state).to.equal('dropped');
      const done = await waitFor(
        'associated by the sync',
        async () => {
          const r = await registrationAt(f.ts, userId, location.id);
          return r?.status === 'associated' ? r : undefined;
        },
        15_000,
      );
      expect(done.idHash).to.equal(accepted.result === 'associated' ? accepted.idHash : '');
    } finally {
      f.service.dropNotifications(false);
    }
  });

  it('registrations created while every notification is lost still complete (event polling and sync)', async () => {
    f.service.dropNotifications(true);
    try {
      const userId = await f.addUser(`note.user.${++n}`);
      const res = await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, {});
      expect(res.json<RegistrationJson>().status).to.equal('pending');
      const r = await waitFor('registered without notifications', async () => {
        const x = await registrationAt(f.ts, userId, location.id);
        return x?.status === 'registered' ? x : undefined;
      });
      expect(r.inviteCode).to.be.a('string');
    } finally {
      f.service.dropNotifications(false);
    }
  });
});
