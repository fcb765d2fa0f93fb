import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { QueryTypes } from 'sequelize';
import { SiteInUseError } from '../../server/directory/errors.ts';
import type { NewUser } from '../../server/directory/store.ts';
import { openDatabase, type Database } from '../../server/storage/database.ts';
import { SqlSiteStore, SqlUserStore } from '../../server/storage/directory-store.ts';
import { migrate } from '../../server/storage/migrate.ts';
import { SqlVppStore } from '../../server/storage/vpp-store.ts';
import { LocationExistsError } from '../../server/vpp/errors.ts';
import type { NewLocation } from '../../server/vpp/store.ts';
import { testDatabases } from '../helpers/databases.ts';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 123);
const at = (s: number) => new Date(T0 + s * 1000);

let counter = 0;
const uid = (prefix: string) => `${prefix}-${process.pid}-${++counter}`;

function newUser(username: string, overrides: Partial<NewUser> = {}): NewUser {
  return {
    username,
    fullName: null,
    email: null,
    managedAppleId: null,
    siteIds: [],
    passwordHash: null,
    ...overrides,
  };
}

function newLocation(overrides: Partial<NewLocation> = {}): NewLocation {
  return {
    name: uid('loc'),
    organizationName: 'Org',
    locationName: 'Apple Loc',
    countryCode: 'US',
    tokenExpiration: at(86_400),
    appleUid: uid('uid'),
    siteId: null,
    autoRegisterManagedUsers: false,
    invitationTemplate: 'https://apple.example/invite?inviteCode=%25inviteCode%25&mt=8',
    notificationTokenHash: 'ab'.repeat(32),
    ...overrides,
  };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

for (const target of testDatabases()) {
  describe(`Apps and Books storage contract (${target.name})`, function () {
    this.timeout(120_000);
    let db: Database;
    let store: SqlVppStore;
    let users: SqlUserStore;
    let sites: SqlSiteStore;

    const makeUsers = async (count: number, overrides: Partial<NewUser> = {}) => {
      if (count <= 10) {
        const ids: string[] = [];
        for (let i = 0; i < count; i++)
          ids.push((await users.create(newUser(uid('u'), overrides), at(0))).id);
        return ids;
      }
      // many: one multi-row insert (the directory store creates one user per transaction)
      const names = Array.from({ length: count }, () => uid('bulk'));
      await db.write((t) =>
        db.sequelize.getQueryInterface().bulkInsert(
          'users',
          names.map((name) => ({
            username: name,
            username_key: name.toLowerCase(),
            created_at: at(0),
            updated_at: at(0),
          })),
          { transaction: t },
        ),
      );
      const rows = await db.sequelize.query<{ id: unknown }>(
        'SELECT id FROM users WHERE username_key IN (:keys) ORDER BY id',
        {
          type: QueryTypes.SELECT,
          replacements: { keys: names.map((x) => x.toLowerCase()) },
        },
      );
      return rows.map((r) => String(r.id));
    };
    const location = async (overrides: Partial<NewLocation> = {}) =>
      store.createLocation(newLocation(overrides), (id) => `sealed:${id}`, at(0));

    before(async () => {
      db = await openDatabase(await target.url());
      await migrate(db);
      store = new SqlVppStore(db);
      users = new SqlUserStore(db);
      sites = new SqlSiteStore(db);
    });
    after(async () => {
      await db?.close();
      await target.cleanup?.();
    });

    describe('locations', () => {
      it('creates (sealing with the new id), reads, updates and deletes', async () => {
        const site = await sites.create(uid('site'), at(0));
        const created = await location({ siteId: site.id });
        expect(created).to.deep.include({
          status: 'setting_up',
          siteId: site.id,
          countryCode: 'US',
          versionId: null,
        });
        expect(created.tokenExpiration?.getTime()).to.equal(at(86_400).getTime());
        expect(created).to.not.have.property('sTokenSealed');
        const full = await store.getLocation(created.id);
        expect(full?.sTokenSealed).to.equal(`sealed:${created.id}`);
        expect(full?.notificationTokenHash).to.equal('ab'.repeat(32));

        const updated = await store.updateLocation(
          created.id,
          {
            name: 'renamed',
            siteId: null,
            autoRegisterManagedUsers: true,
            status: 'active',
            statusMessage: null,
            renewal: {
              seal: (id) => `renewed:${id}`,
              organizationName: 'Org 2',
              locationName: 'Loc 2',
              countryCode: 'FR',
              tokenExpiration: at(2 * 86_400),
            },
          },
          at(5),
        );
        expect(updated).to.deep.include({
          name: 'renamed',
          siteId: null,
          autoRegisterManagedUsers: true,
          status: 'active',
          organizationName: 'Org 2',
          countryCode: 'FR',
        });
        expect(updated?.updatedAt.getTime()).to.equal(at(5).getTime());
        expect((await store.getLocation(created.id))?.sTokenSealed).to.equal(`renewed:${created.id}`);

        await store.setSyncState(created.id, { versionId: 'v-7', syncedAt: at(6), error: null }, at(6));
        const synced = await store.getLocation(created.id);
        expect([synced?.versionId, synced?.lastSyncedAt?.getTime()]).to.deep.equal(['v-7', at(6).getTime()]);

        expect(await store.deleteLocation(created.id)).to.equal(true);
        expect(await store.getLocation(created.id)).to.equal(null);
        expect(await store.deleteLocation(created.id)).to.equal(false);
        expect(await store.updateLocation(created.id, { name: 'x' }, at(7))).to.equal(null);
        expect(await store.getLocation('not-an-id')).to.equal(null);
      });

      it('refuses a second location of the same Apple location (LocationExistsError)', async () => {
        const first = await location();
        const err = await rejection(location({ appleUid: first.appleUid }));
        expect(err).to.be.instanceOf(LocationExistsError);
        expect((err as LocationExistsError).details).to.deep.equal({ locationId: first.id });
        expect((await store.findLocationByAppleUid(first.appleUid ?? ''))?.id).to.equal(first.id);
      });

      it('marks a token problem only while the failing token is still the one stored', async () => {
        const loc = await location();
        await store.markLocationToken(loc.id, 'another token', 'token_expired', 'expired', at(1));
        expect((await store.getLocation(loc.id))?.status).to.equal('setting_up');
        await store.markLocationToken(
          loc.id,
          `sealed:${loc.id}`,
          'token_expired',
          'The token has expired.',
          at(1),
        );
        const marked = await store.getLocation(loc.id);
        expect([marked?.status, marked?.statusMessage]).to.deep.equal([
          'token_expired',
          'The token has expired.',
        ]);
      });

      it('lists by id with a cursor and a case-insensitive filter', async () => {
        const tag = uid('ListTag');
        const made = [];
        for (let i = 0; i < 3; i++) made.push(await location({ name: `${tag} ${i}` }));
        const q = tag.toLowerCase();
        const first = await store.listLocations({ limit: 2, cursor: null, q });
        expect(first.items.map((l) => l.id)).to.deep.equal(made.slice(0, 2).map((l) => l.id));
        const second = await store.listLocations({ limit: 2, cursor: first.nextCursor, q });
        expect(second.items.map((l) => l.id)).to.deep.equal([made[2]?.id]);
        expect(second.nextCursor).to.equal(null);
        expect((await store.allLocationIds()).includes(made[0]?.id ?? '')).to.equal(true);
      });

      it('a site used by a location cannot be deleted (409 site_in_use)', async () => {
        const site = await sites.create(uid('site'), at(0));
        const loc = await location({ siteId: site.id });
        const err = await rejection(sites.delete(site.id));
        expect(err).to.be.instanceOf(SiteInUseError);
        expect((err as SiteInUseError).details).to.deep.equal({ users: 0, locations: 1 });
        expect((err as SiteInUseError).message)
          .to.include('1 location(s)')
          .and.not.to.include('user');
        expect((await store.getLocation(loc.id))?.siteId).to.equal(site.id);
        await store.updateLocation(loc.id, { siteId: null }, at(1));
        expect(await sites.delete(site.id)).to.equal(true);
      });
    });

    describe('registrations', () => {
      it('adds registrations in bulk (several transactions), idempotently', async () => {
        const loc = await location();
        const ids = await makeUsers(1200);
        const r = await store.addRegistrations(
          loc.id,
          [...ids, ids[0] ?? '', 'bogus'],
          { managed: false },
          randomUUID,
          at(1),
        );
        expect(r.queued).to.have.length(1200);
        expect(r.existing).to.deep.equal([]);
        const again = await store.addRegistrations(
          loc.id,
          ids.slice(0, 10),
          { managed: false },
          randomUUID,
          at(2),
        );
        expect(again).to.deep.equal({ queued: [], existing: ids.slice(0, 10) });
        const regs = await store.registrationsAt(loc.id, ids);
        expect(regs).to.have.length(1200);
        expect(new Set(regs.map((x) => x.clientUserId)).size).to.equal(1200);
        expect(regs.every((x) => x.state === 'pending' && x.status === 'pending' && !x.managed)).to.equal(
          true,
        );
        expect((await store.outstanding(loc.id)).pending).to.equal(1200);
      });

      it('pending rows carry the Managed Apple ID when registered as managed', async () => {
        const loc = await location();
        const [m, p] = [
          ...(await makeUsers(1, { managedAppleId: 'm@corp.example' })),
          ...(await makeUsers(1)),
        ];
        await store.addRegistrations(loc.id, [p ?? ''], { managed: false }, randomUUID, at(1));
        await store.addRegistrations(loc.id, [m ?? ''], { managed: true }, randomUUID, at(1));
        const pending = await store.pendingRegistrations(loc.id, 10);
        expect(pending.map((x) => [x.userId, x.managed, x.managedAppleId])).to.deep.equal([
          [p, false, null],
          [m, true, 'm@corp.example'],
        ]);
        expect(await store.pendingRegistrations(loc.id, 1)).to.have.length(1);
      });

      it('follows an event: creating, then 9716 → lookup, other errors → failed, the rest → created', async () => {
        const loc = await location();
        const ids = await makeUsers(4);
        await store.addRegistrations(loc.id, ids, { managed: false }, randomUUID, at(1));
        const pending = await store.pendingRegistrations(loc.id, 10);
        await store.markCreating(
          pending.map((x) => x.id),
          'event-1',
          at(2),
        );
        expect(await store.openEvents(loc.id, at(1), 10)).to.deep.equal([]);
        expect(
          (await store.openEvents(loc.id, at(3), 10)).map((e) => [e.eventId, e.sentAt.getTime()]),
        ).to.deep.equal([['event-1', at(2).getTime()]]);
        const [a, b] = pending;
        const outcome = await store.finishEvent(
          loc.id,
          'event-1',
          [
            { clientUserId: a?.clientUserId ?? '', errorNumber: 9716, errorMessage: 'exists' },
            { clientUserId: b?.clientUserId ?? '', errorNumber: 9717, errorMessage: 'bad email' },
          ],
          at(4),
        );
        expect(outcome.lookups).to.equal(1);
        expect(outcome.created).to.equal(2);
        expect(outcome.failed.map((x) => [x.userId, x.errorNumber])).to.deep.equal([[b?.userId, 9717]]);
        expect(await store.lookups(loc.id, 10)).to.deep.equal([{ id: a?.id, clientUserId: a?.clientUserId }]);
        expect(await store.outstanding(loc.id)).to.deep.equal({
          pending: 0,
          creating: 0,
          created: 2,
          lookup: 1,
        });
        const failed = await store.getRegistration(b?.userId ?? '', loc.id);
        expect([failed?.status, failed?.errorNumber, failed?.errorMessage]).to.deep.equal([
          'failed',
          9717,
          'bad email',
        ]);
        // created rows the sync did not see become lookups
        expect(await store.lookupStaleCreated(loc.id, at(3))).to.equal(0);
        expect(await store.lookupStaleCreated(loc.id, at(5))).to.equal(2);
        expect((await store.outstanding(loc.id)).lookup).to.equal(3);
        // a lookup that found nothing starts over (optionally under a new clientUserId)
        await store.restartRegistration(a?.id ?? '', 'new-client-id', at(6));
        const restarted = await store.getRegistration(a?.userId ?? '', loc.id);
        expect([restarted?.state, restarted?.clientUserId]).to.deep.equal(['pending', 'new-client-id']);
      });

      it("applies Apple's users: forward only, unknown ones counted, invitation URLs built", async () => {
        const loc = await location();
        const ids = await makeUsers(3);
        await store.addRegistrations(loc.id, ids, { managed: false }, randomUUID, at(1));
        const regs = await store.registrationsAt(loc.id, ids);
        const [r1, r2, r3] = ids.map((id) => regs.find((x) => x.userId === id));
        const applied = await store.applyAppleUsers(
          loc.id,
          [
            { clientUserId: r1?.clientUserId ?? '', status: 'Registered', inviteCode: 'code/1' },
            {
              clientUserId: r2?.clientUserId ?? '',
              status: 'Associated',
              inviteCode: 'code2',
              idHash: 'hash-2',
            },
            { clientUserId: r3?.clientUserId ?? '', status: 'Registered' },
            { clientUserId: 'somebody-else', status: 'Registered', inviteCode: 'x' },
          ],
          at(2),
        );
        expect(applied.registered.map((x) => x.userId)).to.deep.equal([r1?.userId]);
        expect(applied.associated).to.deep.equal([
          { userId: r2?.userId, clientUserId: r2?.clientUserId, idHash: 'hash-2' },
        ]);
        expect(applied.unknown).to.equal(1);
        expect(applied.lookups).to.equal(0); // r3 was pending (never sent): nothing to read
        const one = await store.getRegistration(r1?.userId ?? '', loc.id);
        expect(one).to.deep.include({ status: 'registered', inviteCode: 'code/1' });
        expect(one?.invitationUrl).to.equal('https://apple.example/invite?inviteCode=code%2F1&mt=8');
        expect(one?.registeredAt?.getTime()).to.equal(at(2).getTime());
        // an older Registered never moves an associated user back
        await store.applyAppleUsers(
          loc.id,
          [{ clientUserId: r2?.clientUserId ?? '', status: 'Registered', inviteCode: 'code2' }],
          at(3),
        );
        expect((await store.getRegistration(r2?.userId ?? '', loc.id))?.status).to.equal('associated');
        // associated later, with the time of that
        const later = await store.applyAppleUsers(
          loc.id,
          [{ clientUserId: r1?.clientUserId ?? '', status: 'Associated', idHash: 'hash-1' }],
          at(4),
        );
        expect(later.associated.map((x) => x.idHash)).to.deep.equal(['hash-1']);
        const assoc = await store.getRegistration(r1?.userId ?? '', loc.id);
        expect(assoc).to.deep.include({ status: 'associated', idHash: 'hash-1', inviteCode: 'code/1' });
        expect(assoc?.associatedAt?.getTime()).to.equal(at(4).getTime());
        expect(assoc?.registeredAt?.getTime()).to.equal(at(2).getTime());
        // Apple reporting Retired retires it here
        const retired = await store.applyAppleUsers(
          loc.id,
          [{ clientUserId: r1?.clientUserId ?? '', status: 'Retired' }],
          at(5),
        );
        expect(retired.retired.map((x) => x.userId)).to.deep.equal([r1?.userId]);
        expect((await store.getRegistration(r1?.userId ?? '', loc.id))?.status).to.equal('retired');
      });

      it('a notification applies once (its id and its changes commit together); failures from it', async () => {
        const loc = await location();
        const ids = await makeUsers(3);
        await store.addRegistrations(loc.id, ids, { managed: false }, randomUUID, at(1));
        const pending = await store.pendingRegistrations(loc.id, 10);
        await store.markCreating(
          pending.map((x) => x.id),
          'ev',
          at(2),
        );
        const [a, b, c] = pending;
        const notification = { id: uid('n'), type: 'USER_MANAGEMENT' };
        const users = [
          { clientUserId: a?.clientUserId ?? '', status: 'Registered' as const, inviteCode: 'ic-a' },
        ];
        const failures = [
          { clientUserId: b?.clientUserId ?? '', errorNumber: 9716, errorMessage: 'exists' },
          { clientUserId: c?.clientUserId ?? '', errorNumber: 9610, errorMessage: 'no' },
        ];
        const first = await store.applyAppleUsers(loc.id, users, at(3), { notification, failures });
        expect(first.duplicate).to.equal(false);
        expect(first.registered).to.have.length(1);
        expect(first.lookups).to.equal(1);
        expect(first.failed.map((x) => x.userId)).to.deep.equal([c?.userId]);
        const second = await store.applyAppleUsers(
          loc.id,
          [{ clientUserId: a?.clientUserId ?? '', status: 'Associated', idHash: 'h' }],
          at(4),
          { notification },
        );
        expect(second.duplicate).to.equal(true);
        expect((await store.getRegistration(a?.userId ?? '', loc.id))?.status).to.equal('registered');
        expect(await store.recordNotification(loc.id, notification.id, 'X', at(5))).to.equal(false);
        expect(await store.recordNotification(loc.id, uid('other'), 'ASSET_COUNT', at(5))).to.equal(true);
        // concurrent duplicates: exactly one applies
        const id = uid('race');
        const results = await Promise.all(
          [1, 2, 3, 4].map(() =>
            store.applyAppleUsers(loc.id, [], at(6), { notification: { id, type: 'USER_ASSOCIATED' } }),
          ),
        );
        expect(results.filter((r) => !r.duplicate)).to.have.length(1);
        expect(await store.purgeNotifications(at(5))).to.be.at.least(1);
        expect(await store.recordNotification(loc.id, notification.id, 'X', at(7))).to.equal(true);
      });

      it('restarts retired registrations with a new clientUserId and failed ones with theirs', async () => {
        const loc = await location();
        const [u1, u2] = await makeUsers(2);
        await store.addRegistrations(loc.id, [u1 ?? '', u2 ?? ''], { managed: false }, randomUUID, at(1));
        const before1 = await store.getRegistration(u1 ?? '', loc.id);
        const before2 = await store.getRegistration(u2 ?? '', loc.id);
        const retired = await store.retireRegistration(before1?.id ?? '', at(2));
        expect([retired?.status, retired?.retiredAt?.getTime()]).to.deep.equal(['retired', at(2).getTime()]);
        await store.failRegistrations(
          [before2?.id ?? ''],
          { errorNumber: 9610, errorMessage: 'refused' },
          at(2),
        );
        const r = await store.addRegistrations(
          loc.id,
          [u1 ?? '', u2 ?? ''],
          { managed: false },
          randomUUID,
          at(3),
        );
        expect(r.queued.sort()).to.deep.equal([u1, u2].sort());
        const after1 = await store.getRegistration(u1 ?? '', loc.id);
        const after2 = await store.getRegistration(u2 ?? '', loc.id);
        expect(after1?.state).to.equal('pending');
        expect(after1?.clientUserId).to.not.equal(before1?.clientUserId);
        expect(after1?.retiredAt).to.equal(null);
        expect([after2?.state, after2?.clientUserId, after2?.errorNumber]).to.deep.equal([
          'pending',
          before2?.clientUserId,
          null,
        ]);
      });

      it("a user's registrations at several locations; deleting the user or the location removes them", async () => {
        const [l1, l2] = [await location(), await location()];
        const [u] = await makeUsers(1);
        await store.addRegistrations(l1.id, [u ?? ''], { managed: false }, randomUUID, at(1));
        await store.addRegistrations(l2.id, [u ?? ''], { managed: false }, randomUUID, at(1));
        expect((await store.registrationsOfUser(u ?? '')).map((r) => r.locationId)).to.deep.equal([
          l1.id,
          l2.id,
        ]);
        expect(await store.deleteLocation(l2.id)).to.equal(true);
        expect((await store.registrationsOfUser(u ?? '')).map((r) => r.locationId)).to.deep.equal([l1.id]);
        expect(await users.delete(u ?? '', at(2))).to.equal(true);
        expect(await store.registrationsOfUser(u ?? '')).to.deep.equal([]);
      });
    });
  });
}
