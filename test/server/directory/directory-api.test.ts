import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { expect } from 'chai';
import { UserService } from '../../../server/directory/user-service.ts';
import { openDatabase } from '../../../server/storage/database.ts';
import { SqlUserStore } from '../../../server/storage/directory-store.ts';
import { enrollIdentity, mdmPayload, sendSigned, type EnrolledIdentity } from '../../helpers/identity.ts';
import { startTestServer, type TestServer } from '../../helpers/test-server.ts';

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}
interface SiteJson {
  id: string;
  name: string;
  createdAt: string;
  updatedAt: string;
}
interface UserJson {
  id: string;
  username: string;
  fullName: string | null;
  email: string | null;
  managedAppleId: string | null;
  siteIds: string[];
  hasPassword: boolean;
  createdAt: string;
}
interface GroupJson {
  id: string;
  name: string;
  userIds?: string[];
  userCount: number;
  createdAt: string;
}
interface List<T> {
  items: T[];
  nextCursor?: string;
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** Waits for a condition, failing after a deadline (never a blind sleep). */
async function eventually<T>(probe: () => Promise<T | null>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('directory admin API (sites, users, user groups, device assignment)', function () {
  this.timeout(60_000);
  let ts: TestServer;
  let n = 0;
  const unique = (prefix: string) => `${prefix}-${++n}-${randomUUID().slice(0, 8)}`;

  before(async () => {
    ts = await startTestServer();
  });
  after(async () => {
    await ts?.stop();
  });

  async function created<T>(route: string, body: unknown): Promise<T> {
    const res = await ts.api('POST', route, body);
    expect(res.status, `${route} ${res.text}`).to.equal(201);
    return res.json<T>();
  }
  const site = (name = unique('Site')) => created<SiteJson>('/sites', { name });
  const user = (body: Record<string, unknown> = {}) =>
    created<UserJson>('/users', { username: unique('user'), ...body });
  const group = (userIds: string[] = [], name = unique('Group')) =>
    created<GroupJson>('/user-groups', { name, userIds });

  async function expectError(
    res: { status: number; json: <T>() => T; text: string },
    status: number,
    code: string,
  ): Promise<ErrorBody['error']> {
    expect(res.status, res.text).to.equal(status);
    const error = res.json<ErrorBody>().error;
    expect(error.code, res.text).to.equal(code);
    expect(error.message).to.be.a('string');
    return error;
  }

  /** Follows `nextCursor` through a list and returns every item. */
  async function all<T>(route: string, limit: number): Promise<{ items: T[]; pages: number }> {
    const items: T[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const sep = route.includes('?') ? '&' : '?';
      const res = await ts.api(
        'GET',
        `${route}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      );
      expect(res.status, res.text).to.equal(200);
      const page = res.json<List<T>>();
      expect(page.items.length).to.be.at.most(limit);
      items.push(...page.items);
      cursor = page.nextCursor;
      pages += 1;
    } while (cursor !== undefined && pages < 100);
    return { items, pages };
  }

  describe('401 without a valid bearer token', () => {
    const routes: [string, string, unknown?][] = [
      ['POST', '/sites', { name: 'x' }],
      ['GET', '/sites'],
      ['GET', '/sites/1'],
      ['PATCH', '/sites/1', { name: 'x' }],
      ['DELETE', '/sites/1'],
      ['POST', '/users', { username: 'x' }],
      ['GET', '/users'],
      ['GET', '/users/1'],
      ['PATCH', '/users/1', { fullName: 'x' }],
      ['PUT', '/users/1/password', { password: 'long enough' }],
      ['DELETE', '/users/1'],
      ['POST', '/user-groups', { name: 'x', userIds: [] }],
      ['GET', '/user-groups'],
      ['GET', '/user-groups/1'],
      ['GET', '/user-groups/1/users'],
      ['PATCH', '/user-groups/1', { name: 'x' }],
      ['DELETE', '/user-groups/1'],
    ];
    for (const [method, route, body] of routes) {
      it(`${method} ${route}`, async () => {
        for (const token of [null, 'wrong-token-wrong-token']) {
          await expectError(await ts.api(method, route, body, token), 401, 'unauthorized');
        }
      });
    }
  });

  describe('sites', () => {
    it('creates (201), reads, renames and deletes (204) a site', async () => {
      const name = unique('Paris');
      const s = await site(`  ${name}  `);
      expect(s).to.include({ name });
      expect(s.id).to.match(/^\d+$/);
      expect(s.createdAt).to.match(ISO);
      expect((await ts.api('GET', `/sites/${s.id}`)).json<SiteJson>()).to.deep.equal(s);
      const renamed = await ts.api('PATCH', `/sites/${s.id}`, { name: `${name}-2` });
      expect(renamed.status).to.equal(200);
      expect(renamed.json<SiteJson>()).to.include({ id: s.id, name: `${name}-2` });
      expect((await ts.api('PATCH', `/sites/${s.id}`, {})).json<SiteJson>().name).to.equal(`${name}-2`);
      const del = await ts.api('DELETE', `/sites/${s.id}`);
      expect(del.status).to.equal(204);
      expect(del.body.length).to.equal(0);
      await expectError(await ts.api('GET', `/sites/${s.id}`), 404, 'not_found');
    });

    it('400 per field', async () => {
      for (const body of [{}, { name: '' }, { name: '   ' }, { name: 7 }, { name: 'x'.repeat(256) }]) {
        const e = await expectError(await ts.api('POST', '/sites', body), 400, 'invalid_request');
        expect(e.details, JSON.stringify(body)).to.have.property('name');
      }
      const extra = await expectError(
        await ts.api('POST', '/sites', { name: 'x', color: 'red' }),
        400,
        'invalid_request',
      );
      expect(extra.details).to.be.an('object');
      const s = await site();
      const e = await expectError(
        await ts.api('PATCH', `/sites/${s.id}`, { name: '' }),
        400,
        'invalid_request',
      );
      expect(e.details).to.have.property('name');
      await expectError(await ts.api('POST', '/sites', '{nope'), 400, 'invalid_json');
    });

    it('404 for an unknown site', async () => {
      for (const id of ['999999999', 'abc']) {
        await expectError(await ts.api('GET', `/sites/${id}`), 404, 'not_found');
        await expectError(await ts.api('PATCH', `/sites/${id}`, { name: unique('x') }), 404, 'not_found');
        await expectError(await ts.api('DELETE', `/sites/${id}`), 404, 'not_found');
      }
    });

    it('409 site_name_taken on create and rename', async () => {
      const a = await site();
      const e = await expectError(await ts.api('POST', '/sites', { name: a.name }), 409, 'site_name_taken');
      expect(e.details).to.deep.equal({ name: a.name });
      const b = await site();
      await expectError(await ts.api('PATCH', `/sites/${b.id}`, { name: a.name }), 409, 'site_name_taken');
    });

    it('409 site_in_use while users belong to it', async () => {
      const s = await site();
      const u = await user({ siteIds: [s.id] });
      const e = await expectError(await ts.api('DELETE', `/sites/${s.id}`), 409, 'site_in_use');
      expect(e.details).to.deep.equal({ users: 1 });
      await ts.api('PATCH', `/users/${u.id}`, { siteIds: [] });
      expect((await ts.api('DELETE', `/sites/${s.id}`)).status).to.equal(204);
    });

    it('lists with cursors and q on the name', async () => {
      const tag = unique('list');
      for (let i = 0; i < 5; i++) await site(`${tag}-${i}`);
      const { items, pages } = await all<SiteJson>(`/sites?q=${tag.toUpperCase()}`, 2);
      expect(pages).to.equal(3);
      expect(items.map((s) => s.name)).to.deep.equal([0, 1, 2, 3, 4].map((i) => `${tag}-${i}`));
      const none = (await ts.api('GET', '/sites?q=zz-no-such-site')).json<List<SiteJson>>();
      expect(none).to.deep.equal({ items: [] });
      for (const query of ['limit=0', 'limit=1001', 'limit=x', 'cursor=bad']) {
        const res = await ts.api('GET', `/sites?${query}`);
        expect(res.status, query).to.equal(400);
      }
      const e = await expectError(await ts.api('GET', '/sites?cursor=bad'), 400, 'invalid_cursor');
      expect(e.details).to.have.property('cursor');
    });
  });

  describe('users', () => {
    it('creates a user (201) with every field; reads it back', async () => {
      const [s1, s2] = [await site(), await site()];
      const username = unique('alice');
      const res = await ts.api('POST', '/users', {
        username,
        fullName: 'Alice Liddell',
        email: 'alice@example.com',
        managedAppleId: 'alice@appleid.example.com',
        siteIds: [s2.id, s1.id],
      });
      expect(res.status).to.equal(201);
      const u = res.json<UserJson>();
      expect(u).to.deep.include({
        username,
        fullName: 'Alice Liddell',
        email: 'alice@example.com',
        managedAppleId: 'alice@appleid.example.com',
        siteIds: [s1.id, s2.id].sort((a, b) => Number(a) - Number(b)),
        hasPassword: false,
      });
      expect(u.id).to.match(/^\d+$/);
      expect(u.createdAt).to.match(ISO);
      expect((await ts.api('GET', `/users/${u.id}`)).json<UserJson>()).to.deep.equal(u);
      const minimal = await user();
      expect(minimal).to.include({ fullName: null, email: null, managedAppleId: null, hasPassword: false });
      expect(minimal.siteIds).to.deep.equal([]);
    });

    it('400 per field', async () => {
      const cases: [Record<string, unknown>, string][] = [
        [{}, 'username'],
        [{ username: '' }, 'username'],
        [{ username: 'a\u0007b' }, 'username'],
        [{ username: 'x', email: 'not-an-email' }, 'email'],
        [{ username: 'x', managedAppleId: 'nope' }, 'managedAppleId'],
        [{ username: 'x', fullName: 5 }, 'fullName'],
        [{ username: 'x', siteIds: 'x' }, 'siteIds'],
        [{ username: 'x', siteIds: [5] }, 'siteIds.0'],
        [{ username: 'x', password: 'short' }, 'password'],
        [{ username: 'x', password: 12345678 }, 'password'],
      ];
      for (const [body, field] of cases) {
        const e = await expectError(await ts.api('POST', '/users', body), 400, 'invalid_request');
        expect(e.details, JSON.stringify(body)).to.have.property(field);
      }
      const u = await user();
      for (const [body, field] of [
        [{ email: 'bad' }, 'email'],
        [{ username: '' }, 'username'],
        [{ password: 'short' }, 'password'],
      ] as const) {
        const e = await expectError(await ts.api('PATCH', `/users/${u.id}`, body), 400, 'invalid_request');
        expect(e.details).to.have.property(field);
      }
      for (const body of [{}, { password: 'short' }, { password: null }]) {
        const e = await expectError(
          await ts.api('PUT', `/users/${u.id}/password`, body),
          400,
          'invalid_request',
        );
        expect(e.details, JSON.stringify(body)).to.have.property('password');
      }
    });

    it('400 unknown_ids naming unknown siteIds; nothing is created', async () => {
      const s = await site();
      const username = unique('ghost');
      const e = await expectError(
        await ts.api('POST', '/users', { username, siteIds: [s.id, '999999', 'abc'] }),
        400,
        'unknown_ids',
      );
      expect(e.details).to.deep.equal({ siteIds: ['999999', 'abc'] });
      const list = (await ts.api('GET', `/users?q=${username}`)).json<List<UserJson>>();
      expect(list.items).to.deep.equal([]);
      const u = await user();
      const e2 = await expectError(
        await ts.api('PATCH', `/users/${u.id}`, { siteIds: ['999999'] }),
        400,
        'unknown_ids',
      );
      expect(e2.details).to.deep.equal({ siteIds: ['999999'] });
    });

    it('409 username_taken (regardless of case)', async () => {
      const u = await user();
      const e = await expectError(
        await ts.api('POST', '/users', { username: u.username.toUpperCase() }),
        409,
        'username_taken',
      );
      expect(e.details).to.have.property('username');
      const other = await user();
      await expectError(
        await ts.api('PATCH', `/users/${other.id}`, { username: u.username }),
        409,
        'username_taken',
      );
    });

    it('404 for an unknown user', async () => {
      for (const id of ['999999999', 'abc']) {
        await expectError(await ts.api('GET', `/users/${id}`), 404, 'not_found');
        await expectError(await ts.api('PATCH', `/users/${id}`, { fullName: 'x' }), 404, 'not_found');
        await expectError(
          await ts.api('PUT', `/users/${id}/password`, { password: 'long enough' }),
          404,
          'not_found',
        );
        await expectError(await ts.api('DELETE', `/users/${id}`), 404, 'not_found');
      }
    });

    it('PATCH changes every field; siteIds replaces the set; null clears', async () => {
      const [s1, s2, s3] = [await site(), await site(), await site()];
      const u = await user({
        fullName: 'Bob',
        email: 'bob@example.com',
        managedAppleId: 'bob@appleid.example.com',
        siteIds: [s1.id, s2.id],
      });
      const username = unique('robert');
      const res = await ts.api('PATCH', `/users/${u.id}`, {
        username,
        fullName: 'Robert',
        email: 'robert@example.com',
        managedAppleId: null,
        siteIds: [s3.id],
      });
      expect(res.status).to.equal(200);
      expect(res.json<UserJson>()).to.deep.include({
        id: u.id,
        username,
        fullName: 'Robert',
        email: 'robert@example.com',
        managedAppleId: null,
        siteIds: [s3.id],
      });
      const cleared = (
        await ts.api('PATCH', `/users/${u.id}`, { fullName: null, email: null, siteIds: [] })
      ).json<UserJson>();
      expect(cleared).to.deep.include({ fullName: null, email: null, siteIds: [], username });
    });

    it('never returns a password; hasPassword tells; scrypt hash verifies (PUT /password: 204)', async () => {
      const secret = 'correct horse battery';
      const res = await ts.api('POST', '/users', { username: unique('carol'), password: secret });
      expect(res.status).to.equal(201);
      const u = res.json<UserJson>();
      expect(u.hasPassword).to.equal(true);
      const check = (text: string) => {
        expect(text).to.not.include(secret);
        expect(text).to.not.include('scrypt');
        expect(text).to.not.match(/"password(Hash)?"/);
      };
      check(res.text);
      check((await ts.api('GET', `/users/${u.id}`)).text);
      check((await ts.api('GET', `/users?q=${u.username}`)).text);

      // The registration page's check, against the server's own database.
      const db = await openDatabase(`sqlite:${path.join(ts.dataDir, 'mdm.sqlite')}`);
      try {
        const service = new UserService({ users: new SqlUserStore(db) });
        expect(await service.verifyLocalPassword(u.id, secret)).to.equal(true);
        expect(await service.verifyLocalPassword(u.id, 'wrong horse battery')).to.equal(false);

        const put = await ts.api('PUT', `/users/${u.id}/password`, { password: 'another passphrase' });
        expect(put.status).to.equal(204);
        expect(put.body.length).to.equal(0);
        expect(await service.verifyLocalPassword(u.id, secret)).to.equal(false);
        expect(await service.verifyLocalPassword(u.id, 'another passphrase')).to.equal(true);

        const patched = await ts.api('PATCH', `/users/${u.id}`, { password: 'third passphrase' });
        check(patched.text);
        expect(await service.verifyLocalPassword(u.id, 'third passphrase')).to.equal(true);
        const removed = (await ts.api('PATCH', `/users/${u.id}`, { password: null })).json<UserJson>();
        expect(removed.hasPassword).to.equal(false);
        expect(await service.verifyLocalPassword(u.id, 'third passphrase')).to.equal(false);

        const plain = await user();
        expect(await service.verifyLocalPassword(plain.id, 'anything at all')).to.equal(false);
        expect(await service.verifyLocalPassword('999999999', 'anything at all')).to.equal(false);
      } finally {
        await db.close();
      }
    });

    it('lists with cursors; q matches username, full name and email; ?siteId= filters', async () => {
      const tag = unique('dir').toLowerCase();
      const s = await site();
      const made = [
        await user({ username: `${tag}-c`, siteIds: [s.id] }),
        await user({ username: `${tag}-A` }),
        await user({ username: `${tag}-b`, siteIds: [s.id] }),
        await user({ username: unique('zed'), fullName: `Zed ${tag}` }),
        await user({ username: unique('yan'), email: `yan@${tag}.example.com`, siteIds: [s.id] }),
      ];
      const { items, pages } = await all<UserJson>(`/users?q=${tag}`, 2);
      expect(pages).to.equal(3);
      expect(items.map((u) => u.id).sort()).to.deep.equal(made.map((u) => u.id).sort());
      expect(items.slice(0, 3).map((u) => u.username)).to.deep.equal([`${tag}-A`, `${tag}-b`, `${tag}-c`]);
      const byFullName = (await ts.api('GET', `/users?q=ZED%20${tag}`)).json<List<UserJson>>();
      expect(byFullName.items.map((u) => u.id)).to.deep.equal([made[3]?.id]);
      const byEmail = (await ts.api('GET', `/users?q=yan@${tag}`)).json<List<UserJson>>();
      expect(byEmail.items.map((u) => u.id)).to.deep.equal([made[4]?.id]);
      const inSite = await all<UserJson>(`/users?siteId=${s.id}`, 1);
      expect(inSite.items.map((u) => u.username).sort()).to.deep.equal(
        [made[0], made[2], made[4]].map((u) => u?.username).sort(),
      );
      const both = (await ts.api('GET', `/users?siteId=${s.id}&q=${tag}-b`)).json<List<UserJson>>();
      expect(both.items.map((u) => u.id)).to.deep.equal([made[2]?.id]);
      const e = await expectError(await ts.api('GET', '/users?siteId=999999'), 400, 'unknown_ids');
      expect(e.details).to.deep.equal({ siteId: ['999999'] });
      await expectError(await ts.api('GET', '/users?limit=0'), 400, 'invalid_request');
    });

    it('DELETE (204) removes the user from its groups and unassigns its devices', async () => {
      const u = await user();
      const g = await group([u.id]);
      expect((await ts.api('DELETE', `/users/${u.id}`)).status).to.equal(204);
      await expectError(await ts.api('GET', `/users/${u.id}`), 404, 'not_found');
      const after = (await ts.api('GET', `/user-groups/${g.id}`)).json<GroupJson>();
      expect(after).to.include({ userCount: 0 });
      expect(after.userIds).to.deep.equal([]);
    });
  });

  describe('user groups', () => {
    it('creates a group (201) with static members; reads it with userIds and userCount', async () => {
      const [a, b] = [await user(), await user()];
      const name = unique('Staff');
      const res = await ts.api('POST', '/user-groups', { name, userIds: [b.id, a.id, b.id] });
      expect(res.status).to.equal(201);
      const g = res.json<GroupJson>();
      expect(g).to.include({ name, userCount: 2 });
      expect(g.userIds).to.deep.equal([a.id, b.id].sort((x, y) => Number(x) - Number(y)));
      expect(g.createdAt).to.match(ISO);
      expect((await ts.api('GET', `/user-groups/${g.id}`)).json<GroupJson>()).to.deep.equal(g);
      const empty = await created<GroupJson>('/user-groups', { name: unique('Empty') });
      expect(empty).to.include({ userCount: 0 });
    });

    it('400 per field, and unknown userIds named', async () => {
      for (const [body, field] of [
        [{ userIds: [] }, 'name'],
        [{ name: '', userIds: [] }, 'name'],
        [{ name: 'x', userIds: 'all' }, 'userIds'],
        [{ name: 'x', userIds: [1] }, 'userIds.0'],
      ] as const) {
        const e = await expectError(await ts.api('POST', '/user-groups', body), 400, 'invalid_request');
        expect(e.details, JSON.stringify(body)).to.have.property(field);
      }
      const u = await user();
      const e = await expectError(
        await ts.api('POST', '/user-groups', { name: unique('G'), userIds: [u.id, '999999', 'nobody'] }),
        400,
        'unknown_ids',
      );
      expect(e.details).to.deep.equal({ userIds: ['999999', 'nobody'] });
      const g = await group([u.id]);
      for (const [body, field] of [
        [{ name: '' }, 'name'],
        [{ userIds: [u.id], addUserIds: [u.id] }, 'userIds'],
        [{ addUserIds: [u.id], removeUserIds: [u.id] }, 'addUserIds'],
      ] as const) {
        const e2 = await expectError(
          await ts.api('PATCH', `/user-groups/${g.id}`, body),
          400,
          'invalid_request',
        );
        expect(e2.details, JSON.stringify(body)).to.have.property(field);
      }
      const e3 = await expectError(
        await ts.api('PATCH', `/user-groups/${g.id}`, { addUserIds: ['999998'], removeUserIds: ['999999'] }),
        400,
        'unknown_ids',
      );
      expect(e3.details).to.deep.equal({ addUserIds: ['999998'], removeUserIds: ['999999'] });
    });

    it('409 user_group_name_taken', async () => {
      const g = await group();
      await expectError(
        await ts.api('POST', '/user-groups', { name: g.name, userIds: [] }),
        409,
        'user_group_name_taken',
      );
      const other = await group();
      await expectError(
        await ts.api('PATCH', `/user-groups/${other.id}`, { name: g.name }),
        409,
        'user_group_name_taken',
      );
    });

    it('404 for an unknown group', async () => {
      for (const id of ['999999999', 'abc']) {
        await expectError(await ts.api('GET', `/user-groups/${id}`), 404, 'not_found');
        await expectError(await ts.api('GET', `/user-groups/${id}/users`), 404, 'not_found');
        await expectError(
          await ts.api('PATCH', `/user-groups/${id}`, { name: unique('x') }),
          404,
          'not_found',
        );
        await expectError(await ts.api('DELETE', `/user-groups/${id}`), 404, 'not_found');
      }
    });

    it('PATCH userIds replaces the membership; addUserIds/removeUserIds change it', async () => {
      const u: string[] = [];
      for (let i = 0; i < 4; i++) u.push((await user()).id);
      const [u0, u1, u2, u3] = u as [string, string, string, string];
      const g = await group([u0, u1]);
      const replaced = (
        await ts.api('PATCH', `/user-groups/${g.id}`, { userIds: [u2, u1] })
      ).json<GroupJson>();
      expect(replaced.userIds).to.deep.equal([u1, u2]);
      expect(replaced.userCount).to.equal(2);
      const changed = (
        await ts.api('PATCH', `/user-groups/${g.id}`, { addUserIds: [u3, u2], removeUserIds: [u1] })
      ).json<GroupJson>();
      expect(changed.userIds).to.deep.equal([u2, u3]);
      const renamed = (
        await ts.api('PATCH', `/user-groups/${g.id}`, { name: `${g.name}-2`, userIds: [] })
      ).json<GroupJson>();
      expect(renamed).to.include({ name: `${g.name}-2`, userCount: 0 });
    });

    it('lists groups (userCount, no userIds) with cursors and q; members paged', async () => {
      const tag = unique('grp');
      const members: string[] = [];
      for (let i = 0; i < 5; i++) members.push((await user({ username: `${tag}-member-${i}` })).id);
      for (let i = 0; i < 3; i++) await group(i === 0 ? members : [], `${tag}-${i}`);
      const { items, pages } = await all<GroupJson>(`/user-groups?q=${tag.toUpperCase()}`, 2);
      expect(pages).to.equal(2);
      expect(items.map((g) => [g.name, g.userCount])).to.deep.equal([
        [`${tag}-0`, 5],
        [`${tag}-1`, 0],
        [`${tag}-2`, 0],
      ]);
      expect(items[0]).to.not.have.property('userIds');
      const id = items[0]?.id ?? '';
      const paged = await all<UserJson>(`/user-groups/${id}/users`, 2);
      expect(paged.pages).to.equal(3);
      expect(paged.items.map((u) => u.username)).to.deep.equal(
        [0, 1, 2, 3, 4].map((i) => `${tag}-member-${i}`),
      );
      const filtered = (await ts.api('GET', `/user-groups/${id}/users?q=member-3`)).json<List<UserJson>>();
      expect(filtered.items.map((u) => u.id)).to.deep.equal([members[3]]);
      const viaUsers = await all<UserJson>(`/users?groupId=${id}`, 10);
      expect(viaUsers.items).to.have.length(5);
    });

    it('DELETE (204) removes the group, not its users', async () => {
      const u = await user();
      const g = await group([u.id]);
      expect((await ts.api('DELETE', `/user-groups/${g.id}`)).status).to.equal(204);
      await expectError(await ts.api('GET', `/user-groups/${g.id}`), 404, 'not_found');
      expect((await ts.api('GET', `/users/${u.id}`)).status).to.equal(200);
    });
  });

  describe('device assignment', () => {
    /** Each Mac needs its own identity: a certificate binds to one device. */
    const identities = new Map<string, EnrolledIdentity>();

    async function enrollMac(): Promise<string> {
      const identity = await enrollIdentity(ts);
      const topic = mdmPayload(identity.profile).Topic as string;
      const udid = randomUUID().toUpperCase();
      identities.set(udid, identity);
      const auth = {
        MessageType: 'Authenticate',
        UDID: udid,
        Topic: topic,
        OSVersion: '14.5',
        ProductName: 'Mac14,2',
        Model: 'Mac14,2',
        SerialNumber: `C02${udid.slice(0, 9)}`,
      };
      expect((await sendSigned(ts, '/mdm/checkin', identity, auth)).status).to.equal(200);
      const tu = {
        MessageType: 'TokenUpdate',
        UDID: udid,
        Topic: topic,
        Token: new Uint8Array(32).fill(2),
        PushMagic: 'm',
      };
      expect((await sendSigned(ts, '/mdm/checkin', identity, tu)).status).to.equal(200);
      return udid;
    }

    function userChannel(udid: string, shortName: string) {
      const identity = identities.get(udid);
      if (!identity) throw new Error(`no identity for ${udid}`);
      return sendSigned(ts, '/mdm/checkin', identity, {
        MessageType: 'TokenUpdate',
        UDID: udid,
        Topic: mdmPayload(identity.profile).Topic as string,
        UserID: randomUUID().toUpperCase(),
        UserShortName: shortName,
        UserLongName: 'Someone',
        Token: new Uint8Array(32).fill(3),
        PushMagic: 'user-magic',
      });
    }

    const userIdOf = async (udid: string) =>
      (await ts.api('GET', `/devices/${udid}`)).json<{ userId: string | null }>().userId;

    it('PUT /devices/{udid}/user assigns a known user, null unassigns; unknown user: 400 naming it', async () => {
      const udid = await enrollMac();
      const u = await user();
      const res = await ts.api('PUT', `/devices/${udid}/user`, { userId: u.id });
      expect(res.status).to.equal(200);
      expect(res.json<{ userId: string }>().userId).to.equal(u.id);
      const e = await expectError(
        await ts.api('PUT', `/devices/${udid}/user`, { userId: '999999' }),
        400,
        'unknown_ids',
      );
      expect(e.details).to.deep.equal({ userId: ['999999'] });
      expect(await userIdOf(udid)).to.equal(u.id);
      const bad = await expectError(
        await ts.api('PUT', `/devices/${udid}/user`, { userId: 5 }),
        400,
        'invalid_request',
      );
      expect(bad.details).to.have.property('userId');
      await expectError(await ts.api('PUT', `/devices/${udid}/user`, {}), 400, 'invalid_request');
      await expectError(
        await ts.api('PUT', '/devices/NO-SUCH-DEVICE/user', { userId: u.id }),
        404,
        'not_found',
      );
      const cleared = await ts.api('PUT', `/devices/${udid}/user`, { userId: null });
      expect(cleared.json<{ userId: string | null }>().userId).to.equal(null);
    });

    it('deleting the assigned user unassigns the device', async () => {
      const udid = await enrollMac();
      const u = await user();
      await ts.api('PUT', `/devices/${udid}/user`, { userId: u.id });
      expect((await ts.api('DELETE', `/users/${u.id}`)).status).to.equal(204);
      expect(await userIdOf(udid)).to.equal(null);
    });

    it('a macOS user channel whose UserShortName is a known username assigns the device', async () => {
      const u = await user({ username: unique('Dana') });
      const udid = await enrollMac();
      expect(await userIdOf(udid)).to.equal(null);
      // Short names are matched regardless of case.
      expect((await userChannel(udid, u.username.toLowerCase())).status).to.equal(200);
      const assigned = await eventually(
        async () => await userIdOf(udid),
        'the device to be assigned by its user short name',
      );
      expect(assigned).to.equal(u.id);
    });
  });
});
