import { expect } from 'chai';
import type { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
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

describe('simulator/apple-vpp: fault injection', function () {
  let service: AppleVppService;
  let url: string;
  let origin: string;
  let sToken: string;

  beforeEach(async function () {
    ({ service, url } = await startService());
    origin = url.replace(/\/mdm\/v2$/, '');
    sToken = service.mintServiceToken({ orgName: 'Faulty' });
  });
  afterEach(async function () {
    await service.stop();
  });

  it('answers a given error number for the next N calls on a path, then normally', async function () {
    service.addFault({ path: '/users', times: 2, action: { kind: 'error', errorNumber: 9603 } });
    for (let i = 0; i < 2; i += 1) {
      const r = await request('GET', `${url}/users`, { sToken });
      expect(r.status).to.equal(500);
      expect(r.json).to.deep.equal({ errorNumber: 9603, errorMessage: 'Internal error.' });
    }
    expect((await request('GET', `${url}/users`, { sToken })).status).to.equal(200);
    // other paths were never affected
    expect(service.faults()).to.deep.equal([]);
    expect(service.stats().faultsInjected).to.equal(2);
  });

  it('answers 503 with Retry-After and 9729 while the fault is on', async function () {
    const id = service.addFault({ action: { kind: 'unavailable', retryAfterSeconds: 7 } });
    const r = await request('POST', `${url}/users/create`, { sToken, body: { users: users(1) } });
    expect(r.status).to.equal(503);
    expect(r.headers['retry-after']).to.equal('7');
    expect(obj(r).errorNumber).to.equal(9729);
    expect((await request('GET', `${url}/service/config`)).status).to.equal(503);
    expect(service.removeFault(id)).to.equal(true);
    expect((await request('GET', `${url}/service/config`)).status).to.equal(200);
    expect(service.users(sToken)).to.have.length(0);
  });

  it('answers 429 9646 (too many requests), also for a single location only', async function () {
    const other = service.mintServiceToken({ orgName: 'Fine' });
    service.addFault({ sToken, action: { kind: 'tooManyRequests', retryAfterSeconds: 2 } });
    const r = await request('GET', `${url}/users`, { sToken });
    expect(r.status).to.equal(429);
    expect(r.headers['retry-after']).to.equal('2');
    expect(obj(r).errorNumber).to.equal(9646);
    expect((await request('GET', `${url}/users`, { sToken: other })).status).to.equal(200);
  });

  it('enforces maxRequestPerSecond with 9646 when asked to', async function () {
    // A frozen clock: all 8 requests fall in one second however long their connections take.
    const frozen = Date.now();
    const limited = await startService({
      enforceRateLimit: true,
      limits: { maxRequestPerSecond: 3 },
      clock: () => frozen,
    });
    try {
      const t = limited.service.mintServiceToken({ orgName: 'Limited' });
      const statuses = await Promise.all(
        Array.from({ length: 8 }, () =>
          request('GET', `${limited.url}/users`, { sToken: t }).then((r) => r.status),
        ),
      );
      expect(statuses.filter((s) => s === 200).length).to.equal(3);
      expect(statuses.filter((s) => s === 429).length).to.equal(5);
    } finally {
      await limited.service.stop();
    }
  });

  it('adds latency', async function () {
    service.addFault({
      path: '/client/config',
      method: 'get',
      times: 1,
      action: { kind: 'latency', ms: 300 },
    });
    const t0 = Date.now();
    const r = await request('GET', `${url}/client/config`, { sToken });
    expect(r.status).to.equal(200);
    expect(Date.now() - t0).to.be.at.least(290);
  });

  it('resets the connection', async function () {
    service.addFault({ path: '/users', times: 1, action: { kind: 'reset' } });
    let error: unknown = null;
    try {
      await request('GET', `${url}/users`, { sToken });
    } catch (err) {
      error = err;
    }
    expect(error).to.be.instanceOf(Error);
    expect((await request('GET', `${url}/users`, { sToken })).status).to.equal(200);
  });

  it('becomes unreachable and comes back on the same port with its state', async function () {
    const ev = obj(await request('POST', `${url}/users/create`, { sToken, body: { users: users(2) } }));
    await eventDone(url, sToken, String(ev.eventId));
    await service.makeUnreachable();
    let error: NodeJS.ErrnoException | null = null;
    try {
      await request('GET', `${url}/users`, { sToken });
    } catch (err) {
      error = err as NodeJS.ErrnoException;
    }
    expect(error?.code).to.equal('ECONNREFUSED');
    const again = await service.start();
    expect(again.url).to.equal(url);
    const list = obj(await request('GET', `${url}/users`, { sToken }));
    expect(list.users).to.have.length(2);
  });

  it('delays pending events and notifications while unreachable, and delivers them after', async function () {
    const receiver = new NotificationReceiver();
    const receiverUrl = await receiver.start();
    try {
      expect((await subscribe(url, sToken, receiverUrl)).status).to.equal(200);
      service.holdEvents(true);
      const ev = obj(await request('POST', `${url}/users/create`, { sToken, body: { users: users(1) } }));
      await service.makeUnreachable(200);
      service.holdEvents(false);
      expect(service.running).to.equal(false);
      await waitFor('the service to be back', () => service.running);
      const status = await eventDone(url, sToken, String(ev.eventId));
      expect(status.eventStatus).to.equal('COMPLETE');
      await waitFor('USER_MANAGEMENT', () => receiver.ofType('USER_MANAGEMENT')[0]);
    } finally {
      await receiver.stop();
    }
  });

  it('drops notifications (for testing the periodic sync)', async function () {
    const receiver = new NotificationReceiver();
    const receiverUrl = await receiver.start();
    try {
      expect((await subscribe(url, sToken, receiverUrl)).status).to.equal(200);
      service.dropNotifications(1);
      const ev1 = obj(
        await request('POST', `${url}/users/create`, { sToken, body: { users: users(1, 'a') } }),
      );
      await eventDone(url, sToken, String(ev1.eventId));
      const ev2 = obj(
        await request('POST', `${url}/users/create`, { sToken, body: { users: users(1, 'b') } }),
      );
      await eventDone(url, sToken, String(ev2.eventId));
      const got = await waitFor('the second notification', () => receiver.ofType('USER_MANAGEMENT')[0]);
      expect(got.body.notification.eventId).to.equal(ev2.eventId);
      expect(receiver.ofType('USER_MANAGEMENT')).to.have.length(1);
      const dropped = service.notifications().filter((n) => n.state === 'dropped');
      expect(dropped).to.have.length(1);
      expect(dropped[0]?.payload.notification.eventId).to.equal(ev1.eventId);
      expect(service.stats().notifications.dropped).to.equal(1);
    } finally {
      await receiver.stop();
    }
  });

  describe('/sim control endpoints', function () {
    it('adds, lists and removes faults over HTTP', async function () {
      const add = await request('POST', `${origin}/sim/faults`, {
        body: {
          path: '/users',
          times: 1,
          action: { kind: 'error', errorNumber: 9646, retryAfterSeconds: 3 },
        },
      });
      expect(add.status, add.text).to.equal(201);
      const id = String(obj(add).id);
      const list = obj(await request('GET', `${origin}/sim/faults`));
      expect((list.faults as { id: string }[]).map((f) => f.id)).to.deep.equal([id]);
      const hit = await request('GET', `${url}/users`, { sToken });
      expect(hit.status).to.equal(429);
      expect(hit.headers['retry-after']).to.equal('3');

      service.addFault({ action: { kind: 'unavailable', retryAfterSeconds: 1 } });
      expect((await request('DELETE', `${origin}/sim/faults`)).status).to.equal(204);
      expect((await request('GET', `${url}/users`, { sToken })).status).to.equal(200);

      const bad = await request('POST', `${origin}/sim/faults`, { body: { action: { kind: 'nope' } } });
      expect(bad.status).to.equal(400);
      expect((await request('DELETE', `${origin}/sim/faults/unknown`)).status).to.equal(404);

      expect(
        (await request('POST', `${origin}/sim/faults/drop-notifications`, { body: { drop: true } })).status,
      ).to.equal(204);
      expect(obj(await request('GET', `${origin}/sim/faults`)).dropNotifications).to.equal('all');
    });

    it('makes the service unreachable for a while over HTTP', async function () {
      const r = await request('POST', `${origin}/sim/faults/unreachable`, { body: { ms: 300 } });
      expect(r.status).to.equal(202);
      await waitFor('the service to go away', () => !service.running);
      await waitFor('the service to come back', () => service.running);
      expect((await request('GET', `${url}/users`, { sToken })).status).to.equal(200);
    });

    it('mints and revokes tokens, lists locations and accepts invitations over HTTP', async function () {
      const minted = await request('POST', `${origin}/sim/tokens`, {
        body: { orgName: 'Via HTTP', countryISO2ACode: 'DE' },
      });
      expect(minted.status).to.equal(201);
      const { sToken: t, uId } = obj(minted) as { sToken: string; uId: string };
      const config = obj(await request('GET', `${url}/client/config`, { sToken: t }));
      expect(config).to.include({ uId, countryISO2ACode: 'DE', locationName: 'Via HTTP' });
      const ev = obj(await request('POST', `${url}/users/create`, { sToken: t, body: { users: users(1) } }));
      await eventDone(url, t, String(ev.eventId));
      const locs = obj(await request('GET', `${origin}/sim/locations`)).locations as { uId: string }[];
      expect(locs.map((l) => l.uId)).to.include(uId);
      const us = obj(await request('GET', `${origin}/sim/locations/${uId}/users`)).users as {
        inviteCode: string;
      }[];
      const accepted = obj(
        await request('POST', `${origin}/sim/invitations/accept`, {
          body: { inviteCode: us[0]?.inviteCode, appleId: 'http@icloud.test' },
        }),
      );
      expect(accepted.result).to.equal('associated');
      expect((await request('POST', `${origin}/sim/tokens/revoke`, { body: { sToken: t } })).status).to.equal(
        204,
      );
      expect(obj(await request('GET', `${url}/users`, { sToken: t })).errorNumber).to.equal(9625);
      expect(obj(await request('GET', `${origin}/sim/stats`)).requests).to.have.property('total');
    });

    it('requires the admin token when one is configured', async function () {
      const guarded = await startService({ adminToken: 'sim-admin-secret' });
      try {
        const o = guarded.url.replace(/\/mdm\/v2$/, '');
        expect((await request('GET', `${o}/sim/faults`)).status).to.equal(401);
        const ok = await request('GET', `${o}/sim/faults`, {
          headers: { authorization: 'Bearer sim-admin-secret' },
        });
        expect(ok.status).to.equal(200);
      } finally {
        await guarded.service.stop();
      }
    });
  });
});
