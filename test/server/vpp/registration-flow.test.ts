import { expect } from 'chai';
import { pino } from 'pino';
import { QueryTypes } from 'sequelize';
import { appleIdHash } from '../../../simulator/apple-vpp/service.ts';
import { toInt } from '../../../server/storage/models.ts';
import { HttpAppsAndBooks } from '../../../server/vpp/apple-client.ts';
import {
  errorCode,
  registrationAt,
  vppFixture,
  waitFor,
  type RegistrationJson,
  type VppFixture,
} from './helpers.ts';

interface LocationJson {
  id: string;
  status: string;
  statusMessage: string | null;
}

describe('Apps and Books registrations (server and simulated service)', function () {
  this.timeout(120_000);
  let f: VppFixture;
  let n = 0;
  const user = (extra: Record<string, unknown> = {}) => f.addUser(`flow.user.${++n}`, extra);

  const countStates = async (locationId: string) => {
    const rows = await f.ts.server.db.sequelize.query<{ state: string; n: unknown }>(
      'SELECT state, COUNT(*) AS n FROM vpp_registrations WHERE location_id = :loc GROUP BY state',
      { type: QueryTypes.SELECT, replacements: { loc: Number(locationId) } },
    );
    return Object.fromEntries(rows.map((r) => [r.state, toInt(r.n)]));
  };
  const creates = () => f.service.stats().requests.byRoute['POST /users/create'] ?? 0;
  /** Many directory users at once (one multi-row insert; the API makes one per request). */
  const bulkUsers = async (count: number, prefix: string) => {
    const db = f.ts.server.db;
    const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
    const now = new Date();
    await db.write((t) =>
      db.sequelize.getQueryInterface().bulkInsert(
        'users',
        names.map((name) => ({ username: name, username_key: name, created_at: now, updated_at: now })),
        { transaction: t },
      ),
    );
    const rows = await db.sequelize.query<{ id: unknown }>(
      'SELECT id FROM users WHERE username_key IN (:names) ORDER BY id',
      { type: QueryTypes.SELECT, replacements: { names } },
    );
    return rows.map((r) => String(toInt(r.id)));
  };

  before(async () => {
    f = await vppFixture();
  });
  afterEach(() => f.service.clearFaults());
  after(async () => {
    await f?.cleanup();
  });

  it('registers 250 users through ensureRegistered in 3 users/create calls', async () => {
    const location = await f.addLocation();
    const userIds = await bulkUsers(250, 'bulk');
    const before = creates();
    const registered = new Set<string>();
    const off = f.ts.server.events.on('registration.registered', (e) => {
      if (e.locationId === location.id) for (const u of e.userIds) registered.add(u);
    });
    const result = await f.ts.server.vpp.registrations.ensureRegistered(location.id, [
      ...userIds,
      userIds[0] ?? '',
      '999999',
    ]);
    expect(result.queued).to.have.length(250);
    expect(result.skipped).to.deep.equal([{ userId: '999999', reason: 'user_not_found' }]);
    await waitFor('250 registered', async () => (await countStates(location.id)).registered === 250);
    expect(creates() - before).to.equal(3);
    off();
    expect(registered.size).to.equal(250);
    // asking again changes nothing and calls Apple no more
    const again = await f.ts.server.vpp.registrations.ensureRegistered(location.id, userIds);
    expect(again.queued).to.deep.equal([]);
    expect(again.existing).to.have.length(250);
    expect(f.service.users(location.sToken)).to.have.length(250);
  });

  it('managed: users with a Managed Apple ID are associated at once; others are skipped', async () => {
    const location = await f.addLocation();
    const managed = await user({ managedAppleId: 'm.user@corp.example' });
    const plain = await user();
    const r = await f.ts.server.vpp.registrations.ensureRegistered(location.id, [managed, plain], {
      managed: true,
    });
    expect(r.queued).to.deep.equal([managed]);
    expect(r.skipped).to.deep.equal([{ userId: plain, reason: 'no_managed_apple_id' }]);
    const reg = await waitFor('associated', async () => {
      const x = await registrationAt(f.ts, managed, location.id);
      return x?.status === 'associated' ? x : undefined;
    });
    expect(reg.idHash).to.equal(appleIdHash('m.user@corp.example'));
    expect(reg.managed).to.equal(true);
    // the admin route refuses managed registration without a Managed Apple ID
    const res = await f.ts.api('POST', `/users/${plain}/registrations/${location.id}`, { managed: true });
    expect(res.status).to.equal(409);
    expect(errorCode(res)).to.equal('no_managed_apple_id');
  });

  it('honours Retry-After, and a user Apple already has (9716) is read, never created twice', async () => {
    const location = await f.addLocation();
    const userId = await user();
    const before = creates();
    f.service.addFault({
      path: '/users/create',
      times: 1,
      action: { kind: 'tooManyRequests', retryAfterSeconds: 2 },
    });
    const t0 = Date.now();
    const res = await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, {});
    expect(res.status).to.equal(201);
    const { clientUserId } = res.json<RegistrationJson>();
    await waitFor('the rate-limited call', () => creates() - before === 1);
    // Meanwhile the user comes to exist at Apple under our clientUserId (as after a lost answer), and no
    // notification tells the server: it learns it from the 9716 of its own retry (by polling the event).
    f.service.dropNotifications(true);
    const client = new HttpAppsAndBooks({
      baseUrl: f.service.url,
      extraCaPems: [f.pki.caCertPem],
      log: pino({ level: 'silent' }),
    });
    try {
      await client.createUsers(location.sToken, [{ clientUserId }]);
    } finally {
      client.close();
    }
    const atApple = await waitFor('the user at Apple', () =>
      f.service.users(location.sToken).find((u) => u.clientUserId === clientUserId && u.inviteCode),
    );
    const reg = await waitFor('registered', async () => {
      const x = await registrationAt(f.ts, userId, location.id);
      return x?.status === 'registered' ? x : undefined;
    });
    f.service.dropNotifications(false);
    expect(Date.now() - t0).to.be.at.least(2000);
    expect(creates() - before).to.equal(3); // refused, ours made directly, the retry (answered 9716)
    expect(reg.clientUserId).to.equal(clientUserId);
    expect(reg.inviteCode).to.equal(atApple.inviteCode);
    const events = f.service.events(location.sToken);
    expect(events.at(-1)?.failures.map((x) => x.errorNumber)).to.deep.equal([9716]);
    expect(f.service.users(location.sToken).filter((u) => u.clientUserId === clientUserId)).to.have.length(1);
  });

  it('an expired token (9621) marks the location, keeps the work, and a renewal resumes it', async () => {
    const location = await f.addLocation();
    const first = await user();
    f.service.addFault({ path: '/users/create', times: 1, action: { kind: 'error', errorNumber: 9621 } });
    expect((await f.ts.api('POST', `/users/${first}/registrations/${location.id}`, {})).status).to.equal(201);
    const marked = await waitFor('location marked', async () => {
      const l = (await f.ts.api('GET', `/locations/${location.id}`)).json<LocationJson>();
      return l.status === 'token_expired' ? l : undefined;
    });
    expect(marked.statusMessage).to.contain('token has expired');
    expect((await registrationAt(f.ts, first, location.id))?.status).to.equal('pending');
    // new work for the location is refused with a clear error; nothing stored
    const second = await user();
    const refused = await f.ts.api('POST', `/users/${second}/registrations/${location.id}`, {});
    expect(refused.status).to.equal(409);
    expect(errorCode(refused)).to.equal('location_token_expired');
    expect(await registrationAt(f.ts, second, location.id)).to.equal(undefined);
    // renewal (the same Apple location) resumes the waiting work at once
    const renewed = await f.ts.api('PATCH', `/locations/${location.id}`, { serviceToken: location.sToken });
    expect(renewed.status).to.equal(200);
    expect(renewed.json<LocationJson>().status).to.equal('active');
    await waitFor(
      'registered after renewal',
      async () => (await registrationAt(f.ts, first, location.id))?.status === 'registered',
    );
  });

  it('a revoked token (9625) found by the sync marks the location', async () => {
    const location = await f.addLocation();
    f.service.revokeServiceToken(location.sToken);
    expect((await f.ts.api('POST', `/locations/${location.id}/sync`)).status).to.equal(202);
    const l = await waitFor('revoked', async () => {
      const x = (await f.ts.api('GET', `/locations/${location.id}`)).json<LocationJson>();
      return x.status === 'token_revoked' ? x : undefined;
    });
    expect(l.statusMessage).to.contain('revoked');
  });

  it('retire: retired at Apple and here; registering again uses a new clientUserId', async () => {
    const location = await f.addLocation();
    const userId = await user();
    await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, {});
    const reg = await waitFor('registered', async () => {
      const x = await registrationAt(f.ts, userId, location.id);
      return x?.status === 'registered' ? x : undefined;
    });
    const retired = await f.ts.api('POST', `/users/${userId}/registrations/${location.id}/retire`);
    expect(retired.status).to.equal(200);
    expect(retired.json<RegistrationJson>().status).to.equal('retired');
    await waitFor(
      'retired at Apple',
      () =>
        f.service.users(location.sToken).find((u) => u.clientUserId === reg.clientUserId)?.status ===
        'Retired',
    );
    // retiring again is harmless
    expect((await f.ts.api('POST', `/users/${userId}/registrations/${location.id}/retire`)).status).to.equal(
      200,
    );
    const again = await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, {});
    expect(again.status).to.equal(201);
    const fresh = again.json<RegistrationJson>();
    expect(fresh.clientUserId).to.not.equal(reg.clientUserId);
    const done = await waitFor('registered again', async () => {
      const x = await registrationAt(f.ts, userId, location.id);
      return x?.status === 'registered' ? x : undefined;
    });
    expect(done.inviteCode).to.not.equal(reg.inviteCode);
    // retire: unknown registration, unknown user
    const other = await user();
    expect((await f.ts.api('POST', `/users/${other}/registrations/${location.id}/retire`)).status).to.equal(
      404,
    );
    expect((await f.ts.api('POST', `/users/987654/registrations/${location.id}/retire`)).status).to.equal(
      404,
    );
  });

  it('registration routes: 401, 404, 400', async () => {
    const location = await f.addLocation();
    const userId = await user();
    for (const [method, route] of [
      ['GET', `/users/${userId}/registrations`],
      ['POST', `/users/${userId}/registrations/${location.id}`],
      ['POST', `/users/${userId}/registrations/${location.id}/retire`],
    ] as const) {
      expect((await f.ts.api(method, route, method === 'POST' ? {} : undefined, null)).status).to.equal(401);
    }
    expect((await f.ts.api('GET', '/users/987654/registrations')).status).to.equal(404);
    expect((await f.ts.api('POST', `/users/987654/registrations/${location.id}`, {})).status).to.equal(404);
    expect((await f.ts.api('POST', `/users/${userId}/registrations/987654`, {})).status).to.equal(404);
    const bad = await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, { managed: 'yes' });
    expect(bad.status).to.equal(400);
    expect(errorCode(bad)).to.equal('invalid_request');
    expect(
      (await f.ts.api('GET', `/users/${userId}/registrations`)).json<{ items: unknown[] }>().items,
    ).to.deep.equal([]);
  });

  it('measures: 2,000 users registered end to end', async function () {
    const location = await f.addLocation();
    const userIds = await bulkUsers(2000, 'measure');
    const t0 = Date.now();
    const r = await f.ts.server.vpp.registrations.ensureRegistered(location.id, userIds);
    const queuedMs = Date.now() - t0;
    expect(r.queued).to.have.length(2000);
    await waitFor(
      '2,000 registered',
      async () => (await countStates(location.id)).registered === 2000,
      60_000,
    );
    const totalMs = Date.now() - t0;
    console.log(
      `      2,000 registrations: stored and queued in ${queuedMs} ms, all registered in ${totalMs} ms`,
    );
  });
});
