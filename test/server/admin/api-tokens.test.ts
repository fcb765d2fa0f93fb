import { expect } from 'chai';
import { hashApiToken } from '../../../server/admin/api-tokens.ts';
import { SqlApiTokenStore } from '../../../server/storage/api-token-store.ts';
import type { HttpAnswer } from '../../helpers/test-server.ts';
import { errorCode, vppFixture, type ErrorBody, type VppFixture } from '../vpp/helpers.ts';

interface TokenJson {
  id: string;
  name: string;
  siteId: string | null;
  expiresAt: string | null;
  createdAt: string;
  token?: string;
}

const idsOf = (res: HttpAnswer) => res.json<{ items: { id: string }[] }>().items.map((i) => i.id);

describe('API tokens (/api/v1/api-tokens) and site-limited tokens', function () {
  this.timeout(120_000);
  let f: VppFixture;
  let siteA: string;
  let siteB: string;
  /** a token limited to site A */
  let tokenA: string;
  let memberA: string;
  let memberB: string;
  let locationA: string;
  let locationB: string;
  let n = 0;

  const api = (method: string, route: string, body?: unknown, token?: string | null) =>
    f.ts.api(method, route, body, token);
  const asA = (method: string, route: string, body?: unknown) => api(method, route, body, tokenA);
  const make = async (body: Record<string, unknown>): Promise<TokenJson> => {
    const res = await api('POST', '/api-tokens', body);
    expect(res.status, res.text).to.equal(201);
    return res.json<TokenJson>();
  };
  const site = async (name: string) => {
    const res = await api('POST', '/sites', { name });
    expect(res.status).to.equal(201);
    return res.json<{ id: string }>().id;
  };
  const expectOutside = (res: HttpAnswer) => {
    expect(res.status, res.text).to.equal(403);
    expect(errorCode(res)).to.equal('outside_site');
  };
  const expectNotAllowed = (res: HttpAnswer) => {
    expect(res.status, res.text).to.equal(403);
    expect(errorCode(res)).to.equal('site_token_not_allowed');
  };

  before(async () => {
    f = await vppFixture({ service: { eventDelayMs: 10 } });
    siteA = await site('Site A');
    siteB = await site('Site B');
    tokenA = (await make({ name: 'site A scripts', siteId: siteA })).token ?? '';
    memberA = await f.addUser(`tok.a.${++n}`, { siteIds: [siteA] });
    memberB = await f.addUser(`tok.b.${++n}`, { siteIds: [siteB] });
    locationA = (await f.addLocation({ siteId: siteA })).id;
    locationB = (await f.addLocation({ siteId: siteB })).id;
  });
  after(async () => {
    await f?.cleanup();
  });

  describe('managing tokens', () => {
    it('needs a bearer token: 401 without one or with a wrong one', async () => {
      for (const [method, route] of [
        ['POST', '/api-tokens'],
        ['GET', '/api-tokens'],
        ['GET', '/api-tokens/1'],
        ['DELETE', '/api-tokens/1'],
      ] as const) {
        for (const token of [null, 'mdmat_not-a-token']) {
          const res = await api(method, route, method === 'POST' ? {} : undefined, token);
          expect(res.status, `${method} ${route}`).to.equal(401);
          expect(errorCode(res)).to.equal('unauthorized');
        }
      }
    });

    it('makes a token (201, secret shown once), lists and reads it without the secret, revokes it', async () => {
      const made = await make({ name: 'nightly export' });
      expect(made.token).to.match(/^mdmat_[A-Za-z0-9_-]{43}$/);
      // Only a site, or nothing at all: a name is not required.
      const bare = await make({ siteId: siteA });
      expect(bare).to.include({ name: 'API token', siteId: siteA });
      expect((await make({})).name).to.equal('API token');
      expect(made).to.include({ name: 'nightly export', siteId: null, expiresAt: null });
      // An unrestricted API token can do what the admin token does, except manage tokens.
      const sites = await api('GET', '/sites?limit=1000', undefined, made.token);
      expect(sites.status).to.equal(200);
      expect(idsOf(sites)).to.include.members([siteA, siteB]);
      for (const [method, route, body] of [
        ['POST', '/api-tokens', { name: 'forever' }],
        ['GET', '/api-tokens', undefined],
        ['DELETE', `/API-TOKENS/${made.id}/`, undefined],
      ] as const) {
        const refused = await api(method, route, body, made.token);
        expect(refused.status, `${method} ${route}`).to.equal(403);
        expect(errorCode(refused)).to.equal('admin_token_required');
      }

      const one = await api('GET', `/api-tokens/${made.id}`);
      expect(one.status).to.equal(200);
      expect(one.json<TokenJson>()).to.deep.equal({
        id: made.id,
        name: made.name,
        siteId: null,
        expiresAt: null,
        createdAt: made.createdAt,
      });
      const list = await api('GET', '/api-tokens?q=NIGHTLY');
      expect(list.status).to.equal(200);
      expect(list.text).not.to.include(made.token);
      expect(idsOf(list)).to.deep.equal([made.id]);

      expect((await api('DELETE', `/api-tokens/${made.id}`)).status).to.equal(204);
      const after = await api('GET', '/sites', undefined, made.token);
      expect(after.status).to.equal(401);
      expect((await api('GET', `/api-tokens/${made.id}`)).status).to.equal(404);
      expect((await api('DELETE', `/api-tokens/${made.id}`)).status).to.equal(404);
    });

    it('pages the list with a cursor', async () => {
      const made = [await make({ name: 'page-x 1' }), await make({ name: 'page-x 2' })];
      const first = await api('GET', '/api-tokens?q=page-x&limit=1');
      const body = first.json<{ items: TokenJson[]; nextCursor?: string }>();
      expect(body.items.map((t) => t.id)).to.deep.equal([made[0]?.id]);
      expect(body.nextCursor).to.be.a('string');
      const second = await api('GET', `/api-tokens?q=page-x&limit=1&cursor=${body.nextCursor ?? ''}`);
      expect(idsOf(second)).to.deep.equal([made[1]?.id]);
      expect((await api('GET', '/api-tokens?cursor=bogus')).status).to.equal(400);
    });

    it('400 on a bad body, naming the fields; an unknown site is 400 unknown_ids', async () => {
      const cases: [unknown, string][] = [
        [{ name: '' }, 'name'],
        [{ name: 7 }, 'name'],
        [{ name: 'x', extra: 1 }, 'body'],
        [{ name: 'x', expiresAt: 'tomorrow' }, 'expiresAt'],
        [{ name: 'x', expiresAt: '2001-01-01T00:00:00Z' }, 'expiresAt'],
        [{ name: 'x', siteId: 7 }, 'siteId'],
      ];
      for (const [body, field] of cases) {
        const res = await api('POST', '/api-tokens', body);
        expect(res.status, JSON.stringify(body)).to.equal(400);
        expect(Object.keys(res.json<ErrorBody>().error.details ?? {}), JSON.stringify(body)).to.include(
          field,
        );
      }
      const before = (await api('GET', '/api-tokens?limit=1000')).json<{ items: unknown[] }>().items.length;
      const unknown = await api('POST', '/api-tokens', { name: 'x', siteId: '999999' });
      expect(unknown.status).to.equal(400);
      expect(errorCode(unknown)).to.equal('unknown_ids');
      expect(unknown.json<ErrorBody>().error.details).to.deep.equal({ siteId: ['999999'] });
      // Nothing was made by any of them.
      const after = (await api('GET', '/api-tokens?limit=1000')).json<{ items: unknown[] }>().items.length;
      expect(after).to.equal(before);
    });

    it('an expired token is 401', async () => {
      const secret = 'mdmat_expired-token-for-the-test';
      const store = new SqlApiTokenStore(f.ts.server.db);
      const past = new Date(Date.now() - 1000);
      await store.create(
        { name: 'old', siteId: null, expiresAt: past, tokenHash: hashApiToken(secret) },
        past,
      );
      expect((await api('GET', '/sites', undefined, secret)).status).to.equal(401);
      const future = await make({ name: 'later', expiresAt: new Date(Date.now() + 3_600_000).toISOString() });
      expect((await api('GET', '/sites', undefined, future.token)).status).to.equal(200);
    });

    it('deleting a site revokes its tokens', async () => {
      const temp = await site(`Temporary ${++n}`);
      const t = await make({ name: 'temp', siteId: temp });
      expect((await api('GET', '/sites', undefined, t.token)).status).to.equal(200);
      expect((await api('DELETE', `/sites/${temp}`)).status).to.equal(204);
      expect((await api('GET', '/sites', undefined, t.token)).status).to.equal(401);
      expect((await api('GET', `/api-tokens/${t.id}`)).status).to.equal(404);
    });
  });

  describe('a token limited to a site', () => {
    it('cannot manage tokens or shared things (403 site_token_not_allowed)', async () => {
      expectNotAllowed(await asA('GET', '/api-tokens'));
      expectNotAllowed(await asA('POST', '/api-tokens', { name: 'escalate' }));
      expectNotAllowed(await asA('DELETE', '/api-tokens/1'));
      expectNotAllowed(await asA('PUT', '/push-certificate', { certificatePem: 'x', privateKeyPem: 'y' }));
      expectNotAllowed(await asA('POST', '/sites', { name: 'Mine' }));
      expectNotAllowed(await asA('DELETE', `/sites/${siteA}`));
      expectNotAllowed(await asA('POST', '/user-groups', { name: 'g', userIds: [] }));
      // Reading the push certificate is fine.
      expect((await asA('GET', '/push-certificate')).status).to.equal(200);
    });

    it('sees its own site only', async () => {
      const list = await asA('GET', '/sites');
      expect(list.status).to.equal(200);
      expect(idsOf(list)).to.deep.equal([siteA]);
      expect(idsOf(await asA('GET', '/sites?q=site%20a'))).to.deep.equal([siteA]);
      expect(idsOf(await asA('GET', '/sites?q=nothing-like-it'))).to.deep.equal([]);
      expect((await asA('GET', '/sites?limit=5000')).status).to.equal(400);
      expect((await asA('GET', `/sites/${siteA}`)).status).to.equal(200);
      expectOutside(await asA('GET', `/sites/${siteB}`));
      expectOutside(await asA('PATCH', `/sites/${siteB}`, { name: 'taken over' }));
      expect((await asA('GET', '/sites/999999')).status).to.equal(404);
    });

    it('users: lists, reads and changes those of its site; creates them in its site', async () => {
      const list = await asA('GET', '/users?limit=1000');
      expect(list.status).to.equal(200);
      expect(idsOf(list)).to.include(memberA).and.not.to.include(memberB);
      expectOutside(await asA('GET', `/users?siteId=${siteB}`));
      expect((await asA('GET', `/users/${memberA}`)).status).to.equal(200);
      expectOutside(await asA('GET', `/users/${memberB}`));
      expectOutside(await asA('PATCH', `/users/${memberB}`, { fullName: 'x' }));
      expectOutside(await asA('DELETE', `/users/${memberB}`));
      expectOutside(await asA('PUT', `/users/${memberB}/password`, { password: 'correct horse battery' }));
      expectOutside(await asA('GET', `/users/${memberB}/registrations`));
      expectOutside(await asA('PATCH', `/users/${memberA}`, { siteIds: [siteB] }));
      // nor reach into another site through a user: adding it there, or a user shared with it
      expectOutside(await asA('PATCH', `/users/${memberA}`, { siteIds: [siteA, siteB] }));
      const shared = await f.addUser(`tok.shared.${++n}`, { siteIds: [siteA, siteB] });
      expect((await asA('GET', `/users/${shared}`)).status).to.equal(200);
      expectOutside(await asA('PATCH', `/users/${shared}`, { siteIds: [siteA] }));
      expectOutside(await asA('PATCH', `/users/${shared}`, { fullName: 'renamed for both sites' }));
      expectOutside(await asA('PUT', `/users/${shared}/password`, { password: 'correct horse battery' }));
      expectOutside(await asA('DELETE', `/users/${shared}`));
      expect((await api('GET', `/users/${shared}`)).json<{ siteIds: string[] }>().siteIds).to.have.members([
        siteA,
        siteB,
      ]);
      // its registrations: those at this site's locations only
      for (const loc of [locationA, locationB]) {
        expect((await api('POST', `/users/${shared}/registrations/${loc}`, {})).status).to.equal(201);
      }
      const regs = await asA('GET', `/users/${shared}/registrations`);
      expect(regs.json<{ items: { locationId: string }[] }>().items.map((r) => r.locationId)).to.deep.equal([
        locationA,
      ]);
      expect((await asA('PATCH', `/users/${memberA}`, { fullName: 'Member A' })).status).to.equal(200);
      expect((await asA('GET', '/users/999999')).status).to.equal(404);

      const created = await asA('POST', '/users', { username: `tok.new.${++n}` });
      expect(created.status).to.equal(201);
      expect(created.json<{ siteIds: string[] }>().siteIds).to.deep.equal([siteA]);
      expectOutside(await asA('POST', '/users', { username: `tok.out.${++n}`, siteIds: [siteB] }));
      expectOutside(await asA('POST', '/users', { username: `tok.both.${++n}`, siteIds: [siteA, siteB] }));
      // Bad input is still a 400 for it.
      expect((await asA('POST', '/users', { username: '' })).status).to.equal(400);
    });

    it('locations: its own only; new ones go to its site', async () => {
      expect(idsOf(await asA('GET', '/locations'))).to.deep.equal([locationA]);
      expect((await asA('GET', `/locations/${locationA}`)).status).to.equal(200);
      expectOutside(await asA('GET', `/locations/${locationB}`));
      expectOutside(await asA('DELETE', `/locations/${locationB}`));
      expectOutside(await asA('POST', `/locations/${locationB}/sync`));
      expectOutside(await asA('PATCH', `/locations/${locationA}`, { siteId: siteB }));
      expectOutside(await asA('POST', `/users/${memberA}/registrations/${locationB}`, {}));

      const sToken = f.service.mintServiceToken({ orgName: 'Org A2', locationName: 'A2' });
      const created = await asA('POST', '/locations', { name: 'A2', serviceToken: sToken });
      expect(created.status, created.text).to.equal(201);
      expect(created.json<{ siteId: string }>().siteId).to.equal(siteA);
      const other = f.service.mintServiceToken({ orgName: 'Org B2', locationName: 'B2' });
      expectOutside(await asA('POST', '/locations', { name: 'B2', serviceToken: other, siteId: siteB }));
    });

    it('invitations: of its locations only', async () => {
      const body = (locationId: string) => ({
        name: `site inv ${++n}`,
        locationId,
        distributionMethod: 'self_service_only',
        scope: { allUsers: true },
      });
      const b = await api('POST', '/vpp-invitations', body(locationB));
      expect(b.status, b.text).to.equal(201);
      const invB = b.json<{ id: string }>().id;
      expectOutside(await asA('POST', '/vpp-invitations', body(locationB)));
      const a = await asA('POST', '/vpp-invitations', body(locationA));
      expect(a.status, a.text).to.equal(201);
      const invA = a.json<{ id: string }>().id;

      expect(idsOf(await asA('GET', '/vpp-invitations'))).to.deep.equal([invA]);
      expect((await asA('GET', `/vpp-invitations/${invA}/usage`)).status).to.equal(200);
      expectOutside(await asA('GET', `/vpp-invitations/${invB}`));
      expectOutside(await asA('GET', `/vpp-invitations/${invB}/usage?format=csv`));
      expectOutside(await asA('POST', `/vpp-invitations/${invB}/resend`, {}));
      expectOutside(await asA('DELETE', `/vpp-invitations/${invB}`));
      // The location moves to site B: its invitation leaves site A at once (not when the fan-out catches up).
      expect((await api('PATCH', `/locations/${locationA}`, { siteId: siteB })).status).to.equal(200);
      expectOutside(await asA('GET', `/vpp-invitations/${invA}`));
      expect((await api('PATCH', `/locations/${locationA}`, { siteId: siteA })).status).to.equal(200);
      expect((await asA('GET', `/vpp-invitations/${invA}`)).status).to.equal(200);
      // An unknown location is the same 409 as for anyone.
      const unknown = await asA('POST', '/vpp-invitations', body('999999'));
      expect(unknown.status).to.equal(409);
      expect(errorCode(unknown)).to.equal('location_not_found');
    });

    it('user groups: reads them with the members of its site only', async () => {
      const g = await api('POST', '/user-groups', { name: `mixed ${++n}`, userIds: [memberA, memberB] });
      const id = g.json<{ id: string }>().id;
      const seen = await asA('GET', `/user-groups/${id}`);
      expect(seen.status).to.equal(200);
      expect(seen.json()).to.deep.include({ userIds: [memberA], userCount: 1 });
      const listed = await asA('GET', `/user-groups?q=${encodeURIComponent(`mixed ${n}`)}`);
      expect(listed.json<{ items: { id: string; userCount: number }[] }>().items).to.deep.equal([
        { ...listed.json<{ items: object[] }>().items[0], id, userCount: 1 },
      ]);
      const asAdmin = await api('GET', `/user-groups?q=${encodeURIComponent(`mixed ${n}`)}`);
      expect(asAdmin.json<{ items: { userCount: number }[] }>().items[0]?.userCount).to.equal(2);
      expect(idsOf(await asA('GET', `/user-groups/${id}/users`))).to.deep.equal([memberA]);
      expectNotAllowed(await asA('PATCH', `/user-groups/${id}`, { name: 'renamed' }));
      expectNotAllowed(await asA('DELETE', `/user-groups/${id}`));
    });

    it('devices: those of its users only; enrollment tokens of its site', async () => {
      const now = new Date();
      const row = (udid: string, userId: string | null) => ({
        udid,
        platform: 'ios',
        user_enrollment: false,
        enrolled: true,
        user_id: userId,
        created_at: now,
        updated_at: now,
      });
      const qi = f.ts.server.db.sequelize.getQueryInterface();
      await f.ts.server.db.write((t) =>
        qi.bulkInsert(
          'devices',
          [row('SITE-DEV-A', memberA), row('SITE-DEV-B', memberB), row('SITE-DEV-NONE', null)],
          { transaction: t },
        ),
      );
      const list = await asA('GET', '/devices?q=SITE-DEV');
      expect(list.status).to.equal(200);
      expect(list.json<{ items: { udid: string }[] }>().items.map((d) => d.udid)).to.deep.equal([
        'SITE-DEV-A',
      ]);
      const all = await api('GET', '/devices?q=SITE-DEV');
      expect(all.json<{ items: unknown[] }>().items).to.have.length(3);
      expect((await asA('GET', '/devices/SITE-DEV-A')).status).to.equal(200);
      expectOutside(await asA('GET', '/devices/SITE-DEV-B'));
      expectOutside(await asA('GET', '/devices/SITE-DEV-NONE'));
      expectOutside(await asA('GET', '/devices/SITE-DEV-B/commands'));
      expectOutside(await asA('POST', '/devices/SITE-DEV-B/push'));
      for (const route of [
        '/devices/SITE-DEV-A/user',
        '/devices/SITE-DEV-A/USER',
        '/devices/SITE-DEV-A/user/',
      ]) {
        expectOutside(await asA('PUT', route, { userId: memberB }));
      }
      expect((await api('GET', '/devices/SITE-DEV-A')).json<{ userId: string }>().userId).to.equal(memberA);
      expect((await asA('GET', '/devices/NO-SUCH-DEVICE')).status).to.equal(404);

      const token = await asA('POST', '/enrollment-tokens', {});
      expect(token.status).to.equal(201);
      expect(token.json<{ siteId: string }>().siteId).to.equal(siteA);
      expectOutside(await asA('POST', '/enrollment-tokens', { siteId: siteB }));
    });
  });
});
