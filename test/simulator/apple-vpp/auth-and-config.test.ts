import { expect } from 'chai';
import type { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
import { decodeSToken, encodeSToken } from '../../../simulator/apple-vpp/service.ts';
import { NotificationReceiver, obj, request, startService, subscribe } from './helpers.ts';

describe('simulator/apple-vpp: sTokens, auth errors, service and client config', function () {
  let service: AppleVppService;
  let url: string;
  let receiver: NotificationReceiver;
  let receiverUrl: string;
  let now = Date.now();

  before(async function () {
    ({ service, url } = await startService({ clock: () => now }));
    receiver = new NotificationReceiver();
    receiverUrl = await receiver.start();
  });
  after(async function () {
    await service.stop();
    await receiver.stop();
  });
  beforeEach(function () {
    now = Date.now();
  });

  it('mints an sToken that is base64 of {"token","expDate","orgName"}', function () {
    const sToken = service.mintServiceToken({ orgName: 'Example School', expDate: '2031-02-03T04:05:06Z' });
    const json = JSON.parse(Buffer.from(sToken, 'base64').toString('utf8')) as Record<string, unknown>;
    expect(Object.keys(json).sort()).to.deep.equal(['expDate', 'orgName', 'token']);
    expect(json.orgName).to.equal('Example School');
    expect(json.expDate).to.equal('2031-02-03T04:05:06+0000');
    expect(decodeSToken(sToken)).to.deep.equal(json);
  });

  describe('authentication', function () {
    it('answers 401 9601 without an Authorization header', async function () {
      const r = await request('GET', `${url}/client/config`);
      expect(r.status).to.equal(401);
      expect(r.json).to.deep.equal({ errorNumber: 9601, errorMessage: 'Login required.' });
    });

    it('answers 401 9722 to a header that is not "Bearer <sToken>"', async function () {
      const r = await request('GET', `${url}/client/config`, { headers: { authorization: 'Basic abc' } });
      expect(r.status).to.equal(401);
      expect(obj(r).errorNumber).to.equal(9722);
    });

    it('answers 401 9601 to an unknown or malformed sToken', async function () {
      const unknown = encodeSToken({ token: 'nope', expDate: '2031-01-01T00:00:00+0000', orgName: 'X' });
      for (const sToken of [unknown, 'bm90IGpzb24=', '%%%']) {
        const r = await request('GET', `${url}/users`, { sToken });
        expect(r.status, sToken).to.equal(401);
        expect(obj(r).errorNumber, sToken).to.equal(9601);
      }
    });

    it('answers 401 9621 once the token has expired (by the service clock)', async function () {
      const sToken = service.mintServiceToken({ orgName: 'Expiring', expDate: now + 60_000 });
      expect((await request('GET', `${url}/client/config`, { sToken })).status).to.equal(200);
      now += 61_000;
      const r = await request('GET', `${url}/client/config`, { sToken });
      expect(r.status).to.equal(401);
      expect(obj(r).errorNumber).to.equal(9621);
      expect(String(obj(r).errorMessage)).to.match(/token has expired/);
    });

    it('answers 401 9625 once the token is revoked', async function () {
      const sToken = service.mintServiceToken({ orgName: 'Revoked' });
      expect(service.revokeServiceToken(sToken)).to.equal(true);
      const r = await request('POST', `${url}/users/create`, {
        sToken,
        body: { users: [{ clientUserId: 'a' }] },
      });
      expect(r.status).to.equal(401);
      expect(r.json).to.deep.equal({ errorNumber: 9625, errorMessage: 'The server has revoked the sToken.' });
    });

    it('answers 405 9726 to a wrong method and 415 9727 to a non-JSON body', async function () {
      const sToken = service.mintServiceToken({ orgName: 'Methods' });
      const m = await request('DELETE', `${url}/users`, { sToken });
      expect(m.status).to.equal(405);
      expect(obj(m).errorNumber).to.equal(9726);
      const t = await request('POST', `${url}/users/create`, {
        sToken,
        raw: { contentType: 'text/plain', data: 'users' },
      });
      expect(t.status).to.equal(415);
      expect(obj(t).errorNumber).to.equal(9727);
      const j = await request('POST', `${url}/users/create`, {
        sToken,
        raw: { contentType: 'application/json', data: '{"users": [' },
      });
      expect(j.status).to.equal(400);
      expect(obj(j).errorNumber).to.equal(9602);
    });
  });

  describe('GET /service/config', function () {
    it("serves Apple's shape without an sToken, pointing the invitation template at this simulator", async function () {
      const r = await request('GET', `${url}/service/config`);
      expect(r.status).to.equal(200);
      const body = obj(r);
      const urls = body.urls as Record<string, string>;
      const origin = url.replace(/\/mdm\/v2$/, '');
      expect(urls.invitationEmail).to.equal(`${origin}/invite?inviteCode=%25inviteCode%25&mt=8`);
      expect(urls.createUsers).to.equal(`${url}/users/create`);
      expect(urls.getUsers).to.equal(`${url}/users`);
      expect(urls.eventStatus).to.equal(`${url}/status`);
      expect(urls.clientConfig).to.equal(`${url}/client/config`);
      const limits = body.limits as Record<string, number>;
      expect(limits.maxUsers).to.equal(100);
      expect(limits.maxNotificationLength).to.equal(512);
      expect(body.notificationTypes).to.include.members(['USER_MANAGEMENT', 'USER_ASSOCIATED']);
      const codes = body.errorCodes as { errorNumber: number; errorMessage: string }[];
      const byNumber = new Map(codes.map((c) => [c.errorNumber, c.errorMessage]));
      for (const n of [9601, 9621, 9625, 9646, 9714, 9716, 9717, 9728])
        expect(byNumber.has(n), `${n}`).to.equal(true);
      expect(byNumber.get(9716)).to.equal(
        'A registered user already exists with the specified clientUserId.',
      );
    });
  });

  describe('client/config', function () {
    it('GET describes the location before any configuration', async function () {
      const sToken = service.mintServiceToken({
        orgName: 'Config Org',
        locationName: 'Main Campus',
        countryISO2ACode: 'FR',
        expDate: '2031-05-06T07:08:09+0000',
      });
      const body = obj(await request('GET', `${url}/client/config`, { sToken }));
      expect(body).to.include({
        countryISO2ACode: 'FR',
        locationName: 'Main Campus',
        tokenExpirationDate: '2031-05-06T07:08:09+0000',
        defaultPlatform: 'volumestore',
      });
      expect(body.uId).to.match(/^\d{16}$/);
      expect(body).to.not.have.property('mdmInfo');
      expect(body).to.not.have.property('notificationUrl');
      expect(body.subscribedNotificationTypes).to.deep.equal([]);
    });

    it('POST delivers a TEST_NOTIFICATION with the bearer token before answering, then stores the config', async function () {
      const sToken = service.mintServiceToken({ orgName: 'Config Org' });
      const before = receiver.received.length;
      const r = await subscribe(url, sToken, receiverUrl);
      expect(r.status, r.text).to.equal(200);
      const test = receiver.received
        .slice(before)
        .find((n) => n.body.notificationType === 'TEST_NOTIFICATION');
      expect(test, 'TEST_NOTIFICATION received').to.not.equal(undefined);
      expect(test?.authorization).to.equal('Bearer notify-secret');
      const config = obj(r);
      expect(test?.body.uId).to.equal(config.uId);
      expect(test?.body.notification).to.deep.equal({});
      expect(config.mdmInfo).to.deep.equal({ id: 'mdm-1', name: 'VPP MDM', metadata: '0.1.0' });
      expect(config.notificationUrl).to.equal(receiverUrl);
      expect(config.subscribedNotificationTypes).to.deep.equal(['USER_MANAGEMENT', 'USER_ASSOCIATED']);
      const again = obj(await request('GET', `${url}/client/config`, { sToken }));
      expect(again).to.deep.equal(config);
      // mdmInfo comes back on other responses too
      expect(obj(await request('GET', `${url}/users`, { sToken })).mdmInfo).to.deep.equal(config.mdmInfo);
    });

    it('POST answers 9728 and keeps the previous config when the receiver does not answer 2xx', async function () {
      const sToken = service.mintServiceToken({ orgName: 'Config Org' });
      expect((await subscribe(url, sToken, receiverUrl)).status).to.equal(200);
      receiver.answer = () => 500;
      try {
        const r = await request('POST', `${url}/client/config`, {
          sToken,
          body: { notificationUrl: `${receiverUrl}-other`, notificationAuthToken: 'other' },
        });
        expect(r.status).to.equal(400);
        expect(r.json).to.deep.equal({
          errorNumber: 9728,
          errorMessage: 'The provided notification URL is unreachable.',
        });
      } finally {
        receiver.answer = () => 200;
      }
      expect(obj(await request('GET', `${url}/client/config`, { sToken })).notificationUrl).to.equal(
        receiverUrl,
      );
      // an address nobody listens on is unreachable too
      const dead = await request('POST', `${url}/client/config`, {
        sToken,
        body: { notificationUrl: 'http://127.0.0.1:9/x', notificationAuthToken: 'x' },
      });
      expect(obj(dead).errorNumber).to.equal(9728);
    });

    it('POST validates like Apple (9710, 9711, 9712, 9723, 9725, 9602)', async function () {
      const sToken = service.mintServiceToken({ orgName: 'Config Org' });
      const post = async (body: unknown) =>
        obj(await request('POST', `${url}/client/config`, { sToken, body }));
      expect((await post({ notificationUrl: receiverUrl })).errorNumber).to.equal(9710);
      expect(
        (await post({ notificationUrl: receiverUrl, notificationAuthToken: 'x'.repeat(513) })).errorNumber,
      ).to.equal(9711);
      expect((await post({ notificationUrl: 'not a url', notificationAuthToken: 'x' })).errorNumber).to.equal(
        9712,
      );
      expect((await post({ mdmInfo: { id: 'a', name: 'b' } })).errorNumber).to.equal(9723);
      expect(
        (await post({ mdmInfo: { id: 'a', name: 'n'.repeat(101), metadata: '' } })).errorNumber,
      ).to.equal(9725);
      expect((await post({ notificationTypes: ['NOPE'] })).errorNumber).to.equal(9602);
      expect((await post({ mdmInfo: 'x' })).errorNumber).to.equal(9602);
    });

    it('refuses http: notification URLs (9712) unless allowed', async function () {
      const strict = await startService({ allowHttpNotificationUrl: false });
      try {
        const sToken = strict.service.mintServiceToken({ orgName: 'Strict' });
        const r = await subscribe(strict.url, sToken, receiverUrl);
        expect(r.status).to.equal(400);
        expect(obj(r).errorNumber).to.equal(9712);
      } finally {
        await strict.service.stop();
      }
    });
  });
});
