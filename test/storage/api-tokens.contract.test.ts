import { expect } from 'chai';
import { UnknownIdsError } from '../../server/directory/errors.ts';
import { SqlApiTokenStore } from '../../server/storage/api-token-store.ts';
import { openDatabase, type Database } from '../../server/storage/database.ts';
import { SqlSiteStore, SqlUserStore } from '../../server/storage/directory-store.ts';
import { migrate } from '../../server/storage/migrate.ts';
import { SqlDeviceStore } from '../../server/storage/stores.ts';
import { testDatabases } from '../helpers/databases.ts';

const T0 = new Date(Date.UTC(2030, 0, 1, 12, 0, 0, 123));

for (const target of testDatabases()) {
  describe(`API tokens and site filters storage contract (${target.name})`, function () {
    this.timeout(120_000);
    let db: Database;
    let tokens: SqlApiTokenStore;
    let sites: SqlSiteStore;
    let users: SqlUserStore;
    let devices: SqlDeviceStore;

    before(async function () {
      db = await openDatabase(await target.url());
      await migrate(db);
      tokens = new SqlApiTokenStore(db);
      sites = new SqlSiteStore(db);
      users = new SqlUserStore(db);
      devices = new SqlDeviceStore(db);
    });
    after(async function () {
      await db?.close();
      await target.cleanup?.();
    });

    it('creates, finds by hash (milliseconds kept), lists with a cursor and q, deletes', async () => {
      const site = await sites.create('tokens site', T0);
      const expires = new Date(T0.getTime() + 86_400_123);
      const a = await tokens.create(
        { name: 'Alpha', siteId: site.id, expiresAt: expires, tokenHash: 'a'.repeat(64) },
        T0,
      );
      const b = await tokens.create(
        { name: 'beta', siteId: null, expiresAt: null, tokenHash: 'b'.repeat(64) },
        T0,
      );
      expect(a).to.deep.equal({
        id: a.id,
        name: 'Alpha',
        siteId: site.id,
        expiresAt: expires,
        createdAt: T0,
      });
      expect(await tokens.findByHash('a'.repeat(64))).to.deep.equal(a);
      expect(await tokens.findByHash('c'.repeat(64))).to.equal(null);
      expect(await tokens.get(b.id)).to.deep.equal(b);
      expect(await tokens.get('nope')).to.equal(null);

      const first = await tokens.list({ limit: 1, cursor: null, q: null });
      expect(first.items.map((t) => t.id)).to.deep.equal([a.id]);
      const second = await tokens.list({ limit: 1, cursor: first.nextCursor, q: null });
      expect(second.items.map((t) => t.id)).to.deep.equal([b.id]);
      expect(
        (await tokens.list({ limit: 10, cursor: null, q: 'ALPH' })).items.map((t) => t.id),
      ).to.deep.equal([a.id]);

      expect(await tokens.delete(b.id)).to.equal(true);
      expect(await tokens.delete(b.id)).to.equal(false);
      expect(await tokens.findByHash('b'.repeat(64))).to.equal(null);
    });

    it('a token hash is unique; an unknown site is UnknownIdsError; deleting the site deletes its tokens', async () => {
      const site = await sites.create('doomed site', T0);
      const t = await tokens.create(
        { name: 'x', siteId: site.id, expiresAt: null, tokenHash: 'd'.repeat(64) },
        T0,
      );
      let err: unknown = null;
      try {
        await tokens.create({ name: 'y', siteId: null, expiresAt: null, tokenHash: 'd'.repeat(64) }, T0);
      } catch (e) {
        err = e;
      }
      expect(err, 'duplicate hash').to.be.instanceOf(Error);
      for (const siteId of ['999999', 'abc']) {
        err = null;
        try {
          await tokens.create({ name: 'z', siteId, expiresAt: null, tokenHash: 'e'.repeat(64) }, T0);
        } catch (e) {
          err = e;
        }
        expect(err).to.be.instanceOf(UnknownIdsError);
      }
      expect(await sites.delete(site.id)).to.equal(true);
      expect(await tokens.get(t.id)).to.equal(null);
    });

    it('lists the devices of a site: those whose assigned user belongs to it', async () => {
      const s1 = await sites.create('devices site 1', T0);
      const s2 = await sites.create('devices site 2', T0);
      const u1 = await users.create(
        {
          username: 'dev.site.1',
          fullName: null,
          email: null,
          managedAppleId: null,
          passwordHash: null,
          siteIds: [s1.id],
        },
        T0,
      );
      const u2 = await users.create(
        {
          username: 'dev.site.2',
          fullName: null,
          email: null,
          managedAppleId: null,
          passwordHash: null,
          siteIds: [s2.id],
        },
        T0,
      );
      const qi = db.sequelize.getQueryInterface();
      const row = (udid: string, userId: string | null) => ({
        udid,
        platform: 'ios',
        user_enrollment: false,
        enrolled: true,
        user_id: userId,
        created_at: T0,
        updated_at: T0,
      });
      await db.write((t) =>
        qi.bulkInsert('devices', [row('SF-1', u1.id), row('SF-2', u2.id), row('SF-3', null)], {
          transaction: t,
        }),
      );
      const udids = async (siteId: string | null) =>
        (await devices.listDevices({ limit: 100, cursor: null, q: 'SF-', siteId })).items.map((d) => d.udid);
      expect(await udids(s1.id)).to.deep.equal(['SF-1']);
      expect(await udids(s2.id)).to.deep.equal(['SF-2']);
      expect(await udids(null)).to.deep.equal(['SF-1', 'SF-2', 'SF-3']);
      expect(await udids('not-a-site')).to.deep.equal([]);
    });
  });
}
