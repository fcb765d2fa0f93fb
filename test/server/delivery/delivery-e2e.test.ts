/**
 * End to end: the real server, the simulator's APNs gateway and Apps and Books service, simulated
 * devices (iOS and macOS) and simulated users. `prompt_and_self_service` prompts every eligible device,
 * the user accepts once, the other prompts are withdrawn; `self_service_only` sends nothing and lists;
 * NotNow is retried; a device assigned later is prompted; Self Service answers only the device's own.
 */
import { expect } from 'chai';
import {
  randomSpec,
  seededRng,
  type DeviceSpec,
  type Platform,
} from '../../../simulator/device/device-spec.ts';
import type { ChannelName, SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import { encodeCommandReport } from '../../../shared/mdm/index.ts';
import { leafCertificate } from '../../../simulator/selfservice/self-service-client.ts';
import { HttpInvitationActor, InProcessInvitationActor } from '../../../simulator/users/invitation-actor.ts';
import { SimulatedUser } from '../../../simulator/users/simulated-user.ts';
import { deliveryFixture, waitFor, type DeliveryFixture, type UsageItemJson } from './helpers.ts';

const rng = seededRng(2024);

function spec(
  platform: Platform,
  extra: Partial<DeviceSpec> & { shortName?: string; console?: boolean } = {},
): DeviceSpec {
  const { shortName, console: withConsole, ...rest } = extra;
  const s = randomSpec(platform, rng, { consoleUser: withConsole !== false });
  if (platform === 'macos' && s.consoleUser && shortName !== undefined) {
    s.consoleUser = { ...s.consoleUser, shortName };
  }
  return { ...s, ...rest };
}

/** The channel of a device that InviteToProgram goes to (iOS: device, macOS: user). */
const promptChannel = (d: SimulatedDevice): ChannelName => (d.spec.platform === 'macos' ? 'user' : 'device');

const byEnrollment = (a: { enrollmentId: string }, b: { enrollmentId: string }) =>
  a.enrollmentId.localeCompare(b.enrollmentId);

function devicesOf(item: UsageItemJson | undefined): [string, string, string | null][] {
  return [...(item?.devices ?? [])].sort(byEnrollment).map((d) => [d.udid, d.enrollmentId, d.commandStatus]);
}

async function inBatches<T, R>(items: readonly T[], size: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size)
    out.push(...(await Promise.all(items.slice(i, i + size).map(fn))));
  return out;
}

