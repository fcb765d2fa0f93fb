import { expect } from 'chai';
import { appleIdHash } from '../../../simulator/apple-vpp/service.ts';
import type { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import {
  NotificationReceiver,
  eventDone,
  obj,
  request,
  startService,
  subscribe,
  users,
  waitFor,
} from './helpers.ts';

interface UsersBody {
  users: { clientUserId: string; email?: string; status: string; inviteCode?: string; idHash?: string }[];
  versionId: string;
  currentPageIndex: number;
  nextPageIndex?: number;
  totalPages: number;
  size: number;
  uId: string;
  tokenExpirationDate: string;
}

describe('simulator/apple-vpp: users, events and paging', function () {
  let service: AppleVppService;
  let url: string;
  let receiver: NotificationReceiver;
  let receiverUrl: string;

  before(async function () {
    ({ service, url } = await startService({ usersPageSize: 100 }));
    receiver = new NotificationReceiver();
    receiverUrl = await receiver.start();
  });
  after(async function () {
    await service.stop();
    await receiver.stop();
  });

  async function create(sToken: string, list: unknown[]) {
    return request('POST', `${url}/users/create`, { sToken, body: { users: list } });
  }
  async function getUsers(sToken: string, query = ''): Promise<UsersBody> {
    const r = await request('GET', `${url}/users${query}`, { sToken });
    expect(r.status, r.text).to.equal(200);
    return r.json as UsersBody;
  }

  it('creates 250 users in three batches of at most 100, and refuses 101 with 9714', async function () {
    const sToken = service.mintServiceToken({ orgName: 'Big School' });
    const tooMany = await create(sToken, users(101));
    expect(tooMany.status).to.equal(400);
    expect(obj(tooMany).errorNumber).to.equal(9714);

    const all = users(250);
    const eventIds: string[] = [];
    for (const batch of [all.slice(0, 100), all.slice(100, 200), all.slice(200)]) {
      const r = await create(sToken, batch);
      expect(r.status, r.text).to.equal(200);
      const body = obj(r);
      expect(body.eventId).to.be.a('string');
      expect(body.uId).to.match(/^\d{16}$/);
      expect(body.tokenExpirationDate).to.match(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+0000$/);
      eventIds.push(String(body.eventId));
    }
    for (const id of eventIds) {
      const status = await eventDone(url, sToken, id);
      expect(status.eventStatus).to.equal('COMPLETE');
      expect(status.eventType).to.equal('CREATE');
      expect(status.failures).to.deep.equal([]);
    }
    const recorded = service.users(sToken);
    expect(recorded).to.have.length(250);
    expect(
      recorded.every((u) => u.status === 'Registered' && /^[0-9a-f]{32}$/.test(u.inviteCode ?? '')),
    ).to.equal(true);
    expect(new Set(recorded.map((u) => u.inviteCode)).size).to.equal(250);
  });

  it('reports PENDING until the event completes, with numRequested and numCompleted', async function () {
    const sToken = service.mintServiceToken({ orgName: 'Pending' });
    service.holdEvents(true);
    let eventId: string;
    try {
      eventId = String(obj(await create(sToken, users(3))).eventId);
      const pending = obj(await request('GET', `${url}/status?eventId=${eventId}`, { sToken }));
      expect(pending).to.include({
        eventStatus: 'PENDING',
        eventType: 'CREATE',
        numRequested: 3,
        numCompleted: 0,
      });
      expect((await getUsers(sToken)).users).to.have.length(0);
    } finally {
      service.holdEvents(false);
    }
    const done = await eventDone(url, sToken, eventId);
    expect(done).to.include({ eventStatus: 'COMPLETE', numRequested: 3, numCompleted: 3 });
    expect((await getUsers(sToken)).users).to.have.length(3);

    // held events complete on demand
    service.holdEvents(true);
    try {
      const held = String(obj(await create(sToken, users(1, 'held'))).eventId);
      expect(obj(await request('GET', `${url}/status?eventId=${held}`, { sToken })).eventStatus).to.equal(
        'PENDING',
      );
      expect(service.flushEvents()).to.equal(1);
      expect(obj(await request('GET', `${url}/status?eventId=${held}`, { sToken })).eventStatus).to.equal(
        'COMPLETE',
      );
    } finally {
      service.holdEvents(false);
    }
  });

  it('answers 9708 for an unknown eventId, 9715 for duplicates, 9717 for a bad email, 9720 for no users', async function () {
    const sToken = service.mintServiceToken({ orgName: 'Validation' });
    const unknown = await request('GET', `${url}/status?eventId=00000000-0000-0000-0000-000000000000`, {
      sToken,
    });
    expect(obj(unknown).errorNumber).to.equal(9708);
    const dup = await create(sToken, [{ clientUserId: 'a' }, { clientUserId: 'a' }]);
    expect(obj(dup).errorNumber).to.equal(9715);
    const email = await create(sToken, [{ clientUserId: 'a', email: 'not-an-email' }]);
    expect(email.status).to.equal(400);
    expect(obj(email).errorNumber).to.equal(9717);
    expect(obj(await create(sToken, [])).errorNumber).to.equal(9720);
    expect(obj(await request('POST', `${url}/users/create`, { sToken, body: {} })).errorNumber).to.equal(
      9720,
    );
    expect(obj(await create(sToken, [{ email: 'x@example.test' }])).errorNumber).to.equal(9602);
    expect(service.users(sToken)).to.have.length(0);
  });

  it('fails a clientUserId that already exists with 9716, in the status and a USER_MANAGEMENT notification', async function () {
    const sToken = service.mintServiceToken({ orgName: 'Dupes' });
    expect((await subscribe(url, sToken, receiverUrl)).status).to.equal(200);
    const first = obj(await create(sToken, [{ clientUserId: 'dup-1', email: 'd1@example.test' }]));
    await eventDone(url, sToken, String(first.eventId));
    const inviteCode = service.users(sToken)[0]?.inviteCode;

    const second = obj(
      await create(sToken, [
        { clientUserId: 'dup-1', email: 'd1@example.test' },
        { clientUserId: 'dup-2', email: 'd2@example.test' },
      ]),
    );
    const status = await eventDone(url, sToken, String(second.eventId));
    expect(status).to.include({ eventStatus: 'COMPLETE', numRequested: 2, numCompleted: 1 });
    expect(status.failures).to.deep.equal([
      {
        errorNumber: 9716,
        errorMessage: 'A registered user already exists with the specified clientUserId.',
        errorInfo: { clientUserIds: ['dup-1'] },
        clientUserId: 'dup-1',
      },
    ]);
    // the existing user and its invitation are untouched
    const existing = service.users(sToken).filter((u) => u.clientUserId === 'dup-1');
    expect(existing).to.have.length(1);
    expect(existing[0]?.inviteCode).to.equal(inviteCode);

    const forEvent = await waitFor('both USER_MANAGEMENT notifications', () => {
      const list = receiver
        .ofType('USER_MANAGEMENT')
        .filter((n) => n.body.notification.eventId === second.eventId);
      return list.length === 2 ? list : null;
    });
    const success = forEvent.find((n) => n.body.notification.result === 'SUCCESS');
    const failure = forEvent.find((n) => n.body.notification.result === 'FAILURE');
    expect(success?.body.notification).to.deep.include({ type: 'CREATE' });
    expect(success?.body.notification.users).to.deep.equal([
      {
        clientUserId: 'dup-2',
        email: 'd2@example.test',
        inviteCode: service.users(sToken).find((u) => u.clientUserId === 'dup-2')?.inviteCode,
        status: 'Registered',
      },
    ]);
    expect(failure?.body.notification).to.deep.include({
      type: 'CREATE',
      users: [{ clientUserId: 'dup-1' }],
      error: {
        errorNumber: 9716,
        errorMessage: 'A registered user already exists with the specified clientUserId.',
        errorInfo: { clientUserIds: ['dup-1'] },
      },
    });
    expect(failure?.authorization).to.equal('Bearer notify-secret');
    expect(failure?.body.uId).to.equal(obj(await request('GET', `${url}/client/config`, { sToken })).uId);
  });

  it('pages users (nextPageIndex, totalPages, 9650 past the end) and filters by clientUserId', async function () {
    const sToken = service.mintServiceToken({ orgName: 'Paging' });
    const all = users(250, 'p');
    for (const batch of [all.slice(0, 100), all.slice(100, 200), all.slice(200)]) {
      await eventDone(url, sToken, String(obj(await create(sToken, batch)).eventId));
    }
    const p0 = await getUsers(sToken);
    expect(p0).to.include({ currentPageIndex: 0, nextPageIndex: 1, totalPages: 3, size: 100 });
    const p1 = await getUsers(sToken, '?pageIndex=1');
    expect(p1).to.include({ currentPageIndex: 1, nextPageIndex: 2, size: 100 });
    const p2 = await getUsers(sToken, '?pageIndex=2');
    expect(p2).to.include({ currentPageIndex: 2, size: 50 });
    expect(p2).to.not.have.property('nextPageIndex');
    const ids = [...p0.users, ...p1.users, ...p2.users].map((u) => u.clientUserId);
    expect(new Set(ids).size).to.equal(250);
    const past = await request('GET', `${url}/users?pageIndex=3`, { sToken });
    expect(past.status).to.equal(400);
    expect(obj(past).errorNumber).to.equal(9650);
    expect(obj(await request('GET', `${url}/users?pageIndex=x`, { sToken })).errorNumber).to.equal(9602);

    const one = await getUsers(sToken, '?clientUserId=p-42');
    expect(one.users).to.deep.equal([
      {
        clientUserId: 'p-42',
        email: 'p42@example.test',
        inviteCode: service.users(sToken).find((u) => u.clientUserId === 'p-42')?.inviteCode,
        status: 'Registered',
      },
    ]);
  });

  it('returns only users changed after sinceVersionId, with a versionId that moves on every change', async function () {
    const sToken = service.mintServiceToken({ orgName: 'Versions' });
    const empty = await getUsers(sToken);
    expect(empty.users).to.deep.equal([]);
    expect(empty.totalPages).to.equal(0);
    await eventDone(url, sToken, String(obj(await create(sToken, users(5, 'v'))).eventId));
    const v1 = (await getUsers(sToken)).versionId;
    expect(v1).to.not.equal(empty.versionId);
    expect(
      (await getUsers(sToken, `?sinceVersionId=${encodeURIComponent(empty.versionId)}`)).users,
    ).to.have.length(5);

    const none = await getUsers(sToken, `?sinceVersionId=${encodeURIComponent(v1)}`);
    expect(none.users).to.deep.equal([]);
    expect(none.versionId).to.equal(v1);

    const code = service.users(sToken).find((u) => u.clientUserId === 'v-3')?.inviteCode ?? '';
    expect(service.acceptInvitation(code, 'someone@icloud.test').result).to.equal('associated');
    const changed = await getUsers(sToken, `?sinceVersionId=${encodeURIComponent(v1)}`);
    expect(changed.users.map((u) => u.clientUserId)).to.deep.equal(['v-3']);
    expect(changed.users[0]?.status).to.equal('Associated');
    expect(changed.versionId).to.not.equal(v1);

    for (const bad of ['garbage', `${changed.uId}.999999`]) {
      const r = await request('GET', `${url}/users?sinceVersionId=${encodeURIComponent(bad)}`, { sToken });
      expect(obj(r).errorNumber, bad).to.equal(9721);
    }
    // a versionId of another location is not valid here
    const other = service.mintServiceToken({ orgName: 'Other' });
    const foreign = await request('GET', `${url}/users?sinceVersionId=${encodeURIComponent(v1)}`, {
      sToken: other,
    });
    expect(obj(foreign).errorNumber).to.equal(9721);
  });

  it('associates a user created with a managedAppleId at once, without an invitation', async function () {
    const sToken = service.mintServiceToken({ orgName: 'Managed' });
    expect((await subscribe(url, sToken, receiverUrl)).status).to.equal(200);
    const ev = obj(
      await create(sToken, [
        { clientUserId: 'm-1', email: 'm1@example.test', managedAppleId: 'm1@appleid.example.test' },
      ]),
    );
    await eventDone(url, sToken, String(ev.eventId));
    const list = await getUsers(sToken);
    expect(list.users).to.deep.equal([
      {
        clientUserId: 'm-1',
        email: 'm1@example.test',
        idHash: appleIdHash('m1@appleid.example.test'),
        status: 'Associated',
      },
    ]);
    const n = await waitFor('CREATE notification', () =>
      receiver.ofType('USER_MANAGEMENT').find((r) => r.body.notification.eventId === ev.eventId),
    );
    expect(n.body.notification.users).to.deep.equal(list.users);
  });

  it('updates and retires users; a retired clientUserId can be created again as a new record', async function () {
    const sToken = service.mintServiceToken({ orgName: 'Lifecycle' });
    await eventDone(url, sToken, String(obj(await create(sToken, users(2, 'r'))).eventId));

    const upd = obj(
      await request('POST', `${url}/users/update`, {
        sToken,
        body: { users: [{ clientUserId: 'r-0', email: 'new@example.test' }] },
      }),
    );
    expect((await eventDone(url, sToken, String(upd.eventId))).eventType).to.equal('UPDATE');
    expect((await getUsers(sToken, '?clientUserId=r-0')).users[0]?.email).to.equal('new@example.test');

    const ret = obj(
      await request('POST', `${url}/users/retire`, { sToken, body: { users: [{ clientUserId: 'r-0' }] } }),
    );
    const retStatus = await eventDone(url, sToken, String(ret.eventId));
    expect(retStatus).to.include({ eventStatus: 'COMPLETE', eventType: 'RETIRE', numCompleted: 1 });
    const retired = (await getUsers(sToken, '?clientUserId=r-0')).users;
    expect(retired).to.deep.equal([{ clientUserId: 'r-0', email: 'new@example.test', status: 'Retired' }]);
    expect((await getUsers(sToken, '?activeOnly=true')).users.map((u) => u.clientUserId)).to.deep.equal([
      'r-1',
    ]);
    expect((await getUsers(sToken, '?retiredOnly=true')).users.map((u) => u.clientUserId)).to.deep.equal([
      'r-0',
    ]);

    // the invitation of a retired user no longer works
    const oldCode = service.users(sToken).find((u) => u.clientUserId === 'r-0')?.inviteCode ?? '';
    expect(service.acceptInvitation(oldCode, 'x@icloud.test').result).to.equal('retired');

    // retiring or updating an unknown user fails with 9609 (FAILED when nothing completed)
    const unknown = obj(
      await request('POST', `${url}/users/retire`, { sToken, body: { users: [{ clientUserId: 'nobody' }] } }),
    );
    const failed = await eventDone(url, sToken, String(unknown.eventId));
    expect(failed).to.include({ eventStatus: 'FAILED', numCompleted: 0, numRequested: 1 });
    expect((failed.failures as { errorNumber: number }[])[0]?.errorNumber).to.equal(9609);

    const again = obj(await create(sToken, [{ clientUserId: 'r-0', email: 'back@example.test' }]));
    expect((await eventDone(url, sToken, String(again.eventId))).eventStatus).to.equal('COMPLETE');
    const both = (await getUsers(sToken, '?clientUserId=r-0')).users;
    expect(both.map((u) => u.status)).to.deep.equal(['Retired', 'Registered']);
    expect(both[1]?.inviteCode).to.match(/^[0-9a-f]{32}$/);
  });
});
