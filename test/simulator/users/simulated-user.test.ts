import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { appleIdHash } from '../../../simulator/apple-vpp/id-hash.ts';
import type { SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import { SelfServiceClient } from '../../../simulator/selfservice/self-service-client.ts';
import {
  HttpInvitationActor,
  InProcessInvitationActor,
  inviteCodeOf,
} from '../../../simulator/users/invitation-actor.ts';
import type { InvitationActor } from '../../../simulator/users/invitation-actor.ts';
import { DEFAULT_OTHER_APPLE_ID, SimulatedUser } from '../../../simulator/users/simulated-user.ts';
import type { SimulatedUserOptions } from '../../../simulator/users/simulated-user.ts';
import type { BehaviourKind } from '../../../simulator/users/behaviour.ts';
import { FakeMdmServer, testPki } from '../helpers/fake-mdm-server.ts';
import type { TestPki } from '../helpers/fake-mdm-server.ts';
import { StubSelfService } from '../selfservice/stub-self-service.ts';
import { enrolledIphone, prompt, VppFixture, waitFor } from './helpers.ts';

describe('simulator/users: SimulatedUser acting on invitations', function () {
  let pki: TestPki;
  let vpp: VppFixture;
  let mdm: FakeMdmServer;
  let stub: StubSelfService;
  let http$: HttpInvitationActor;
  const agent = new https.Agent({ keepAlive: true });
  const users: SimulatedUser[] = [];
  const devices: SimulatedDevice[] = [];
  let n = 0;

  before(async function () {
    pki = await testPki();
    vpp = new VppFixture(pki);
    mdm = new FakeMdmServer(pki);
    stub = new StubSelfService(pki);
    await Promise.all([vpp.start(), mdm.start(), stub.start()]);
    http$ = new HttpInvitationActor({ ca: pki.caCertPem, timeoutMs: 5000, agent });
  });
  after(async function () {
    await Promise.all(users.map((u) => u.stop()));
    for (const d of devices) d.close();
    agent.destroy();
    await Promise.all([vpp.stop(), mdm.close(), stub.close()]);
  });

  /** A user with `count` enrolled iPhones and a fresh Apple registration. */
  async function person(
    kind: BehaviourKind,
    count = 1,
    extra: Partial<SimulatedUserOptions> = {},
  ): Promise<{ user: SimulatedUser; phones: SimulatedDevice[]; url: string; clientUserId: string }> {
    const clientUserId = `cu-${++n}`;
    const url = (await vpp.register([clientUserId])).get(clientUserId) ?? '';
    const phones = await Promise.all(Array.from({ length: count }, () => enrolledIphone(mdm)));
    devices.push(...phones);
    const user = new SimulatedUser({
      username: `simuser${n}`,
      appleId: `simuser${n}@icloud.example`,
      devices: phones,
      behaviour: { kind, delayMs: 40 },
      actor: http$,
      ...extra,
    });
    users.push(user);
    await user.start();
    return { user, phones, url, clientUserId };
  }

  it('accepts a prompt after its delay by posting the Apple page form with their own Apple ID', async function () {
    const { user, phones, url, clientUserId } = await person('accept');
    const phone = phones[0] as SimulatedDevice;
    // start() signed the store account in with the user's Apple ID
    expect(phone.spec.storeAccount).to.deep.equal({ active: true, appleIdHash: appleIdHash(user.appleId) });
    const seenAt = Date.now();
    const commandUuid = await prompt(mdm, phone, url);
    const inv = await waitFor('acted', () => user.report().invitations.find((i) => i.outcome !== 'pending'));
    expect(inv).to.include({
      key: inviteCodeOf(url),
      channel: 'prompt',
      udid: phone.udid,
      commandUuid,
      outcome: 'accepted',
      result: 'associated',
      appleId: user.appleId,
    });
    expect(inv.timeToActMs).to.be.at.least(40);
    expect(inv.actedAt).to.be.at.least(seenAt + 40);
    const apple = vpp.user(clientUserId);
    expect(apple).to.include({
      status: 'Associated',
      idHash: appleIdHash(user.appleId),
      appleId: user.appleId,
    });
    // a real page visit over HTTPS: the actor's connection to the Apple service is in its pool
    expect(Object.keys(agent.freeSockets).some((k) => k.includes(`:${vpp.service.port}:`))).to.equal(true);
    await waitFor('prompt dismissed', () => phone.invitations[0]?.handledAt !== null);
    expect(user.report()).to.deep.include({ prompts: 1, devicesPrompted: [phone.udid], notNowAnswers: 0 });
  });

  it('accepts with another Apple ID under wrong_apple_id', async function () {
    const { user, phones, url, clientUserId } = await person('wrong_apple_id');
    await prompt(mdm, phones[0] as SimulatedDevice, url);
    const inv = await waitFor('acted', () => user.report().invitations.find((i) => i.outcome !== 'pending'));
    expect(inv).to.include({ outcome: 'wrong_apple_id', appleId: DEFAULT_OTHER_APPLE_ID });
    expect(vpp.user(clientUserId)).to.include({
      status: 'Associated',
      idHash: appleIdHash(DEFAULT_OTHER_APPLE_ID),
    });
    // the device still reports the user's own Apple ID: the server can see the mismatch
    expect(phones[0]?.spec.storeAccount.appleIdHash).to.equal(appleIdHash(user.appleId));
    expect(appleIdHash(user.appleId)).to.not.equal(vpp.user(clientUserId)?.idHash);
  });

  it('declines on the page: the Apple user stays Registered', async function () {
    const { user, phones, url, clientUserId } = await person('decline');
    await prompt(mdm, phones[0] as SimulatedDevice, url);
    const inv = await waitFor('acted', () => user.report().invitations.find((i) => i.outcome !== 'pending'));
    expect(inv).to.include({ outcome: 'declined', result: 'declined' });
    expect(inv.appleId).to.equal(undefined);
    expect(vpp.user(clientUserId)).to.include({ status: 'Registered', declines: 1 });
  });

  it('ignores: nothing is scheduled and the prompt stays unhandled', async function () {
    const { user, phones, url, clientUserId } = await person('ignore');
    const phone = phones[0] as SimulatedDevice;
    await prompt(mdm, phone, url);
    expect(user.idle).to.equal(true);
    expect(await user.settle(200)).to.equal(true);
    expect(user.report().invitations).to.have.length(1);
    expect(user.report().invitations[0]).to.include({ outcome: 'ignored', channel: 'prompt' });
    expect(vpp.user(clientUserId)).to.include({ status: 'Registered', declines: 0 });
    expect(phone.invitations[0]?.handledAt).to.equal(null);
  });

  it('accepts once across two devices prompted for the same invitation', async function () {
    const { user, phones, url, clientUserId } = await person('accept', 2);
    const [a, b] = phones as [SimulatedDevice, SimulatedDevice];
    const accepted = vpp.service.stats().invitations;
    await prompt(mdm, a, url);
    await prompt(mdm, b, url);
    await waitFor('acted', () => user.report().invitations[0]?.outcome === 'accepted');
    await user.settle(2000);
    await prompt(mdm, b, url); // a resend after the acceptance: dismissed, not acted on
    await user.settle(2000);
    const stats = vpp.service.stats().invitations;
    expect(stats.accepted - accepted.accepted).to.equal(1);
    expect(stats.repeated - accepted.repeated).to.equal(0);
    const report = user.report();
    expect(report.invitations).to.have.length(1);
    expect(report.invitations[0]).to.include({ udid: a.udid, channel: 'prompt' });
    expect(report.invitations[0]?.devices).to.deep.equal([a.udid, b.udid]);
    expect(report.prompts).to.equal(3);
    expect(report.devicesPrompted).to.have.members([a.udid, b.udid]);
    for (const d of [a, b])
      expect(
        d.invitations.every((i) => i.handledAt !== null),
        d.udid,
      ).to.equal(true);
    expect(vpp.user(clientUserId)?.status).to.equal('Associated');
  });

  it('accepts through Self Service when it lists the invitation first, and only once', async function () {
    const { user, phones, url, clientUserId } = await person('accept', 2);
    const [a, b] = phones as [SimulatedDevice, SimulatedDevice];
    const listed = {
      id: `usage-${clientUserId}`,
      invitationId: 'inv-9',
      name: 'Staff',
      locationName: 'Main',
    };
    stub.listing = {
      status: 200,
      body: JSON.stringify({ invitations: [{ ...listed, status: 'pending', invitationUrl: url }] }),
    };
    stub.accepts.set(listed.id, url);
    stub.requests.length = 0;
    const client = SelfServiceClient.forDevice(b, { ca: pki.caCertPem, baseUrl: stub.url });
    user.attachSelfService(client);
    const before = vpp.service.stats().invitations.accepted;
    await client.pollOnce();
    await prompt(mdm, a, url); // the prompt arrives on the other device meanwhile
    await waitFor('acted', () => user.report().invitations[0]?.outcome === 'accepted');
    await client.pollOnce(); // still listed (pending) for a moment: not acted on again
    await user.settle(2000);
    expect(user.report().invitations).to.have.length(1);
    expect(user.report().invitations[0]).to.include({
      channel: 'self_service',
      udid: b.udid,
      selfServiceId: listed.id,
      outcome: 'accepted',
    });
    expect(stub.requests.filter((r) => r.method === 'POST').map((r) => r.path)).to.deep.equal([
      `/selfservice/v1/invitations/${listed.id}/accept`,
    ]);
    expect(vpp.service.stats().invitations.accepted - before).to.equal(1);
    expect(vpp.user(clientUserId)).to.include({ status: 'Associated', idHash: appleIdHash(user.appleId) });
    expect(a.invitations[0]?.handledAt).to.not.equal(null);
    expect(user.report().listings).to.equal(2);
    expect(() =>
      user.attachSelfService(
        new SelfServiceClient({ baseUrl: stub.url, ca: '', identity: () => null, udid: 'X' }),
      ),
    ).to.throw(/not a device of/);
  });

  it('answers NotNow in Setup Assistant the given number of times, then shows the prompt and accepts', async function () {
    const clientUserId = `cu-${++n}`;
    const url = (await vpp.register([clientUserId])).get(clientUserId) ?? '';
    const phone = await enrolledIphone(mdm);
    devices.push(phone);
    const user = new SimulatedUser({
      username: `simuser${n}`,
      appleId: `simuser${n}@icloud.example`,
      devices: [phone],
      behaviour: { kind: 'accept', delayMs: 10 },
      actor: http$,
      notNowTimes: new Map([[phone.udid, 2]]),
      setupAssistantRetryMs: { min: 20, max: 40 },
    });
    users.push(user);
    await user.start();
    expect(phone.spec.setupAssistant).to.equal(true);
    // the server offers the command again on each poll that follows a NotNow (here: queued again)
    const command = { RequestType: 'InviteToProgram', ProgramID: 'com.apple.cloudvpp', InvitationURL: url };
    const uuid = '0C6B1E2A-0000-4000-8000-00000000AAAA';
    phone.on('event', (e) => {
      if (e.type === 'connected' && phone.spec.setupAssistant) mdm.enqueue(uuid, command);
    });
    mdm.enqueue(uuid, command);
    await phone.connect('device');
    const inv = await waitFor(
      'accepted',
      () => user.report().invitations.find((i) => i.outcome === 'accepted'),
      5000,
    );
    expect(user.report().notNowAnswers).to.equal(2);
    expect(phone.spec.setupAssistant).to.equal(false);
    expect(inv).to.include({ channel: 'prompt', commandUuid: uuid });
    expect(vpp.user(clientUserId)?.status).to.equal('Associated');
    const statuses = mdm.connects
      .map((r) => /<key>Status<\/key>\s*<string>(\w+)<\/string>/.exec(r.body.toString())?.[1])
      .filter((s) => s !== 'Idle')
      .slice(-3);
    expect(statuses).to.deep.equal(['NotNow', 'NotNow', 'Acknowledged']);
  });

  it('acts on prompts a device showed before the user started', async function () {
    const clientUserId = `cu-${++n}`;
    const url = (await vpp.register([clientUserId])).get(clientUserId) ?? '';
    const phone = await enrolledIphone(mdm);
    devices.push(phone);
    await prompt(mdm, phone, url);
    const user = new SimulatedUser({
      username: `simuser${n}`,
      appleId: `simuser${n}@icloud.example`,
      devices: [phone],
      behaviour: { kind: 'accept', delayMs: 0 },
      actor: http$,
    });
    users.push(user);
    await user.start();
    await waitFor('accepted', () => user.report().invitations[0]?.outcome === 'accepted');
    expect(vpp.user(clientUserId)?.status).to.equal('Associated');
  });

  it('accepts in process when the service runs in the same process', async function () {
    const actor: InvitationActor = new InProcessInvitationActor(vpp.service);
    const { user, phones, url, clientUserId } = await person('accept', 1, { actor });
    const accepted = vpp.service.stats().invitations.accepted;
    await prompt(mdm, phones[0] as SimulatedDevice, url);
    await waitFor('acted', () => user.report().invitations[0]?.outcome === 'accepted');
    expect(vpp.user(clientUserId)).to.include({ status: 'Associated', idHash: appleIdHash(user.appleId) });
    expect(vpp.service.stats().invitations.accepted - accepted).to.equal(1);
    expect(await actor.accept('https://x.test/register/abc', 'a@b.test')).to.include({ outcome: 'error' });
    expect(await actor.decline(url)).to.deep.equal({ outcome: 'already_associated', status: 0 });
  });

  it('records a failure when the page refuses, and follows a redirect to the Apple page', async function () {
    const { user, phones } = await person('accept');
    const unknown = vpp.service.invitationUrl('0123456789abcdef0123456789abcdef');
    await prompt(mdm, phones[0] as SimulatedDevice, unknown);
    const inv = await waitFor('acted', () => user.report().invitations.find((i) => i.outcome !== 'pending'));
    expect(inv).to.include({ outcome: 'failed', result: 'not_found' });
    expect(user.report().errors).to.have.length(1);

    // an MDM server's registration link that redirects (303) to the Apple page
    const clientUserId = `cu-${++n}`;
    const url = (await vpp.register([clientUserId])).get(clientUserId) ?? '';
    const redirector = http.createServer((_req, res) => res.writeHead(303, { location: url }).end());
    await new Promise<void>((r) => redirector.listen(0, '127.0.0.1', r));
    try {
      const link = `http://127.0.0.1:${(redirector.address() as AddressInfo).port}/register/code-1`;
      expect(await http$.accept(link, 'via.redirect@icloud.example')).to.deep.equal({
        outcome: 'associated',
        status: 200,
      });
      expect(vpp.user(clientUserId)?.idHash).to.equal(appleIdHash('via.redirect@icloud.example'));
      // the first Apple ID stays: a second one is refused (409)
      expect(await http$.accept(url, 'someone.else@icloud.example')).to.deep.equal({
        outcome: 'kept_first_apple_id',
        status: 409,
      });
      const notPage = await http$.accept(`${stub.url}/selfservice/v1/invitations`, 'x@y.test');
      expect(notPage.outcome).to.equal('error');
    } finally {
      redirector.close();
      redirector.closeAllConnections();
    }
  });
});
