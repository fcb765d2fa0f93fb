import { expect } from 'chai';
import { createCaCertificate, generateKeyPair, issueCertificate } from '../../../shared/crypto/index.ts';
import { randomSpec } from '../../../simulator/device/device-spec.ts';
import { initialState } from '../../../simulator/device/device-state.ts';
import { SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import {
  leafCertificate,
  SelfServiceClient,
  SelfServiceError,
  serverBaseUrl,
} from '../../../simulator/selfservice/self-service-client.ts';
import type { SelfServiceListing } from '../../../simulator/selfservice/self-service-client.ts';
import { testPki } from '../helpers/fake-mdm-server.ts';
import type { TestPki } from '../helpers/fake-mdm-server.ts';
import { waitFor } from '../apple-vpp/helpers.ts';
import { StubSelfService } from './stub-self-service.ts';

async function identity(issuer: { certPem: string; keyPem: string }, cn: string) {
  const keys = await generateKeyPair();
  return {
    certPem: issueCertificate({
      kind: 'client',
      subject: { CN: cn },
      publicKeyPem: keys.publicKeyPem,
      issuerCertPem: issuer.certPem,
      issuerKeyPem: issuer.keyPem,
      days: 30,
    }),
    keyPem: keys.privateKeyPem,
  };
}

async function expectError(p: Promise<unknown>, code: string, status?: number): Promise<SelfServiceError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(SelfServiceError);
    const e = err as SelfServiceError;
    expect(e.code, e.message).to.equal(code);
    if (status !== undefined) expect(e.status).to.equal(status);
    return e;
  }
  throw new Error(`expected a ${code} error`);
}

const INVITATION = {
  id: 'usage-1',
  invitationId: 'inv-1',
  name: 'Staff apps',
  locationName: 'Lycée Exemple',
  status: 'pending',
  invitationUrl: 'https://127.0.0.1:8444/invite?inviteCode=abc&mt=8',
};

