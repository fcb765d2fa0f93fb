import { expect } from 'chai';
import { enrollIdentity, mdmPayload, sendSigned } from '../helpers/identity.ts';
import { startTestServer, type TestServer } from '../helpers/test-server.ts';

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, string> };
}

describe('admin API (MDM core)', function () {
  this.timeout(60_000);
  let ts: TestServer;
  const udid = '00008101-000D1B2C3D4E5F63';

  before(async () => {
    ts = await startTestServer();
    const id = await enrollIdentity(ts);
    const topic = mdmPayload(id.profile).Topic as string;
    await sendSigned(ts, '/mdm/checkin', id, {
      MessageType: 'Authenticate',
      UDID: udid,
      Topic: topic,
      ProductName: 'iPad13,1',
      OSVersion: '17.5',
      SerialNumber: 'DMPX1234ABCD',
    });
    await sendSigned(ts, '/mdm/checkin', id, {
      MessageType: 'TokenUpdate',
      UDID: udid,
      Topic: topic,
      Token: new Uint8Array(32).fill(1),
      PushMagic: 'magic',
    });
  });
  after(async () => {
    await ts?.stop();
  });

  const routes: [string, string, unknown?][] = [
    ['POST', '/enrollment-tokens', {}],
    ['GET', '/devices'],
    ['GET', `/devices/${udid}`],
    ['PUT', `/devices/${udid}/user`, { userId: '1' }],
    ['POST', `/devices/${udid}/commands`, { requestType: 'ProfileList' }],
    ['GET', `/devices/${udid}/commands`],
  ];

  describe('401 without a valid bearer token', () => {
    for (const [method, route, body] of routes) {
      it(`${method} ${route}`, async () => {
        for (const token of [null, 'wrong-token-wrong-token']) {
          const res = await ts.api(method, route, body, token);
          expect(res.status).to.equal(401);
          expect(res.json<ErrorBody>().error.code).to.equal('unauthorized');
        }
      });
    }
  });

  describe('enrollment tokens', () => {
    it('creates a reusable token with an enroll URL (201)', async () => {
      const res = await ts.api('POST', '/enrollment-tokens', { maxUses: 2 });
      expect(res.status).to.equal(201);
      const t = res.json<{ token: string; enrollUrl: string; maxUses: number }>();
      expect(t.enrollUrl).to.equal(`${ts.server.url}/mdm/enroll?token=${t.token}`);
      expect(t.maxUses).to.equal(2);
      const path = new URL(t.enrollUrl).pathname + new URL(t.enrollUrl).search;
      expect((await ts.request('GET', path)).status).to.equal(200);
      expect((await ts.request('GET', path)).status).to.equal(200);
      expect((await ts.request('GET', path)).status).to.equal(403); // used up
    });

    it('an expired token is refused', async () => {
      const res = await ts.api('POST', '/enrollment-tokens', {
        expiresAt: new Date(Date.now() + 1500).toISOString(),
      });
      const t = res.json<{ enrollUrl: string }>();
      await new Promise((r) => setTimeout(r, 1600));
      const u = new URL(t.enrollUrl);
      expect((await ts.request('GET', u.pathname + u.search)).status).to.equal(403);
    });

    it('400 with details per field', async () => {
      const res = await ts.api('POST', '/enrollment-tokens', { maxUses: 0, expiresAt: 'tomorrow', extra: 1 });
      expect(res.status).to.equal(400);
      const details = res.json<ErrorBody>().error.details ?? {};
      expect(details).to.have.property('maxUses');
      expect(details).to.have.property('expiresAt');
      const past = await ts.api('POST', '/enrollment-tokens', { expiresAt: '2001-01-01T00:00:00Z' });
      expect(past.status).to.equal(400);
      expect(past.json<ErrorBody>().error.details).to.have.property('expiresAt');
      const notJson = await ts.api('POST', '/enrollment-tokens', '{nope');
      expect(notJson.status).to.equal(400);
    });

    it('an unknown siteId is 400 unknown_ids naming it; a known one is kept', async () => {
      const res = await ts.api('POST', '/enrollment-tokens', { siteId: '987654' });
      expect(res.status).to.equal(400);
      expect(res.json<ErrorBody>().error.code).to.equal('unknown_ids');
      expect(res.json<ErrorBody>().error.details).to.deep.equal({ siteId: ['987654'] });
      const site = (await ts.api('POST', '/sites', { name: 'enrollment site' })).json<{ id: string }>();
      const ok = await ts.api('POST', '/enrollment-tokens', { siteId: site.id });
      expect(ok.status).to.equal(201);
      expect(ok.json<{ siteId: string }>().siteId).to.equal(site.id);
    });
  });

  describe('devices', () => {
    it('lists and gets devices', async () => {
      const list = (await ts.api('GET', '/devices')).json<{ items: { udid: string }[] }>();
      expect(list.items.map((d) => d.udid)).to.include(udid);
      const d = (await ts.api('GET', `/devices/${udid}`)).json<Record<string, unknown>>();
      expect(d).to.include({
        udid,
        platform: 'ipados',
        model: 'iPad13,1',
        serialNumber: 'DMPX1234ABCD',
        enrolled: true,
      });
      expect(d.channels).to.deep.equal([{ enrollmentId: udid, channel: 'device', enabled: true }]);
      expect(d.enrolledAt).to.be.a('string');
      const filtered = (await ts.api('GET', '/devices?q=DMPX1234')).json<{ items: unknown[] }>();
      expect(filtered.items).to.have.length(1);
      const none = (await ts.api('GET', '/devices?q=zzzz-nothing')).json<{ items: unknown[] }>();
      expect(none.items).to.have.length(0);
    });

    it('400 on a bad list query', async () => {
      expect((await ts.api('GET', '/devices?limit=0')).status).to.equal(400);
      expect((await ts.api('GET', '/devices?limit=1001')).status).to.equal(400);
    });

    it('404 for an unknown device', async () => {
      for (const [method, route, body] of [
        ['GET', '/devices/NOPE'],
        ['PUT', '/devices/NOPE/user', { userId: '1' }],
        ['POST', '/devices/NOPE/commands', { requestType: 'ProfileList' }],
        ['GET', '/devices/NOPE/commands'],
      ] as [string, string, unknown?][]) {
        const res = await ts.api(method, route, body);
        expect(res.status, `${method} ${route}`).to.equal(404);
        expect(res.json<ErrorBody>().error.code).to.equal('not_found');
      }
    });

    it('assigns a user', async () => {
      const created = await ts.api('POST', '/users', { username: 'device-owner' });
      const { id } = created.json<{ id: string }>();
      const res = await ts.api('PUT', `/devices/${udid}/user`, { userId: id });
      expect(res.status).to.equal(200);
      expect(res.json<{ userId: string }>().userId).to.equal(id);
      expect((await ts.api('PUT', `/devices/${udid}/user`, { userId: 42 })).status).to.equal(400);
      const unknown = await ts.api('PUT', `/devices/${udid}/user`, { userId: '424242' });
      expect(unknown.status).to.equal(400);
      expect(unknown.json<ErrorBody>().error.details).to.deep.equal({ userId: ['424242'] });
      const cleared = await ts.api('PUT', `/devices/${udid}/user`, { userId: null });
      expect(cleared.json<{ userId: string | null }>().userId).to.equal(null);
    });
  });

  describe('commands', () => {
    it('queues any command with Apple key names (201) and lists it as queued', async () => {
      const res = await ts.api('POST', `/devices/${udid}/commands`, {
        requestType: 'DeviceInformation',
        Queries: ['UDID', 'iTunesStoreAccountHash'],
      });
      expect(res.status).to.equal(201);
      const { commandUuid } = res.json<{ commandUuid: string }>();
      const list = (await ts.api('GET', `/devices/${udid}/commands`)).json<{
        items: Record<string, unknown>[];
      }>();
      const item = list.items.find((i) => i.commandUuid === commandUuid);
      expect(item).to.include({
        requestType: 'DeviceInformation',
        enrollmentId: udid,
        status: 'queued',
        answeredAt: null,
      });
    });

    it('400 for a bad command body', async () => {
      const cases: unknown[] = [
        {},
        { requestType: '' },
        { requestType: 'X', Queries: null },
        { requestType: 'X', enrollmentId: 'other' },
      ];
      for (const body of cases) {
        const res = await ts.api('POST', `/devices/${udid}/commands`, body);
        expect(res.status, JSON.stringify(body)).to.equal(400);
        expect(res.json<ErrorBody>().error.details).to.be.an('object');
      }
    });
  });

  it('unknown API routes are JSON 404s', async () => {
    const res = await ts.api('GET', '/nothing-here');
    expect(res.status).to.equal(404);
    expect(res.json<ErrorBody>().error.code).to.equal('not_found');
  });
});