describe('device delivery end to end (prompts, accept once, Self Service)', function () {
  this.timeout(300_000);
  let f: DeliveryFixture;
  let locationId: string;
  const users: SimulatedUser[] = [];

  before(async () => {
    // a short sweep, so that a command whose NotNow was not followed by a poll is pushed again
    f = await deliveryFixture({ MDM_PUSH_SWEEP_SECONDS: '10' });
    locationId = await f.addLocation();
  });

  after(async () => {
    await Promise.all(users.map((u) => u.stop()));
    await f?.cleanup();
  });

  const scope = (userIds: string[]) => ({
    allUsers: false,
    userIds,
    groupIds: [],
    exclusions: { userIds: [], groupIds: [] },
  });

  async function invite(method: string, userIds: string[]): Promise<string> {
    return f.createInvitation({
      name: `${method} ${userIds.length}`,
      locationId,
      distributionMethod: method,
      scope: scope(userIds),
    });
  }

  async function usageOf(invitationId: string, userId: string): Promise<UsageItemJson | undefined> {
    return (await f.usage(invitationId)).find((u) => u.userId === userId);
  }

  async function usageWhen(
    invitationId: string,
    userId: string,
    what: string,
    ok: (u: UsageItemJson) => boolean,
    timeoutMs = 60_000,
  ): Promise<UsageItemJson> {
    return waitFor(
      `${what} (user ${userId})`,
      async () => {
        const u = await usageOf(invitationId, userId);
        return u && ok(u) ? u : undefined;
      },
      timeoutMs,
    );
  }

  const connected = (d: SimulatedDevice, channel: ChannelName) =>
    d.snapshot().channels[channel === 'device' ? 'device' : 'user']?.lastConnectAt != null;

  it('50 users with 1-3 devices: every eligible device prompted, one acceptance registers, the other prompts are withdrawn', async () => {
    interface Person {
      username: string;
      id: string;
      accepts: boolean;
      devices: SimulatedDevice[];
    }
    const people: Person[] = [];
    const specs: { person: number; spec: DeviceSpec }[] = [];
    for (let i = 0; i < 50; i++) {
      const username = `pupil${i}`;
      const id = await f.addUser(username, { email: `${username}@example.com` });
      people.push({ username, id, accepts: i % 5 !== 4, devices: [] });
      for (let j = 0; j < 1 + (i % 3); j++) {
        const mac = (i + j) % 2 === 1;
        // most Macs have the user at the console; some another account (the console user's channel then)
        const s = mac ? spec('macos', { shortName: i % 7 === 0 ? `console${i}` : username }) : spec('ios');
        specs.push({ person: i, spec: s });
      }
    }
    const enrolled = await inBatches(specs, 8, async ({ person, spec: s }) => ({
      person,
      device: await f.enroll(s),
    }));
    for (const { person, device } of enrolled) people[person]?.devices.push(device);
    await inBatches(
      people.flatMap((p) => p.devices.map((d) => ({ p, d }))),
      16,
      ({ p, d }) => f.assign(d, p.id),
    );
    // the first device of each user is online; the others stay offline until the user is done
    for (const p of people) {
      const [first] = p.devices;
      if (first) f.online(first);
      const user = new SimulatedUser({
        username: p.username,
        appleId: `${p.username}@icloud.example`,
        devices: p.devices,
        behaviour: { kind: p.accepts ? 'accept' : 'ignore', delayMs: 0 },
        actor: new HttpInvitationActor({ ca: f.pki.caCertPem }),
        rng,
      });
      await user.start();
      users.push(user);
    }

    const invitationId = await invite(
      'prompt_and_self_service',
      people.map((p) => p.id),
    );

    // accepting users end registered, the others acknowledged (the prompt was shown on their first device)
    for (const p of people) {
      await usageWhen(
        invitationId,
        p.id,
        p.accepts ? 'registered' : 'acknowledged',
        (u) => u.status === (p.accepts ? 'registered' : 'acknowledged'),
      );
    }
    // the offline devices' prompts of accepting users are withdrawn
    const expectedWhileOffline = (p: Person) =>
      p.devices
        .map((d, k) => ({
          udid: d.enrollmentId(),
          enrollmentId: d.enrollmentId(promptChannel(d)),
          status: k === 0 ? 'acknowledged' : p.accepts ? 'withdrawn' : 'queued',
        }))
        .sort(byEnrollment)
        .map((e) => [e.udid, e.enrollmentId, e.status]);
    for (const p of people) {
      await usageWhen(
        invitationId,
        p.id,
        'the withdrawals',
        (u) => JSON.stringify(devicesOf(u)) === JSON.stringify(expectedWhileOffline(p)),
      );
    }
    // every eligible channel was pushed, the offline ones too
    for (const p of people) {
      for (const d of p.devices) {
        expect((f.accepted.get(d.pushInfo(promptChannel(d)).token) ?? []).length, d.udid).to.be.above(0);
      }
    }

    // now the other devices come online: accepting users' get nothing, the others' show the prompt
    for (const p of people) for (const d of p.devices.slice(1)) f.online(d);
    for (const p of people) {
      for (const d of p.devices.slice(1)) {
        await waitFor(`${d.udid} connects`, () => connected(d, promptChannel(d)));
      }
    }
    for (const p of people.filter((x) => !x.accepts)) {
      await usageWhen(
        invitationId,
        p.id,
        'every prompt acknowledged',
        (u) =>
          u.devices.length === p.devices.length && u.devices.every((d) => d.commandStatus === 'acknowledged'),
      );
    }

    // exact usage for every user
    const usage = await f.usage(invitationId);
    expect(usage).to.have.length(50);
    for (const p of people) {
      const item = usage.find((u) => u.userId === p.id);
      expect(item?.status, p.username).to.equal(p.accepts ? 'registered' : 'acknowledged');
      expect(item?.reason, p.username).to.equal(null);
      expect(item?.sentAt, p.username).to.be.a('string');
      const expected = p.devices
        .map(
          (d, k) =>
            [
              d.enrollmentId(),
              d.enrollmentId(promptChannel(d)),
              k === 0 || !p.accepts ? 'acknowledged' : 'withdrawn',
            ] as [string, string, string],
        )
        .sort((a, b) => a[1].localeCompare(b[1]));
      expect(devicesOf(item), p.username).to.deep.equal(expected);
      if (!p.accepts) expect(item?.lastAction, p.username).to.match(/^InviteToProgram acknowledged on /);
      // one prompt per device at most; withdrawn ones were never shown, and show as withdrawn to admins
      for (const [k, d] of p.devices.entries()) {
        const shown = d.invitations.filter((i) => i.status === 'Acknowledged');
        expect(shown.length, d.udid).to.equal(k === 0 || !p.accepts ? 1 : 0);
        const invites = (await f.commandsOf(d)).filter((c) => c.requestType === 'InviteToProgram');
        expect(
          invites.map((c) => c.status),
          d.udid,
        ).to.deep.equal([k === 0 || !p.accepts ? 'acknowledged' : 'withdrawn']);
      }
    }
    // each accepting user acted once, on the device that showed the prompt
    for (const u of users.slice(0, 50)) {
      const r = u.report();
      const accepted = r.invitations.filter((i) => i.outcome === 'accepted');
      expect(accepted.length, r.username).to.equal(u.behaviour.kind === 'accept' ? 1 : 0);
    }
    // Self Service shows it registered on every device of an accepting user
    const someone = people[0];
    for (const d of someone?.devices ?? []) {
      const listing = await f.selfService(d).list();
      expect(listing.map((l) => [l.status, l.id])).to.deep.equal([
        ['registered', (await usageOf(invitationId, someone?.id ?? ''))?.id],
      ]);
    }
  });

  it('two invitations of one location and a resend share one pending prompt per device; one acceptance registers both', async () => {
    const userId = await f.addUser('shared.prompt');
    const phone = await f.enroll(spec('ios')); // offline: its prompt stays pending
    await f.assign(phone, userId);
    const first = await invite('prompt_and_self_service', [userId]);
    const u1 = await usageWhen(first, userId, 'queued', (x) => x.devices[0]?.commandStatus === 'queued');
    const second = await invite('prompt_and_self_service', [userId]);
    const u2 = await usageWhen(second, userId, 'sent', (x) => x.status === 'sent');
    const resendAt = Date.now();
    const resent = await f.ts.api('POST', `/vpp-invitations/${first}/resend`, {});
    expect(resent.status, resent.text).to.equal(200);
    expect(resent.json()).to.deep.equal({ resent: 1 });
    await usageWhen(
      first,
      userId,
      'the resend handled',
      (x) =>
        x.lastAction?.startsWith('InviteToProgram') === true && Date.parse(x.lastActionAt ?? '') >= resendAt,
    );
    const uuid = u1.devices[0]?.commandUuid;
    expect(u2.devices.map((d) => d.commandUuid)).to.deep.equal([uuid]);
    expect((await usageOf(first, userId))?.devices.map((d) => d.commandUuid)).to.deep.equal([uuid]);
    const invites = (await f.commandsOf(phone)).filter((c) => c.requestType === 'InviteToProgram');
    expect(invites.map((c) => [c.commandUuid, c.status])).to.deep.equal([[uuid, 'queued']]);
    // the user accepts (from the link): both invitations registered, the one prompt withdrawn
    const url = u1.invitationUrl ?? '';
    expect(
      (await new InProcessInvitationActor(f.service).accept(url, 'shared@icloud.example')).outcome,
    ).to.equal('associated');
    for (const id of [first, second]) {
      const u = await usageWhen(
        id,
        userId,
        'registered and withdrawn',
        (x) => x.status === 'registered' && x.devices[0]?.commandStatus === 'withdrawn',
      );
      expect(u.devices).to.have.length(1);
    }
    f.online(phone);
    await waitFor('the device connects', () => connected(phone, 'device'));
    expect(phone.invitations).to.deep.equal([]);
  });

  it('Macs without a user channel, User Enrollment and iOS 6 devices are skipped, with the reason', async () => {
    const ids = {
      mac: await f.addUser('skip.mac'),
      ue: await f.addUser('skip.ue'),
      old: await f.addUser('skip.old'),
      mixed: await f.addUser('skip.mixed'),
      none: await f.addUser('skip.none'),
      partly: await f.addUser('skip.partly'),
    };
    const ios6 = () => spec('ios', { osVersion: '6.1.3', buildVersion: '10B329' });
    const devices = {
      mac: await f.enroll(spec('macos', { console: false })),
      ue: await f.enroll(randomSpec('ios', rng, { userEnrollment: true })),
      old: await f.enroll(ios6()),
      mixedOld: await f.enroll(ios6()),
      mixedUe: await f.enroll(randomSpec('ipados', rng, { userEnrollment: true })),
      partlyOld: await f.enroll(ios6()),
      partlyNew: await f.enroll(spec('ios')),
    };
    for (const d of Object.values(devices)) f.online(d);
    await f.assign(devices.mac, ids.mac);
    await f.assign(devices.ue, ids.ue);
    await f.assign(devices.old, ids.old);
    await f.assign(devices.mixedOld, ids.mixed);
    await f.assign(devices.mixedUe, ids.mixed);
    await f.assign(devices.partlyOld, ids.partly);
    await f.assign(devices.partlyNew, ids.partly);
    const before = new Map(
      Object.values(devices).map((d) => [d.udid, f.accepted.get(d.pushInfo().token)?.length ?? 0]),
    );

    const invitationId = await invite('prompt_and_self_service', Object.values(ids));
    const expected: [string, string][] = [
      [ids.mac, 'no_user_channel'],
      [ids.ue, 'user_enrollment_not_supported'],
      [ids.old, 'os_too_old'],
      [ids.mixed, 'no_eligible_device'],
      [ids.none, 'no_device'],
    ];
    for (const [userId, reason] of expected) {
      const u = await usageWhen(invitationId, userId, reason, (x) => x.status === 'skipped');
      expect([u.status, u.reason, u.devices]).to.deep.equal(['skipped', reason, []]);
      expect(u.sentAt).to.equal(null);
    }
    const partly = await usageWhen(
      invitationId,
      ids.partly,
      'acknowledged',
      (x) => x.status === 'acknowledged',
    );
    expect(devicesOf(partly)).to.deep.equal([
      [devices.partlyNew.udid, devices.partlyNew.udid, 'acknowledged'],
    ]);
    expect(partly.reason).to.equal(null);
    // nothing was queued or pushed for the skipped devices
    for (const d of [
      devices.mac,
      devices.ue,
      devices.old,
      devices.mixedOld,
      devices.mixedUe,
      devices.partlyOld,
    ]) {
      expect(
        (await f.commandsOf(d)).filter((c) => c.requestType === 'InviteToProgram'),
        d.udid,
      ).to.deep.equal([]);
      expect(f.accepted.get(d.pushInfo().token)?.length ?? 0, d.udid).to.equal(before.get(d.udid));
      expect(d.invitations).to.deep.equal([]);
    }
  });

  it('NotNow (Setup Assistant): the command stays queued, then succeeds when the device polls or the sweep pushes', async () => {
    const polls = await f.addUser('notnow.polls');
    const sweep = await f.addUser('notnow.sweep');
    const a = await f.enroll(spec('ios', { setupAssistant: true }));
    const b = await f.enroll(spec('ios', { setupAssistant: true }));
    f.online(a);
    f.online(b);
    await f.assign(a, polls);
    await f.assign(b, sweep);
    const invitationId = await invite('prompt_and_self_service', [polls, sweep]);
    for (const userId of [polls, sweep]) {
      const u = await usageWhen(
        invitationId,
        userId,
        'NotNow',
        (x) => x.devices[0]?.commandStatus === 'not_now',
      );
      expect(u.status).to.equal('sent');
    }
    expect(a.wantsToPoll()).to.equal(true);
    // Setup Assistant ends: a polls by itself (its last status was NotNow) ...
    await a.setSetupAssistant(false);
    await a.pollIfPending();
    const ua = await usageWhen(invitationId, polls, 'acknowledged', (x) => x.status === 'acknowledged');
    expect(devicesOf(ua)).to.deep.equal([[a.udid, a.udid, 'acknowledged']]);
    // ... b does not poll: the push sweep wakes it again
    await b.setSetupAssistant(false);
    const ub = await usageWhen(
      invitationId,
      sweep,
      'acknowledged after the sweep',
      (x) => x.status === 'acknowledged',
      90_000,
    );
    expect(devicesOf(ub)).to.deep.equal([[b.udid, b.udid, 'acknowledged']]);
    expect(b.invitations.map((i) => i.status)).to.deep.equal(['Acknowledged']);
  });

  it('a prompt served on a connect and not answered yet reads `sent` in the usage, then acknowledged', async () => {
    const userId = await f.addUser('served.not.answered');
    const phone = await f.enroll(spec('ios')); // offline: it does not connect when pushed
    await f.assign(phone, userId);
    const invitationId = await invite('prompt_and_self_service', [userId]);
    const queued = await usageWhen(invitationId, userId, 'prompt queued', (x) => x.devices.length === 1);
    expect(devicesOf(queued)).to.deep.equal([[phone.udid, phone.udid, 'queued']]);

    // The device says Idle and is handed the command, and answers nothing yet.
    const idle = Buffer.from(encodeCommandReport({ ...phone.channelKeys('device'), Status: 'Idle' }), 'utf8');
    const served = await f.ts.request('PUT', '/mdm/connect', {
      body: idle,
      headers: {
        'content-type': 'application/x-apple-aspen-mdm',
        'mdm-signature': phone.signBody(idle) ?? '',
      },
    });
    expect(served.status, served.text).to.equal(200);
    expect(served.text).to.include('InviteToProgram');
    const sent = await usageOf(invitationId, userId);
    expect(devicesOf(sent)).to.deep.equal([[phone.udid, phone.udid, 'sent']]);
    const commands = await f.ts.api('GET', `/devices/${phone.udid}/commands`);
    expect(
      commands
        .json<{ items: { requestType: string; status: string }[] }>()
        .items.map((c) => [c.requestType, c.status]),
    ).to.deep.include(['InviteToProgram', 'sent']);

    // Its next connect gets it again and answers it.
    await phone.connect('device');
    const done = await usageWhen(invitationId, userId, 'acknowledged', (x) => x.status === 'acknowledged');
    expect(devicesOf(done)).to.deep.equal([[phone.udid, phone.udid, 'acknowledged']]);
  });

  it('a device assigned after sending gets its prompt (by the admin, and a Mac by its console user)', async () => {
    const later = await f.addUser('assigned.later');
    const macUser = await f.addUser('mac.console');
    const invitationId = await invite('prompt_and_self_service', [later, macUser]);
    for (const userId of [later, macUser]) {
      const u = await usageWhen(invitationId, userId, 'no_device', (x) => x.status === 'skipped');
      expect(u.reason).to.equal('no_device');
    }
    const phone = await f.enroll(spec('ios'));
    f.online(phone);
    await f.assign(phone, later);
    const u = await usageWhen(invitationId, later, 'acknowledged', (x) => x.status === 'acknowledged');
    expect(devicesOf(u)).to.deep.equal([[phone.udid, phone.udid, 'acknowledged']]);
    expect(u.reason).to.equal(null);
    expect(u.sentAt).to.be.a('string');
    // a Mac whose console user is the user: assigned automatically, prompted on that user's channel
    const mac = await f.enroll(spec('macos', { shortName: 'mac.console' }));
    f.online(mac);
    const m = await usageWhen(
      invitationId,
      macUser,
      'acknowledged on the Mac',
      (x) => x.status === 'acknowledged',
    );
    expect(devicesOf(m)).to.deep.equal([[mac.udid, mac.enrollmentId('user'), 'acknowledged']]);
    expect(mac.invitations.map((i) => i.channel)).to.deep.equal(['user']);
  });

  it('self_service_only: no command and no push; listed on every device of the user; tapped; registered', async () => {
    const k = await f.addUser('selfservice.k');
    const nobody = await f.addUser('selfservice.none');
    // a user whose only device has checked out: Self Service would refuse it, so nothing is listed
    const departed = await f.addUser('selfservice.departed');
    const gone = await f.enroll(spec('ios'));
    await f.assign(gone, departed);
    await gone.checkOut();
    const phone = await f.enroll(spec('ios'));
    const mac = await f.enroll(spec('macos', { shortName: 'someone.else' }));
    for (const d of [phone, mac]) {
      f.online(d);
      await f.assign(d, k);
    }
    const pushesBefore = [phone, mac].map((d) =>
      d.channels.map((c) => f.accepted.get(d.pushInfo(c).token)?.length ?? 0),
    );
    const invitationId = await invite('self_service_only', [k, nobody, departed]);
    // listed in Self Service on both devices: that is `sent` for this method, before any device looks
    const pending = await usageWhen(invitationId, k, 'listed in Self Service', (x) => x.status === 'sent');
    expect([pending.lastAction, pending.devices]).to.deep.equal(['Listed in Self Service on 2 devices', []]);
    expect(pending.sentAt).to.be.a('string');
    for (const userId of [nobody, departed]) {
      const none = await usageWhen(invitationId, userId, 'skipped', (x) => x.status === 'skipped');
      expect([none.reason, none.sentAt]).to.deep.equal(['no_device', null]);
    }

    // a device lists it: still `sent`, sent when the fan-out listed it
    const onPhone = await f.selfService(phone).list();
    expect(onPhone).to.have.length(1);
    const item = onPhone[0];
    expect(item).to.include({
      id: pending.id,
      invitationId,
      status: 'pending',
      invitationUrl: pending.invitationUrl,
    });
    expect(item?.locationName).to.be.a('string').and.not.equal('');
    const sent = await usageOf(invitationId, k);
    expect([sent?.status, sent?.sentAt]).to.deep.equal(['sent', pending.sentAt]);
    expect(await f.selfService(mac).list()).to.deep.equal(onPhone);

    // the user taps it on the Mac: acknowledged, and the URL to open
    const url = await f.selfService(mac).accept(item?.id ?? '');
    expect(url).to.equal(item?.invitationUrl);
    const tapped = await usageOf(invitationId, k);
    expect(tapped?.status).to.equal('acknowledged');
    expect(tapped?.lastAction).to.match(/^Tapped in Self Service on .+ /);
    // the user accepts with an Apple ID: registered, still listed, as registered
    const result = await new InProcessInvitationActor(f.service).accept(url, 'k@icloud.example');
    expect(result.outcome).to.equal('associated');
    await usageWhen(invitationId, k, 'registered', (x) => x.status === 'registered');
    for (const d of [phone, mac]) {
      expect((await f.selfService(d).list()).map((l) => l.status)).to.deep.equal(['registered']);
    }
    // never a command or a push
    for (const [i, d] of [phone, mac].entries()) {
      expect((await f.commandsOf(d)).filter((c) => c.requestType === 'InviteToProgram')).to.deep.equal([]);
      expect(d.channels.map((c) => f.accepted.get(d.pushInfo(c).token)?.length ?? 0)).to.deep.equal(
        pushesBefore[i],
      );
    }
  });

  it('Self Service authorisation: 403 without a device certificate, 404 for another user’s invitation, empty without a user', async () => {
    const owner = await f.addUser('auth.owner');
    const other = await f.addUser('auth.other');
    const mine = await f.enroll(spec('ios'));
    const theirs = await f.enroll(spec('ios'));
    const unassigned = await f.enroll(spec('ios'));
    await f.assign(mine, owner);
    await f.assign(theirs, other);
    const invitationId = await invite('self_service_only', [owner, other]);
    const ownerUsage = await usageWhen(
      invitationId,
      owner,
      'listed in Self Service',
      (x) => x.status === 'sent',
    );
    await usageWhen(invitationId, other, 'listed in Self Service', (x) => x.status === 'sent');

    // no certificate at all
    const bare = await f.ts.request('GET', '/selfservice/v1/invitations');
    expect(bare.status).to.equal(403);
    expect(bare.json<{ error: { code: string } }>().error.code).to.equal('no_identity');
    const bareAccept = await f.ts.request('POST', `/selfservice/v1/invitations/${ownerUsage.id}/accept`);
    expect(bareAccept.status).to.equal(403);
    // a certificate that is not a device identity (the simulator's TLS certificate, another CA)
    const foreign = await f.ts.request('GET', '/selfservice/v1/invitations', {
      cert: f.pki.simulatorCertPem,
      key: f.pki.simulatorKeyPem,
    });
    expect(foreign.status).to.equal(403);
    // the identity of a device, presented as the TLS client certificate
    const identity = mine.snapshot().identity;
    const ok = await f.ts.request('GET', '/selfservice/v1/invitations', {
      cert: leafCertificate(identity?.certPem ?? ''),
      key: identity?.keyPem ?? '',
    });
    expect(ok.status).to.equal(200);
    expect(ok.json<{ invitations: { id: string }[] }>().invitations.map((i) => i.id)).to.deep.equal([
      ownerUsage.id,
    ]);

    // another user's invitation, an unknown one, a malformed id: 404 (and nothing recorded)
    const theirClient = f.selfService(theirs);
    const theirId = (await theirClient.list())[0]?.id ?? '';
    expect(theirId).to.not.equal(ownerUsage.id);
    for (const id of [ownerUsage.id, '999999999', 'abc']) {
      const err = await theirClient.accept(id).then(
        () => null,
        (e: unknown) => e,
      );
      expect((err as { code?: string } | null)?.code, id).to.equal('not_found');
    }
    expect((await usageOf(invitationId, owner))?.status).to.equal('sent'); // listed, never tapped
    // a device with no user: an empty list
    expect(await f.selfService(unassigned).list()).to.deep.equal([]);
  });
});