describe('simulator/selfservice: SelfServiceClient', function () {
  let pki: TestPki;
  let stub: StubSelfService;
  let alice: { certPem: string; keyPem: string };
  let bob: { certPem: string; keyPem: string };
  const clients: SelfServiceClient[] = [];

  function client(id: { certPem: string; keyPem: string } | null, udid = 'DEVICE-1'): SelfServiceClient {
    const c = new SelfServiceClient({ baseUrl: `${stub.url}/`, ca: pki.caCertPem, identity: () => id, udid });
    clients.push(c);
    return c;
  }

  before(async function () {
    pki = await testPki();
    stub = new StubSelfService(pki);
    await stub.start();
    const deviceCa = { certPem: pki.deviceCaCertPem, keyPem: pki.deviceCaKeyPem };
    [alice, bob] = await Promise.all([identity(deviceCa, 'alice-iphone'), identity(deviceCa, 'bob-mac')]);
  });
  after(async function () {
    await Promise.all(clients.map((c) => c.stop()));
    await stub.close();
  });
  beforeEach(function () {
    stub.requests.length = 0;
    stub.listing = { status: 200, body: JSON.stringify({ invitations: [] }) };
    stub.listingFor.clear();
    stub.accepts.clear();
  });

  it('lists the invitations with the identity as TLS client certificate, keeping unknown fields out', async function () {
    stub.listingFor.set('alice-iphone', {
      status: 200,
      body: JSON.stringify({
        invitations: [
          { ...INVITATION, extra: 'added later' },
          { ...INVITATION, id: 'usage-2', status: 'registered' },
        ],
        more: true,
      }),
    });
    const list = await client(alice).list();
    expect(list).to.deep.equal([INVITATION, { ...INVITATION, id: 'usage-2', status: 'registered' }]);
    expect(stub.requests).to.deep.equal([
      { method: 'GET', path: '/selfservice/v1/invitations', authorized: true, clientCn: 'alice-iphone' },
    ]);
    // another device's identity: its own listing (here the empty default)
    expect(await client(bob).list()).to.deep.equal([]);
  });

  it('presents the leaf only, even when the identity PEM carries its chain', async function () {
    const bundle = `${alice.certPem.trim()}\n${pki.deviceCaCertPem}`;
    expect(leafCertificate(bundle)).to.equal(`${alice.certPem.trim()}\n`);
    expect(() => leafCertificate('nothing')).to.throw(/no PEM certificate/);
    stub.listingFor.set('alice-iphone', { status: 200, body: JSON.stringify({ invitations: [INVITATION] }) });
    expect(await client({ certPem: bundle, keyPem: alice.keyPem }).list()).to.have.length(1);
  });

  it('taps an invitation: POST …/{id}/accept answers the URL to open; another user’s id is 404', async function () {
    stub.accepts.set('usage 1/é', INVITATION.invitationUrl);
    const c = client(alice);
    expect(await c.accept('usage 1/é')).to.equal(INVITATION.invitationUrl);
    expect(stub.requests[0]).to.include({
      method: 'POST',
      path: `/selfservice/v1/invitations/${encodeURIComponent('usage 1/é')}/accept`,
      authorized: true,
    });
    expect(c.stats.accepts).to.equal(1);
    await expectError(c.accept('someone-else'), 'not_found', 404);
  });

  it('refuses answers that are not the contract', async function () {
    const c = client(alice);
    stub.listing = { status: 200, body: '<html>not json</html>' };
    await expectError(c.list(), 'invalid_response', 200);
    stub.listing = { status: 200, body: JSON.stringify({ items: [] }) };
    const e = await expectError(c.list(), 'invalid_response');
    expect(e.message).to.include('invitations');
    stub.listing = {
      status: 200,
      body: JSON.stringify({ invitations: [{ ...INVITATION, status: 'sent' }] }),
    };
    expect((await expectError(c.list(), 'invalid_response')).message).to.include('invitations.0.status');
    stub.listing = {
      status: 200,
      body: JSON.stringify({ invitations: [{ ...INVITATION, invitationUrl: 'nope' }] }),
    };
    await expectError(c.list(), 'invalid_response');
    stub.accepts.set('u', 'not a url');
    await expectError(c.accept('u'), 'invalid_response');
    stub.listing = { status: 500, body: 'boom' };
    await expectError(c.list(), 'http_error', 500);
  });

  it('gets 403 without a certificate the server trusts, and does not call without an identity', async function () {
    const otherCa = await generateKeyPair();
    const otherCaPem = createCaCertificate({
      subject: { CN: 'Other CA' },
      keyPem: otherCa.privateKeyPem,
      days: 1,
    });
    const stranger = await identity({ certPem: otherCaPem, keyPem: otherCa.privateKeyPem }, 'stranger');
    const e = await expectError(client(stranger).list(), 'forbidden', 403);
    expect(e.message).to.include('no valid device identity');
    expect(stub.requests[0]).to.include({ authorized: false, clientCn: 'stranger' });
    await expectError(client(null).list(), 'not_enrolled');
    expect(stub.requests).to.have.length(1);
  });

  it('reports a server it cannot reach or trust as a transport error', async function () {
    const untrusting = new SelfServiceClient({ baseUrl: stub.url, ca: pki.deviceCaCertPem, identity: alice });
    await expectError(untrusting.list(), 'transport', 0);
  });

  it('polls on an interval with jitter, reporting listings and newly pending invitations, until stopped', async function () {
    stub.listing = { status: 200, body: JSON.stringify({ invitations: [INVITATION] }) };
    const c = client(alice);
    const listings: SelfServiceListing[] = [];
    const errors: SelfServiceError[] = [];
    c.on('listing', (l) => listings.push(l));
    c.on('pollError', (e) => errors.push(e));
    c.start({ intervalMs: 30, jitter: 0.5, firstPoll: 'now' });
    expect(c.running).to.equal(true);
    await waitFor('3 listings', () => listings.length >= 3);
    stub.listing = { status: 503, body: 'busy' };
    await waitFor('a poll error', () => errors.length >= 1);
    await c.stop();
    const polls = c.stats.polls;
    expect(c.running).to.equal(false);
    expect(listings[0]?.udid).to.equal('DEVICE-1');
    expect(listings[0]?.newlyPending.map((i) => i.id)).to.deep.equal(['usage-1']);
    expect(listings[1]?.newlyPending).to.deep.equal([]);
    expect(listings[1]?.invitations).to.have.length(1);
    expect(errors[0]).to.include({ code: 'http_error', status: 503 });
    expect(c.stats.failures).to.be.at.least(1);
    expect(c.stats.byError.http_error).to.be.at.least(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(c.stats.polls, 'no poll after stop').to.equal(polls);
    expect(() => c.start({ intervalMs: 0 })).to.throw(RangeError);
  });

  it('is made for a device from its enrollment: server URL and identity', async function () {
    expect(serverBaseUrl('https://mdm.example:8443/mdm/connect')).to.equal('https://mdm.example:8443');
    expect(serverBaseUrl('https://mdm.example/prefix/mdm/connect')).to.equal('https://mdm.example/prefix');
    const state = initialState(randomSpec('ios'));
    const device = SimulatedDevice.fromState(
      {
        ...state,
        enrolled: true,
        identity: alice,
        server: {
          serverUrl: `${stub.url}/mdm/connect`,
          checkInUrl: `${stub.url}/mdm/checkin`,
          topic: 'com.apple.mgmt.External.x',
          signMessage: true,
          checkOutWhenRemoved: true,
          serverCapabilities: [],
          caPems: [],
        },
      },
      { stateDir: null, ca: pki.caCertPem },
    );
    stub.listingFor.set('alice-iphone', { status: 200, body: JSON.stringify({ invitations: [INVITATION] }) });
    const c = SelfServiceClient.forDevice(device, { ca: pki.caCertPem });
    expect(c.udid).to.equal(device.udid);
    expect(await c.list()).to.have.length(1);
    const never = SimulatedDevice.fromState(initialState(randomSpec('ios')), { stateDir: null, ca: '' });
    expect(() => SelfServiceClient.forDevice(never, { ca: pki.caCertPem })).to.throw(SelfServiceError);
    device.close();
    never.close();
  });
});
