import https from 'node:https';
import { expect } from 'chai';
import { errorCode, vppFixture, waitFor, type ErrorBody, type VppFixture } from './helpers.ts';

interface LocationJson {
  id: string;
  name: string;
  organizationName: string;
  countryCode: string | null;
  tokenExpiration: string | null;
  siteId: string | null;
  autoRegisterManagedUsers: boolean;
  locationName: string | null;
  status: string;
}

/** Sets Apple's `mdmInfo` of a token as another MDM server would. */
function claimByOtherMdm(f: VppFixture, sToken: string): Promise<number> {
  const body = JSON.stringify({ mdmInfo: { id: 'other-mdm-id', name: 'Other MDM', metadata: '' } });
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${f.service.url}/client/config`,
      {
        method: 'POST',
        ca: f.pki.caCertPem,
        headers: {
          authorization: `Bearer ${sToken}`,
          'content-type': 'application/json',
          'content-length': String(body.length),
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('admin API: locations', function () {
  this.timeout(60_000);
  let f: VppFixture;
  let n = 0;
  const mint = (o: { orgName?: string; locationName?: string; expDate?: Date } = {}) => {
    n += 1;
    return f.service.mintServiceToken({
      orgName: o.orgName ?? `Acme ${n}`,
      locationName: o.locationName ?? `Site ${n}`,
      countryISO2ACode: 'DE',
      ...(o.expDate ? { expDate: o.expDate } : {}),
    });
  };

  before(async () => {
    f = await vppFixture();
  });
  afterEach(() => f.service.clearFaults());
  after(async () => {
    await f?.cleanup();
  });

  describe('401 without a valid bearer token', () => {
    const routes: [string, string, unknown?][] = [
      ['POST', '/locations', { name: 'x', serviceToken: 'y' }],
      ['GET', '/locations'],
      ['GET', '/locations/1'],
      ['PATCH', '/locations/1', { name: 'x' }],
      ['DELETE', '/locations/1'],
      ['POST', '/locations/1/sync'],
    ];
    for (const [method, route, body] of routes) {
      it(`${method} ${route}`, async () => {
        for (const token of [null, 'wrong-token-wrong-token']) {
          const res = await f.ts.api(method, route, body, token);
          expect(res.status).to.equal(401);
          expect(errorCode(res)).to.equal('unauthorized');
        }
      });
    }
  });

  describe('POST /locations', () => {
    it('201: reads the token and Apple, registers for notifications (TEST_NOTIFICATION answered while Apple waits)', async () => {
      const sToken = mint({ orgName: 'Acme Corp', locationName: 'Berlin' });
      const before = f.service
        .notifications()
        .filter((x) => x.notificationType === 'TEST_NOTIFICATION').length;
      const res = await f.ts.api('POST', '/locations', { name: 'Berlin office', serviceToken: sToken });
      expect(res.status).to.equal(201);
      const loc = res.json<LocationJson>();
      expect(loc).to.deep.include({
        name: 'Berlin office',
        organizationName: 'Acme Corp',
        countryCode: 'DE',
        locationName: 'Berlin',
        siteId: null,
        autoRegisterManagedUsers: false,
        status: 'active',
      });
      expect(Date.parse(loc.tokenExpiration ?? '')).to.be.greaterThan(Date.now() + 300 * 86_400_000);
      expect(JSON.stringify(loc)).to.not.contain(sToken);
      const summary = f.service.location(sToken);
      expect(summary?.notificationUrl).to.equal(`${f.ts.server.url}/apple/vpp/notifications/${loc.id}`);
      expect(summary?.subscribedNotificationTypes).to.have.members(['USER_MANAGEMENT', 'USER_ASSOCIATED']);
      expect(summary?.mdmInfo?.name).to.equal('vpp-mdm');
      const tests = f.service.notifications().filter((x) => x.notificationType === 'TEST_NOTIFICATION');
      expect(tests.length - before).to.equal(1);
      expect(tests.at(-1)?.state).to.equal('delivered');
      // stored sealed: the database never holds the token in clear
      const rows = await f.ts.server.db.sequelize.query(
        'SELECT s_token_sealed FROM vpp_locations WHERE id = :id',
        {
          replacements: { id: Number(loc.id) },
          plain: true,
        },
      );
      expect(String((rows as { s_token_sealed: string } | null)?.s_token_sealed)).to.match(/^v1\./);
      expect(String((rows as { s_token_sealed: string } | null)?.s_token_sealed)).to.not.contain(sToken);
    });

    it("400 invalid_service_token with Apple's reason (expired, revoked, not a token)", async () => {
      const expired = mint({ expDate: new Date(Date.now() - 60_000) });
      const r1 = await f.ts.api('POST', '/locations', { name: 'x', serviceToken: expired });
      expect(r1.status).to.equal(400);
      expect(errorCode(r1)).to.equal('invalid_service_token');
      expect(r1.json<ErrorBody>().error.message).to.contain('The token has expired');
      const revoked = mint();
      f.service.revokeServiceToken(revoked);
      const r2 = await f.ts.api('POST', '/locations', { name: 'x', serviceToken: revoked });
      expect(r2.status).to.equal(400);
      expect(r2.json<ErrorBody>().error.message).to.contain('revoked the sToken');
      expect(r2.json<ErrorBody>().error.details).to.deep.include({ appleErrorNumber: 9625 });
      const r3 = await f.ts.api('POST', '/locations', { name: 'x', serviceToken: 'definitely not a token' });
      expect(r3.status).to.equal(400);
      expect(errorCode(r3)).to.equal('invalid_service_token');
    });

    it('409 service_token_in_use for a token claimed by another MDM server, unless ?force=true', async () => {
      const sToken = mint();
      expect(await claimByOtherMdm(f, sToken)).to.equal(200);
      const r1 = await f.ts.api('POST', '/locations', { name: 'taken', serviceToken: sToken });
      expect(r1.status).to.equal(409);
      expect(errorCode(r1)).to.equal('service_token_in_use');
      expect(r1.json<ErrorBody>().error.message).to.contain('Other MDM');
      const r2 = await f.ts.api('POST', '/locations?force=true', {
        name: 'taken over',
        serviceToken: sToken,
      });
      expect(r2.status).to.equal(201);
      expect(f.service.location(sToken)?.mdmInfo?.name).to.equal('vpp-mdm');
    });

    it('409 location_exists for a second location with the same Apple location', async () => {
      const { id, sToken } = await f.addLocation();
      const res = await f.ts.api('POST', '/locations', { name: 'again', serviceToken: sToken });
      expect(res.status).to.equal(409);
      expect(errorCode(res)).to.equal('location_exists');
      expect(res.json<ErrorBody>().error.details).to.deep.equal({ locationId: id });
    });

    it("Apple refusing the notification settings removes the location again (502 with Apple's reason)", async () => {
      const sToken = mint();
      const before = (await f.ts.api('GET', '/locations?limit=1000')).json<{ items: unknown[] }>().items
        .length;
      f.service.addFault({
        path: '/client/config',
        method: 'POST',
        times: 1,
        action: { kind: 'error', errorNumber: 9728 },
      });
      const res = await f.ts.api('POST', '/locations', { name: 'unreachable', serviceToken: sToken });
      expect(res.status).to.equal(502);
      expect(errorCode(res)).to.equal('apple_error');
      expect(res.json<ErrorBody>().error.message).to.contain('notification URL is unreachable');
      const after = (await f.ts.api('GET', '/locations?limit=1000')).json<{ items: unknown[] }>().items
        .length;
      expect(after).to.equal(before);
      // and the token can be added afterwards
      expect(
        (await f.ts.api('POST', '/locations', { name: 'second try', serviceToken: sToken })).status,
      ).to.equal(201);
    });

    it('Apple unreachable is 502 apple_unreachable', async () => {
      f.service.addFault({ path: '/client/config', times: 1, action: { kind: 'reset' } });
      const res = await f.ts.api('POST', '/locations', { name: 'x', serviceToken: mint() });
      expect(res.status).to.equal(502);
      expect(errorCode(res)).to.equal('apple_unreachable');
    });

    it('400 for bad bodies and unknown site ids', async () => {
      for (const body of [
        {},
        { name: '', serviceToken: 'x' },
        { name: 'x' },
        { name: 'x', serviceToken: 'y', extra: 1 },
        { name: 'x', serviceToken: 'y', autoRegisterManagedUsers: 'yes' },
      ]) {
        const res = await f.ts.api('POST', '/locations', body);
        expect(res.status, JSON.stringify(body)).to.equal(400);
        expect(errorCode(res)).to.equal('invalid_request');
      }
      const res = await f.ts.api('POST', '/locations', { name: 'x', serviceToken: mint(), siteId: '987654' });
      expect(res.status).to.equal(400);
      expect(errorCode(res)).to.equal('unknown_ids');
      expect(res.json<ErrorBody>().error.details).to.deep.equal({ siteId: ['987654'] });
    });

    it('with a site and auto-registration', async () => {
      const site = (await f.ts.api('POST', '/sites', { name: `site for location ${n}` })).json<{
        id: string;
      }>();
      const res = await f.ts.api('POST', '/locations', {
        name: 'with site',
        serviceToken: mint(),
        siteId: site.id,
        autoRegisterManagedUsers: true,
      });
      expect(res.status).to.equal(201);
      expect(res.json<LocationJson>()).to.deep.include({ siteId: site.id, autoRegisterManagedUsers: true });
    });
  });

  describe('GET /locations and /locations/{id}', () => {
    it('lists with limit, cursor and q', async () => {
      await f.addLocation({ name: 'Paging Alpha' });
      await f.addLocation({ name: 'Paging Beta' });
      const all: string[] = [];
      let cursor: string | undefined;
      do {
        const res = await f.ts.api('GET', `/locations?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
        expect(res.status).to.equal(200);
        const page = res.json<{ items: LocationJson[]; nextCursor?: string }>();
        expect(page.items.length).to.be.at.most(1);
        all.push(...page.items.map((l) => l.id));
        cursor = page.nextCursor;
      } while (cursor);
      expect(new Set(all).size).to.equal(all.length);
      const q = (await f.ts.api('GET', '/locations?q=paging%20b')).json<{ items: LocationJson[] }>();
      expect(q.items.map((l) => l.name)).to.deep.equal(['Paging Beta']);
      expect((await f.ts.api('GET', '/locations?cursor=bogus')).status).to.equal(400);
      expect((await f.ts.api('GET', '/locations?limit=0')).status).to.equal(400);
    });

    it('gets one; unknown ids are 404', async () => {
      const { id } = await f.addLocation({ name: 'Single' });
      const res = await f.ts.api('GET', `/locations/${id}`);
      expect(res.status).to.equal(200);
      expect(res.json<LocationJson>().name).to.equal('Single');
      for (const bad of ['987654', 'abc', '0']) {
        const r = await f.ts.api('GET', `/locations/${bad}`);
        expect(r.status).to.equal(404);
        expect(errorCode(r)).to.equal('not_found');
      }
    });
  });

  describe('PATCH /locations/{id}', () => {
    it('renames, sets the site (raising location.site_changed) and auto-registration', async () => {
      const { id } = await f.addLocation();
      const site = (await f.ts.api('POST', '/sites', { name: `patch site ${n}` })).json<{ id: string }>();
      const changes: unknown[] = [];
      const off = f.ts.server.events.on('location.site_changed', (e) => changes.push(e));
      const res = await f.ts.api('PATCH', `/locations/${id}`, {
        name: 'Renamed',
        siteId: site.id,
        autoRegisterManagedUsers: true,
      });
      expect(res.status).to.equal(200);
      expect(res.json<LocationJson>()).to.deep.include({
        name: 'Renamed',
        siteId: site.id,
        autoRegisterManagedUsers: true,
      });
      // the same site again: no event; back to none: an event
      await f.ts.api('PATCH', `/locations/${id}`, { siteId: site.id });
      await f.ts.api('PATCH', `/locations/${id}`, { siteId: null });
      off();
      expect(changes).to.deep.equal([
        { locationId: id, previousSiteId: null, siteId: site.id },
        { locationId: id, previousSiteId: site.id, siteId: null },
      ]);
    });

    it('400 for bad bodies and unknown sites; 404 for unknown locations', async () => {
      const { id } = await f.addLocation();
      expect((await f.ts.api('PATCH', `/locations/${id}`, { name: '' })).status).to.equal(400);
      expect((await f.ts.api('PATCH', `/locations/${id}`, { bogus: true })).status).to.equal(400);
      const unknownSite = await f.ts.api('PATCH', `/locations/${id}`, { siteId: '987654' });
      expect(unknownSite.status).to.equal(400);
      expect(errorCode(unknownSite)).to.equal('unknown_ids');
      expect((await f.ts.api('PATCH', '/locations/987654', { name: 'x' })).status).to.equal(404);
    });

    it("renews the token with one of the same Apple location; refuses another location's token", async () => {
      const { id, sToken } = await f.addLocation();
      const ok = await f.ts.api('PATCH', `/locations/${id}`, { serviceToken: sToken });
      expect(ok.status).to.equal(200);
      expect(ok.json<LocationJson>().status).to.equal('active');
      const other = await f.ts.api('PATCH', `/locations/${id}`, { serviceToken: mint() });
      expect(other.status).to.equal(409);
      expect(errorCode(other)).to.equal('service_token_mismatch');
      const expired = await f.ts.api('PATCH', `/locations/${id}`, {
        serviceToken: mint({ expDate: new Date(Date.now() - 1000) }),
      });
      expect(expired.status).to.equal(400);
      expect(errorCode(expired)).to.equal('invalid_service_token');
    });
  });

  describe('DELETE /locations/{id}', () => {
    it('204, then 404; Apple stops sending notifications', async () => {
      const { id, sToken } = await f.addLocation();
      const deleted: string[] = [];
      const off = f.ts.server.events.on('location.deleted', (e) => deleted.push(e.locationId));
      expect((await f.ts.api('DELETE', `/locations/${id}`)).status).to.equal(204);
      off();
      expect(deleted).to.deep.equal([id]);
      expect((await f.ts.api('GET', `/locations/${id}`)).status).to.equal(404);
      expect((await f.ts.api('DELETE', `/locations/${id}`)).status).to.equal(404);
      expect(f.service.location(sToken)?.notificationUrl).to.equal(undefined);
    });
  });

  describe('POST /locations/{id}/sync', () => {
    it('202 and the sync runs; 404 for unknown ids', async () => {
      const { id } = await f.addLocation();
      const before = f.service.stats().requests.byRoute['GET /users'] ?? 0;
      expect((await f.ts.api('POST', `/locations/${id}/sync`)).status).to.equal(202);
      await waitFor('a users call', () => (f.service.stats().requests.byRoute['GET /users'] ?? 0) > before);
      expect((await f.ts.api('POST', '/locations/987654/sync')).status).to.equal(404);
    });
  });
});
