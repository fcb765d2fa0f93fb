import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { ensureDevPki } from '../../../certs/dev-pki.ts';
import type { DevPki } from '../../../certs/dev-pki.ts';
import { AppleVppService } from '../../../simulator/apple-vpp/service.ts';
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

describe('simulator/apple-vpp: HTTPS with the development PKI, and the state file', function () {
  let dir: string;
  let pki: DevPki;

  before(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpp-sim-'));
    pki = await ensureDevPki(path.join(dir, 'certs'));
  });
  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the API and the invitation page over HTTPS and notifies an HTTPS server with a private CA', async function () {
    const receiver = new NotificationReceiver({ certPem: pki.serverCertPem, keyPem: pki.serverKeyPem });
    const receiverUrl = await receiver.start();
    const service = new AppleVppService({
      port: 0,
      tlsCertPem: pki.simulatorCertPem,
      tlsKeyPem: pki.simulatorKeyPem,
      notificationCaPems: [pki.caCertPem],
      eventDelayMs: 20,
    });
    const untrusting = new AppleVppService({
      port: 0,
      tlsCertPem: pki.simulatorCertPem,
      tlsKeyPem: pki.simulatorKeyPem,
    });
    try {
      const { url } = await service.start();
      expect(url).to.match(/^https:\/\/127\.0\.0\.1:\d+\/mdm\/v2$/);
      const ca = pki.caCertPem;
      const sToken = service.mintServiceToken({ orgName: 'TLS Org' });
      const configured = await request('POST', `${url}/client/config`, {
        ca,
        sToken,
        body: {
          notificationUrl: receiverUrl,
          notificationAuthToken: 'tls-secret',
          notificationTypes: ['USER_MANAGEMENT', 'USER_ASSOCIATED'],
        },
      });
      expect(configured.status, configured.text).to.equal(200);
      expect(receiver.ofType('TEST_NOTIFICATION')).to.have.length(1);

      const ev = obj(await request('POST', `${url}/users/create`, { ca, sToken, body: { users: users(1) } }));
      expect(ev.eventId).to.be.a('string');
      await waitFor('USER_MANAGEMENT over HTTPS', () => receiver.ofType('USER_MANAGEMENT')[0]);

      const template = String(
        (obj(await request('GET', `${url}/service/config`, { ca })).urls as Record<string, string>)
          .invitationEmail,
      );
      expect(template).to.match(/^https:\/\/127\.0\.0\.1:\d+\/invite\?inviteCode=%25inviteCode%25&mt=8$/);
      const code = service.users(sToken)[0]?.inviteCode ?? '';
      const link = template.replace('%25inviteCode%25', code);
      expect((await request('GET', link, { ca })).status).to.equal(200);
      const accepted = await request('POST', link, { ca, form: { appleId: 'tls@icloud.test' } });
      expect(accepted.status).to.equal(200);
      await waitFor('USER_ASSOCIATED over HTTPS', () => receiver.ofType('USER_ASSOCIATED')[0]);

      // without the MDM server's CA the TEST_NOTIFICATION fails TLS verification: 9728
      const other = await untrusting.start();
      const t2 = untrusting.mintServiceToken({ orgName: 'No CA' });
      const refused = await request('POST', `${other.url}/client/config`, {
        ca,
        sToken: t2,
        body: { notificationUrl: receiverUrl, notificationAuthToken: 'x' },
      });
      expect(obj(refused).errorNumber).to.equal(9728);
      const failedTest = untrusting.notifications().find((n) => n.notificationType === 'TEST_NOTIFICATION');
      expect(failedTest?.state).to.equal('failed');
      expect(failedTest?.attempts[0]?.error).to.be.a('string');
    } finally {
      await service.stop();
      await untrusting.stop();
      await receiver.stop();
    }
  });

  it('keeps locations, users, invitations and undelivered notifications in the state file across restarts', async function () {
    const stateFile = path.join(dir, 'state', 'apple-vpp.json');
    const receiver = new NotificationReceiver();
    const receiverUrl = await receiver.start();
    let sToken: string;
    let inviteCode: string;
    const first = await startService({
      stateFile,
      notificationRetry: { maxAttempts: 5, initialDelayMs: 60_000, factor: 2, maxDelayMs: 60_000 },
    });
    try {
      sToken = first.service.mintServiceToken({ orgName: 'Persistent' });
      expect((await subscribe(first.url, sToken, receiverUrl)).status).to.equal(200);
      const ev = obj(
        await request('POST', `${first.url}/users/create`, { sToken, body: { users: users(3) } }),
      );
      await eventDone(first.url, sToken, String(ev.eventId));
      await waitFor('CREATE notification', () => receiver.ofType('USER_MANAGEMENT')[0]);
      inviteCode = first.service.users(sToken)[0]?.inviteCode ?? '';
      // an undelivered notification stays queued
      receiver.answer = () => 500;
      first.service.acceptInvitation(inviteCode, 'persist@icloud.test');
      await waitFor('a failed attempt', () => receiver.ofType('USER_ASSOCIATED')[0]);
    } finally {
      await first.service.stop();
    }
    const saved = JSON.parse(await readFile(stateFile, 'utf8')) as { pendingNotifications: unknown[] };
    expect(saved.pendingNotifications).to.have.length(1);

    receiver.answer = () => 200;
    const second = await startService({ stateFile });
    try {
      const list = obj(await request('GET', `${second.url}/users`, { sToken }));
      expect(list.users).to.have.length(3);
      expect(second.service.acceptInvitation(inviteCode, 'persist@icloud.test').result).to.equal(
        'already_associated',
      );
      const delivered = await waitFor('the queued USER_ASSOCIATED', () =>
        receiver.ofType('USER_ASSOCIATED').find((r) => r.answered === 200),
      );
      const firstTry = receiver.ofType('USER_ASSOCIATED')[0];
      expect(delivered.body.notificationId).to.equal(firstTry?.body.notificationId);
      expect(obj(await request('GET', `${second.url}/client/config`, { sToken })).notificationUrl).to.equal(
        receiverUrl,
      );
    } finally {
      await second.service.stop();
      await receiver.stop();
    }
  });

  it('keeps tokens minted before start() next to the ones read from the state file', async function () {
    const stateFile = path.join(dir, 'early', 'apple-vpp.json');
    const first = await startService({ stateFile });
    const old = first.service.mintServiceToken({ orgName: 'Old' });
    await first.service.stop();
    const second = new AppleVppService({ port: 0, stateFile });
    const early = second.mintServiceToken({ orgName: 'Early' });
    try {
      const { url } = await second.start();
      for (const sToken of [old, early]) {
        expect((await request('GET', `${url}/client/config`, { sToken })).status).to.equal(200);
      }
      expect(
        second
          .locations()
          .map((l) => l.orgName)
          .sort(),
      ).to.deep.equal(['Early', 'Old']);
    } finally {
      await second.stop();
    }
  });

  it('refuses a state file that is not valid', async function () {
    const stateFile = path.join(dir, 'bad.json');
    await writeFile(stateFile, JSON.stringify({ format: 1, locations: [{}], pendingNotifications: [] }));
    const service = new AppleVppService({ port: 0, stateFile });
    let error: unknown = null;
    try {
      await service.start();
    } catch (err) {
      error = err;
    } finally {
      await service.stop();
    }
    expect(String(error)).to.match(/state file .* is not valid/);
    // the refused file is left as it was
    expect(JSON.parse(await readFile(stateFile, 'utf8'))).to.deep.equal({
      format: 1,
      locations: [{}],
      pendingNotifications: [],
    });
  });
});
