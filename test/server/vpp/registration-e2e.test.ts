import https from 'node:https';
import { expect } from 'chai';
import { appleIdHash } from '../../../simulator/apple-vpp/service.ts';
import { registrationAt, vppFixture, waitFor, type RegistrationJson, type VppFixture } from './helpers.ts';

/** The invitation page's form, posted as a browser would (the simulator's page over HTTPS). */
function acceptOnPage(
  invitationUrl: string,
  appleId: string,
  ca: string,
): Promise<{ status: number; body: string }> {
  const body = new URLSearchParams({ appleId, action: 'accept' }).toString();
  return new Promise((resolve, reject) => {
    const req = https.request(
      invitationUrl,
      {
        method: 'POST',
        ca,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': String(Buffer.byteLength(body)),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('Apps and Books registration, end to end (done when)', function () {
  this.timeout(60_000);
  let f: VppFixture;

  before(async () => {
    f = await vppFixture();
  });
  after(async () => {
    await f?.cleanup();
  });

  it('a user created through the API, registered and accepted on its page shows associated with its idHash', async () => {
    const location = await f.addLocation();
    const userId = await f.addUser('done.when', { email: 'done.when@example.com' });

    const created = await f.ts.api('POST', `/users/${userId}/registrations/${location.id}`, {});
    expect(created.status).to.equal(201);
    const pending = created.json<RegistrationJson>();
    expect(pending.status).to.equal('pending');
    expect(pending.clientUserId).to.match(/^[0-9a-f-]{36}$/);

    const registered = await waitFor('registered', async () => {
      const r = await registrationAt(f.ts, userId, location.id);
      return r?.status === 'registered' ? r : undefined;
    });
    expect(registered.inviteCode).to.be.a('string');
    expect(registered.invitationUrl).to.equal(f.service.invitationUrl(registered.inviteCode ?? ''));
    expect(registered.registeredAt).to.be.a('string');

    // the user opens the link and accepts with an Apple ID on Apple's (simulated) page
    const page = await acceptOnPage(
      registered.invitationUrl ?? '',
      'done.when@icloud.example',
      f.pki.caCertPem,
    );
    expect(page.status).to.equal(200);

    const associated = await waitFor('associated', async () => {
      const r = await registrationAt(f.ts, userId, location.id);
      return r?.status === 'associated' ? r : undefined;
    });
    expect(associated.idHash).to.equal(appleIdHash('done.when@icloud.example'));
    expect(associated.clientUserId).to.equal(pending.clientUserId);
    expect(associated.associatedAt).to.be.a('string');
    // the same registration at Apple
    const atApple = f.service.users(location.sToken).filter((u) => u.clientUserId === pending.clientUserId);
    expect(atApple).to.have.length(1);
    expect(atApple[0]?.status).to.equal('Associated');
  });

  it('deleting a user retires its registrations at Apple (a durable job, after the delete)', async () => {
    const locations = [await f.addLocation(), await f.addLocation()];
    const userId = await f.addUser('leaving.user');
    const stays = await f.addUser('staying.user');
    const clientIds = new Map<string, string>();
    for (const loc of locations) {
      for (const u of [userId, stays]) {
        const res = await f.ts.api('POST', `/users/${u}/registrations/${loc.id}`, {});
        expect(res.status).to.equal(201);
        if (u === userId) clientIds.set(loc.id, res.json<RegistrationJson>().clientUserId);
      }
    }
    for (const loc of locations) {
      for (const u of [userId, stays]) {
        await waitFor(
          'registered',
          async () => (await registrationAt(f.ts, u, loc.id))?.status === 'registered',
        );
      }
    }
    const statusAtApple = (sToken: string, clientUserId: string | undefined) =>
      f.service.users(sToken).find((u) => u.clientUserId === clientUserId)?.status;

    expect((await f.ts.api('DELETE', `/users/${userId}`)).status).to.equal(204);
    expect((await f.ts.api('GET', `/users/${userId}`)).status).to.equal(404);
    for (const loc of locations) {
      await waitFor(
        'retired at Apple',
        async () => statusAtApple(loc.sToken, clientIds.get(loc.id)) === 'Retired',
      );
      // the other user is untouched
      const other = (await registrationAt(f.ts, stays, loc.id))?.clientUserId;
      expect(statusAtApple(loc.sToken, other)).to.equal('Registered');
    }
    // an unknown user is 404 and retires nothing
    expect((await f.ts.api('DELETE', `/users/${userId}`)).status).to.equal(404);
  });
});
