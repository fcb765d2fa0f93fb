/**
 * Self Service identity through a trusted proxy (RFC 9440 `Client-Cert`), and a device that checked out.
 */
import { X509Certificate } from 'node:crypto';
import { expect } from 'chai';
import { randomSpec, seededRng } from '../../../simulator/device/device-spec.ts';
import { leafCertificate } from '../../../simulator/selfservice/self-service-client.ts';
import { deliveryFixture, waitFor, type DeliveryFixture } from './helpers.ts';

const rng = seededRng(5);

describe('Self Service behind a trusted proxy', function () {
  this.timeout(120_000);
  let f: DeliveryFixture;

  before(async () => {
    f = await deliveryFixture({ MDM_TRUST_PROXY_CERT_HEADER: 'true' });
  });

  after(async () => {
    await f?.cleanup();
  });

  it('takes the identity from Client-Cert, refuses a malformed header and a checked-out device (403)', async () => {
    const locationId = await f.addLocation();
    const userId = await f.addUser('proxy.user');
    const device = await f.enroll(randomSpec('ios', rng));
    await f.assign(device, userId);
    const invitationId = await f.createInvitation({
      name: 'proxy',
      locationId,
      distributionMethod: 'self_service_only',
      scope: { allUsers: false, userIds: [userId], groupIds: [], exclusions: { userIds: [], groupIds: [] } },
    });
    const usage = await waitFor('listed in Self Service (sent)', async () => {
      const u = (await f.usage(invitationId))[0];
      return u?.status === 'sent' ? u : undefined;
    });
    const der = new X509Certificate(leafCertificate(device.snapshot().identity?.certPem ?? '')).raw;
    const header = { 'client-cert': `:${der.toString('base64')}:` };

    const listed = await f.ts.request('GET', '/selfservice/v1/invitations', { headers: header });
    expect(listed.status, listed.text).to.equal(200);
    expect(listed.json<{ invitations: { id: string; status: string }[] }>().invitations).to.deep.equal([
      {
        id: usage.id,
        invitationId,
        name: 'proxy',
        locationName: listed.json<{ invitations: { locationName: string }[] }>().invitations[0]?.locationName,
        status: 'pending',
        invitationUrl: usage.invitationUrl,
      },
    ]);
    const accepted = await f.ts.request('POST', `/selfservice/v1/invitations/${usage.id}/accept`, {
      headers: header,
    });
    expect(accepted.status, accepted.text).to.equal(200);
    expect(accepted.json()).to.deep.equal({ invitationUrl: usage.invitationUrl });
    expect((await f.usage(invitationId))[0]?.status).to.equal('acknowledged');

    const malformed = await f.ts.request('GET', '/selfservice/v1/invitations', {
      headers: { 'client-cert': 'not a byte sequence' },
    });
    expect(malformed.status).to.equal(403);

    await device.checkOut();
    const gone = await f.ts.request('GET', '/selfservice/v1/invitations', { headers: header });
    expect(gone.status).to.equal(403);
    expect(gone.json<{ error: { code: string } }>().error.code).to.equal('device_not_enrolled');
  });
});
