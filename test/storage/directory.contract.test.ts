import { expect } from 'chai';
import { NameTakenError, SiteInUseError, UnknownIdsError } from '../../server/directory/errors.ts';
import { collectIds, type IdBatches, type NewUser } from '../../server/directory/store.ts';
import { openDatabase, type Database } from '../../server/storage/database.ts';
import {
  SqlDeviceAssignmentStore,
  SqlGroupStore,
  SqlSiteStore,
  SqlUserStore,
} from '../../server/storage/directory-store.ts';
import { migrate } from '../../server/storage/migrate.ts';
import { SqlDeviceStore, SqlEnrollmentTokenStore } from '../../server/storage/stores.ts';
import { testDatabases } from '../helpers/databases.ts';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 123);
const at = (s: number) => new Date(T0 + s * 1000);

let counter = 0;
/** Unique names per test, so that tests sharing one database never see each other's rows. */
function uid(prefix: string): string {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`;
}

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

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

async function batchesOf(ids: IdBatches): Promise<string[][]> {
  const out: string[][] = [];
  for await (const batch of ids) out.push(batch);
  return out;
}

const numeric = (ids: string[]) => [...ids].sort((a, b) => Number(a) - Number(b));

for (const target of testDatabases()) {
  describe(`directory storage contract (${target.name})`, function () {
    this.timeout(120_000);
    let db: Database;
    let sites: SqlSiteStore;
    let users: SqlUserStore;
    let groups: SqlGroupStore;
    let assignments: SqlDeviceAssignmentStore;
    let devices: SqlDeviceStore;

    before(async function () {
      db = await openDatabase(await target.url());
      await migrate(db);
      sites = new SqlSiteStore(db);
      users = new SqlUserStore(db);
      groups = new SqlGroupStore(db);
      assignments = new SqlDeviceAssignmentStore(db);
      devices = new SqlDeviceStore(db);
    });

    after(async function () {
      await db?.close();
      await target.cleanup?.();
    });

    describe('sites', function () {
      it('creates, reads, renames and deletes a site', async function () {
        const name = uid('Site');
        const site = await sites.create(name, at(0));
        expect(site.id).to.match(/^[1-9][0-9]*$/);
        expect(site).to.include({ name });
        expect(site.createdAt.getTime()).to.equal(at(0).getTime());
        expect(await sites.get(site.id)).to.deep.equal(site);
        const renamed = await sites.rename(site.id, `${name}-b`, at(5));
        expect(renamed).to.include({ id: site.id, name: `${name}-b` });
        expect(renamed?.updatedAt.getTime()).to.equal(at(5).getTime());
        expect(await sites.delete(site.id)).to.equal(true);
        expect(await sites.get(site.id)).to.equal(null);
        expect(await sites.delete(site.id)).to.equal(false);
        expect(await sites.rename(site.id, 'x', at(6))).to.equal(null);
      });

      it('unknown and malformed ids name nothing', async function () {
        for (const id of ['999999999', 'abc', '01', '-1', '', '1e3', '99999999999999999999']) {
          expect(await sites.get(id), id).to.equal(null);
        }
        const site = await sites.create(uid('Site'), at(0));
        expect(await sites.missing([site.id, 'abc', '999999999', site.id, 'abc'])).to.deep.equal([
          'abc',
          '999999999',
        ]);
      });

      it('names are unique (exact): create and rename refuse a taken one', async function () {
        const name = uid('Taken');
        const a = await sites.create(name, at(0));
        const err = await rejection(sites.create(name, at(1)));
        expect(err).to.be.instanceOf(NameTakenError);
        expect((err as NameTakenError).code).to.equal('site_name_taken');
        const b = await sites.create(`${name}-2`, at(0));
        expect(((await rejection(sites.rename(b.id, name, at(2)))) as NameTakenError).code).to.equal(
          'site_name_taken',
        );
        expect((await sites.rename(a.id, name, at(3)))?.name).to.equal(name); // its own name
      });

      it('lists by name with cursors and a case-insensitive q', async function () {
        const prefix = uid('Paged');
        for (const n of ['c', 'a', 'B', 'd_x', 'e%']) await sites.create(`${prefix}-${n}`, at(0));
        const seen: string[] = [];
        let cursor: string | null = null;
        for (let i = 0; i < 10; i++) {
          const page = await sites.list({ limit: 2, cursor, q: prefix.toLowerCase() });
          seen.push(...page.items.map((s) => s.name));
          cursor = page.nextCursor;
          if (cursor === null) break;
        }
        expect(seen).to.have.length(5);
        expect(seen).to.deep.equal([...seen].sort());
        expect((await sites.list({ limit: 10, cursor: null, q: `${prefix}-d_` })).items).to.have.length(1);
        expect((await sites.list({ limit: 10, cursor: null, q: `${prefix}-_` })).items).to.have.length(0);
        expect((await sites.list({ limit: 10, cursor: null, q: `${prefix}-e%` })).items).to.have.length(1);
        expect(
          ((await rejection(sites.list({ limit: 1, cursor: 'nope', q: null }))) as { code: string }).code,
        ).to.equal('invalid_cursor');
      });

      it('a site with users cannot be deleted; enrollment tokens let go of it', async function () {
        const site = await sites.create(uid('Busy'), at(0));
        const user = await users.create(newUser(uid('busy'), { siteIds: [site.id] }), at(0));
        const tokens = new SqlEnrollmentTokenStore(db);
        const token = uid('tok');
        await tokens.create({ token, expiresAt: null, maxUses: null, siteId: site.id });
        const err = await rejection(sites.delete(site.id));
        expect(err).to.be.instanceOf(SiteInUseError);
        expect((err as SiteInUseError).details).to.deep.equal({ users: 1 });
        expect(await sites.get(site.id)).to.not.equal(null);
        expect((await tokens.get(token))?.siteId).to.equal(site.id);
        await users.update(user.id, { siteIds: [] }, at(1));
        expect(await sites.delete(site.id)).to.equal(true);
        expect((await tokens.get(token))?.siteId).to.equal(null);
      });
    });

    describe('users', function () {
      it('creates a user with sites and reads it by id, ids and username (any case)', async function () {
        const [s1, s2] = [await sites.create(uid('S'), at(0)), await sites.create(uid('S'), at(0))];
        const username = uid('Alice');
        const user = await users.create(
          newUser(username, {
            fullName: 'Alice A',
            email: 'alice@example.com',
            managedAppleId: 'alice@appleid.example.com',
            siteIds: [s2.id, s1.id, s2.id],
            passwordHash: 'scrypt$x',
          }),
          at(0),
        );
        expect(user).to.deep.include({
          username,
          fullName: 'Alice A',
          email: 'alice@example.com',
          managedAppleId: 'alice@appleid.example.com',
          siteIds: numeric([s1.id, s2.id]),
          hasPassword: true,
        });
        expect(user).to.not.have.property('passwordHash');
        expect(await users.get(user.id)).to.deep.equal(user);
        expect(await users.findByUsername(username.toUpperCase())).to.deep.equal(user);
        expect(await users.findByUsername(`${username}x`)).to.equal(null);
        const other = await users.create(newUser(uid('bob')), at(0));
        const found = await users.getUsersByIds([other.id, 'nope', user.id, '99999999', other.id]);
        expect(found.map((u) => u.id)).to.deep.equal([other.id, user.id]);
        expect(found[0]?.hasPassword).to.equal(false);
        expect(await users.getPasswordHash(user.id)).to.equal('scrypt$x');
        expect(await users.getPasswordHash(other.id)).to.equal(null);
        expect(await users.getPasswordHash('nope')).to.equal(null);
      });

      it('usernames are unique regardless of case', async function () {
        const username = uid('Carol');
        const carol = await users.create(newUser(username), at(0));
        const err = await rejection(users.create(newUser(username.toLowerCase()), at(1)));
        expect(err).to.be.instanceOf(NameTakenError);
        expect((err as NameTakenError).code).to.equal('username_taken');
        const dave = await users.create(newUser(uid('dave')), at(0));
        expect(
          (
            (await rejection(
              users.update(dave.id, { username: username.toUpperCase() }, at(2)),
            )) as NameTakenError
          ).code,
        ).to.equal('username_taken');
        // Changing only the case of one's own username is fine.
        expect(
          (await users.update(carol.id, { username: username.toUpperCase() }, at(3)))?.username,
        ).to.equal(username.toUpperCase());
      });

      it('unknown siteIds are named and nothing is stored', async function () {
        const site = await sites.create(uid('S'), at(0));
        const username = uid('erin');
        const err = await rejection(
          users.create(newUser(username, { siteIds: [site.id, '99999999', 'x'] }), at(0)),
        );
        expect(err).to.be.instanceOf(UnknownIdsError);
        expect((err as UnknownIdsError).details).to.deep.equal({ siteIds: ['99999999', 'x'] });
        expect(await users.findByUsername(username)).to.equal(null);
        const user = await users.create(newUser(username), at(0));
        const err2 = await rejection(users.update(user.id, { siteIds: ['99999999'], fullName: 'E' }, at(1)));
        expect((err2 as UnknownIdsError).details).to.deep.equal({ siteIds: ['99999999'] });
        expect((await users.get(user.id))?.fullName).to.equal(null);
      });

      it('updates every field; siteIds replaces the set; null clears', async function () {
        const [s1, s2, s3] = await Promise.all([1, 2, 3].map(() => sites.create(uid('S'), at(0))));
        if (!s1 || !s2 || !s3) throw new Error('unreachable');
        const user = await users.create(
          newUser(uid('frank'), {
            fullName: 'F',
            email: 'f@example.com',
            managedAppleId: 'f@appleid.example.com',
            siteIds: [s1.id, s2.id],
          }),
          at(0),
        );
        const updated = await users.update(
          user.id,
          { managedAppleId: null, email: 'frank@example.com', siteIds: [s3.id], passwordHash: 'h' },
          at(9),
        );
        expect(updated).to.deep.include({
          fullName: 'F',
          email: 'frank@example.com',
          managedAppleId: null,
          siteIds: [s3.id],
          hasPassword: true,
        });
        expect(updated?.updatedAt.getTime()).to.equal(at(9).getTime());
        expect(updated?.createdAt.getTime()).to.equal(at(0).getTime());
        expect((await users.update(user.id, { passwordHash: null }, at(10)))?.hasPassword).to.equal(false);
        expect(await users.update('99999999', { fullName: 'x' }, at(1))).to.equal(null);
        expect(await users.setPasswordHash(user.id, 'h2', at(11))).to.equal(true);
        expect(await users.setPasswordHash(user.id, 'h2', at(11))).to.equal(true); // unchanged: still found
        expect(await users.getPasswordHash(user.id)).to.equal('h2');
        expect(await users.setPasswordHash('99999999', 'h', at(11))).to.equal(false);
      });

      it('lists by username with cursors; q matches username, full name and email; site and group filters', async function () {
        const tag = uid('lst').toLowerCase();
        const site = await sites.create(uid('S'), at(0));
        const made = [];
        for (const [name, fullName, email] of [
          [`${tag}-b`, null, null],
          [`${tag}-A`, 'Zed Person', null],
          [`${tag}-c`, null, `c@${tag}.example.com`],
          [`other-${tag}`, null, null],
          [`zz-${counter}`, `Full ${tag}`, null],
        ] as const) {
          made.push(await users.create(newUser(name, { fullName, email, siteIds: [site.id] }), at(0)));
        }
        const names: string[] = [];
        let cursor: string | null = null;
        do {
          const page = await users.list({ limit: 2, cursor, q: tag, siteId: null, groupId: null });
          names.push(...page.items.map((u) => u.username));
          cursor = page.nextCursor;
        } while (cursor !== null);
        expect(names).to.have.length(5);
        expect(names.map((n) => n.toLowerCase())).to.deep.equal(names.map((n) => n.toLowerCase()).sort());
        const byName = await users.list({
          limit: 10,
          cursor: null,
          q: 'zed pers',
          siteId: null,
          groupId: null,
        });
        expect(byName.items.map((u) => u.username)).to.deep.equal([`${tag}-A`]);
        const byEmail = await users.list({
          limit: 10,
          cursor: null,
          q: `C@${tag}`,
          siteId: null,
          groupId: null,
        });
        expect(byEmail.items.map((u) => u.username)).to.deep.equal([`${tag}-c`]);
        const inSite = await users.list({ limit: 10, cursor: null, q: null, siteId: site.id, groupId: null });
        expect(inSite.items).to.have.length(5);
        const group = await groups.create(
          { name: uid('G'), userIds: [made[0]?.id ?? '', made[2]?.id ?? ''] },
          at(0),
        );
        const inGroup = await users.list({
          limit: 10,
          cursor: null,
          q: null,
          siteId: null,
          groupId: group.id,
        });
        expect(inGroup.items.map((u) => u.username)).to.deep.equal([`${tag}-b`, `${tag}-c`]);
        const both = await users.list({
          limit: 10,
          cursor: null,
          q: '-c',
          siteId: site.id,
          groupId: group.id,
        });
        expect(both.items.map((u) => u.username)).to.deep.equal([`${tag}-c`]);
        expect(
          (await users.list({ limit: 10, cursor: null, q: null, siteId: 'x', groupId: null })).items,
        ).to.deep.equal([]);
      });

      it('streams every user id and the ids of a site in batches, ascending', async function () {
        const site = await sites.create(uid('S'), at(0));
        const ids: string[] = [];
        for (let i = 0; i < 7; i++) {
          ids.push(
            (await users.create(newUser(uid('str'), { siteIds: i % 2 === 0 ? [site.id] : [] }), at(0))).id,
          );
        }
        const inSite = await batchesOf(users.listUserIdsInSite(site.id, 2));
        expect(inSite.map((b) => b.length)).to.deep.equal([2, 2]);
        expect(inSite.flat()).to.deep.equal(ids.filter((_, i) => i % 2 === 0));
        const all = await batchesOf(users.allUserIds(3));
        expect(all.slice(0, -1).every((b) => b.length === 3)).to.equal(true);
        const flat = all.flat();
        expect(flat).to.deep.equal(numeric(flat));
        expect(flat).to.include.members(ids);
        expect(await collectIds(users.allUserIds())).to.deep.equal(flat);
        expect(await collectIds(users.listUserIdsInSite('nope'))).to.deep.equal([]);
      });

      it('deleting a user unassigns its devices and leaves its sites and groups', async function () {
        const site = await sites.create(uid('S'), at(0));
        const user = await users.create(newUser(uid('gone'), { siteIds: [site.id] }), at(0));
        const group = await groups.create({ name: uid('G'), userIds: [user.id] }, at(0));
        const udid = await device();
        expect(await assignments.assign(udid, user.id, { onlyIfUnassigned: false }, at(1))).to.equal(
          'assigned',
        );
        expect(await users.delete(user.id, at(2))).to.equal(true);
        expect(await users.get(user.id)).to.equal(null);
        expect((await devices.getDevice(udid))?.userId).to.equal(null);
        expect((await groups.get(group.id))?.userCount).to.equal(0);
        expect(await collectIds(users.listUserIdsInSite(site.id))).to.deep.equal([]);
        expect(await sites.delete(site.id)).to.equal(true); // no longer in use
        expect(await users.delete(user.id, at(3))).to.equal(false);
      });

      it('concurrent creates of one username: exactly one wins, the others are told it is taken', async function () {
        const username = uid('race');
        const results = await Promise.allSettled(
          Array.from({ length: 6 }, (_, i) =>
            users.create(newUser(i % 2 ? username : username.toUpperCase()), at(0)),
          ),
        );
        expect(results.filter((r) => r.status === 'fulfilled')).to.have.length(1);
        for (const r of results) {
          if (r.status === 'rejected') expect((r.reason as NameTakenError).code).to.equal('username_taken');
        }
      });
    });

    describe('user groups', function () {
      it('creates a group with members; unknown userIds are named; names are unique', async function () {
        const [a, b] = [
          await users.create(newUser(uid('ga')), at(0)),
          await users.create(newUser(uid('gb')), at(0)),
        ];
        const name = uid('Group');
        const group = await groups.create({ name, userIds: [b.id, a.id, b.id] }, at(0));
        expect(group).to.include({ name, userCount: 2 });
        expect(await collectIds(groups.listMemberIds([group.id]))).to.deep.equal(numeric([a.id, b.id]));
        expect(await groups.get(group.id)).to.deep.equal(group);
        const err = await rejection(
          groups.create({ name: uid('G'), userIds: [a.id, '99999999', 'z'] }, at(0)),
        );
        expect((err as UnknownIdsError).details).to.deep.equal({ userIds: ['99999999', 'z'] });
        expect(
          ((await rejection(groups.create({ name, userIds: [] }, at(0)))) as NameTakenError).code,
        ).to.equal('user_group_name_taken');
        expect(await groups.missing([group.id, 'x'])).to.deep.equal(['x']);
      });

      it('replaces, adds and removes members', async function () {
        const u = [];
        for (let i = 0; i < 5; i++) u.push((await users.create(newUser(uid('m')), at(0))).id);
        const [u0, u1, u2, u3, u4] = u as [string, string, string, string, string];
        const group = await groups.create({ name: uid('G'), userIds: [u0, u1, u2] }, at(0));
        const members = () => collectIds(groups.listMemberIds([group.id]));
        expect((await groups.update(group.id, { userIds: [u2, u3] }, at(1)))?.userCount).to.equal(2);
        expect(await members()).to.deep.equal(numeric([u2, u3]));
        const changed = await groups.update(
          group.id,
          { addUserIds: [u4, u3], removeUserIds: [u2, u0] },
          at(2),
        );
        expect(changed?.userCount).to.equal(2);
        expect(changed?.updatedAt.getTime()).to.equal(at(2).getTime());
        expect(await members()).to.deep.equal(numeric([u3, u4]));
        const err = await rejection(
          groups.update(group.id, { addUserIds: ['99999998'], removeUserIds: ['99999999', u3] }, at(3)),
        );
        expect((err as UnknownIdsError).details).to.deep.equal({
          addUserIds: ['99999998'],
          removeUserIds: ['99999999'],
        });
        expect(await members()).to.deep.equal(numeric([u3, u4]));
        const renamed = await groups.update(group.id, { name: `${group.name}-r`, userIds: [] }, at(4));
        expect(renamed).to.include({ name: `${group.name}-r`, userCount: 0 });
        expect(await groups.update('99999999', { name: 'x' }, at(5))).to.equal(null);
      });

      it('lists by name with member counts; streams the distinct members of several groups', async function () {
        const prefix = uid('LG');
        const u = [];
        for (let i = 0; i < 5; i++) u.push((await users.create(newUser(uid('lm')), at(0))).id);
        const g1 = await groups.create({ name: `${prefix}-1`, userIds: u.slice(0, 3) }, at(0));
        const g2 = await groups.create({ name: `${prefix}-2`, userIds: u.slice(2) }, at(0));
        await groups.create({ name: `${prefix}-3`, userIds: [] }, at(0));
        const first = await groups.list({ limit: 2, cursor: null, q: prefix.toLowerCase() });
        expect(first.items.map((g) => [g.name, g.userCount])).to.deep.equal([
          [`${prefix}-1`, 3],
          [`${prefix}-2`, 3],
        ]);
        const second = await groups.list({ limit: 2, cursor: first.nextCursor, q: prefix });
        expect(second.items.map((g) => g.name)).to.deep.equal([`${prefix}-3`]);
        expect(second.nextCursor).to.equal(null);
        const batches = await batchesOf(groups.listMemberIds([g1.id, g2.id, 'x'], 2));
        expect(batches.map((b) => b.length)).to.deep.equal([2, 2, 1]);
        expect(batches.flat()).to.deep.equal(numeric(u));
        expect(await collectIds(groups.listMemberIds([]))).to.deep.equal([]);
      });

      it('deleting a group removes its membership only', async function () {
        const user = await users.create(newUser(uid('dg')), at(0));
        const group = await groups.create({ name: uid('G'), userIds: [user.id] }, at(0));
        expect(await groups.delete(group.id)).to.equal(true);
        expect(await groups.get(group.id)).to.equal(null);
        expect(await collectIds(groups.listMemberIds([group.id]))).to.deep.equal([]);
        expect(await users.get(user.id)).to.not.equal(null);
        expect(await groups.delete(group.id)).to.equal(false);
      });
    });

    let deviceCount = 0;
    async function device(): Promise<string> {
      deviceCount += 1;
      const udid = `DIR-${process.pid}-${deviceCount}`;
      await devices.authenticate(
        {
          udid,
          platform: 'macos',
          osVersion: '14.5',
          buildVersion: null,
          model: 'Mac14,2',
          productName: null,
          serialNumber: null,
          deviceName: null,
          userEnrollment: false,
          topic: 'com.apple.mgmt.test',
          certFingerprint: `fp-${udid}`.toLowerCase(),
        },
        at(0),
      );
      return udid;
    }

    describe('device assignment', function () {
      it('assigns, reassigns and unassigns; unknown device or user changes nothing', async function () {
        const [a, b] = [
          await users.create(newUser(uid('da')), at(0)),
          await users.create(newUser(uid('db')), at(0)),
        ];
        const udid = await device();
        const userOf = async () => (await devices.getDevice(udid))?.userId;
        expect(await assignments.assign(udid, a.id, { onlyIfUnassigned: false }, at(1))).to.equal('assigned');
        expect(await userOf()).to.equal(a.id);
        expect(await assignments.assign(udid, '99999999', { onlyIfUnassigned: false }, at(2))).to.equal(
          'user_not_found',
        );
        expect(await assignments.assign(udid, 'x', { onlyIfUnassigned: false }, at(2))).to.equal(
          'user_not_found',
        );
        expect(await assignments.assign('NO-SUCH-DEVICE', a.id, { onlyIfUnassigned: false }, at(2))).to.equal(
          'device_not_found',
        );
        expect(await userOf()).to.equal(a.id);
        expect(await assignments.assign(udid, b.id, { onlyIfUnassigned: true }, at(3))).to.equal('unchanged');
        expect(await userOf()).to.equal(a.id);
        expect(await assignments.assign(udid, b.id, { onlyIfUnassigned: false }, at(4))).to.equal('assigned');
        expect(await userOf()).to.equal(b.id);
        expect(await assignments.assign(udid, null, { onlyIfUnassigned: false }, at(5))).to.equal('assigned');
        expect(await userOf()).to.equal(null);
        expect(await assignments.assign(udid, a.id, { onlyIfUnassigned: true }, at(6))).to.equal('assigned');
        expect(await userOf()).to.equal(a.id);
      });
    });
  });
}
