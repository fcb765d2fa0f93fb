import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import express from 'express';
import { randomSpec, seededRng } from '../../../simulator/device/device-spec.ts';
import { initialState, listStates } from '../../../simulator/device/device-state.ts';
import { SimulatedDevice } from '../../../simulator/device/sim-device.ts';
import { AdminDirectoryClient, AdminApiError } from '../../../simulator/users/admin-directory-client.ts';
import type { InvitationActor } from '../../../simulator/users/invitation-actor.ts';
import { USER_MAP_FILE, UserPopulation } from '../../../simulator/users/user-population.ts';
import type { UserPopulationOptions } from '../../../simulator/users/user-population.ts';
import { formatUsersSummary, summarizeUsers } from '../../../simulator/users/user-summary.ts';
import type { UserReport } from '../../../simulator/users/simulated-user.ts';

const noActor: InvitationActor = {
  accept: () => Promise.resolve({ outcome: 'error', status: 0 }),
  decline: () => Promise.resolve({ outcome: 'error', status: 0 }),
};

let seed = 1;
function device(enrolled = false): SimulatedDevice {
  const state = initialState(randomSpec('ios', seededRng(seed++), { storeAccountShare: 1 }));
  return SimulatedDevice.fromState(
    enrolled
      ? {
          ...state,
          enrolled: true,
          identity: { certPem: 'unused', keyPem: 'unused' },
          server: {
            serverUrl: 'https://127.0.0.1:1/mdm/connect',
            checkInUrl: 'https://127.0.0.1:1/mdm/checkin',
            topic: 't',
            signMessage: true,
            checkOutWhenRemoved: true,
            serverCapabilities: [],
            caPems: [],
          },
        }
      : state,
    { stateDir: null, ca: '' },
  );
}

function options(stateDir: string | null, over: Partial<UserPopulationOptions> = {}): UserPopulationOptions {
  return {
    stateDir,
    users: 3,
    devicesPerUser: { min: 1, max: 3 },
    probabilities: { accept: 0.8, ignore: 0.1, decline: 0.05, wrongAppleId: 0.05 },
    acceptDelayMs: { min: 10, max: 20 },
    notNowShare: 0,
    selfServiceIntervalMs: 0,
    actor: noActor,
    ca: '',
    rng: seededRng(11),
    ...over,
  };
}

describe('simulator/users: the user population', function () {
  let tmp: string;
  beforeEach(async function () {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'sim-users-'));
  });
  afterEach(async function () {
    await rm(tmp, { recursive: true, force: true });
  });

  it('deals devices 1-3 per user, keeps the map in the state dir, and gives the same users and devices on a rerun', async function () {
    const fleet = Array.from({ length: 7 }, () => device());
    const p = await UserPopulation.load(options(tmp));
    const dealt = await p.deal(fleet);
    expect(dealt.users).to.equal(3);
    const owners = new Map<string, string>();
    for (const e of p.active) {
      expect(e.udids.length).to.be.at.most(e.deviceTarget);
      expect(e.deviceTarget).to.be.within(1, 3);
      for (const u of e.udids) {
        expect(owners.has(u), `${u} has one owner`).to.equal(false);
        owners.set(u, e.username);
      }
    }
    expect(p.active.map((e) => e.username)).to.deep.equal(['simuser0001', 'simuser0002', 'simuser0003']);
    expect(p.active[0]).to.include({ appleId: 'simuser0001@icloud.example', fullName: 'Simulated User 1' });
    expect(dealt.devicesAssigned).to.equal(owners.size);
    expect(dealt.devicesUnassigned).to.equal(7 - owners.size);
    // not mistaken for a device state
    expect(await listStates(tmp)).to.deep.equal([]);
    const saved = JSON.parse(await readFile(path.join(tmp, USER_MAP_FILE), 'utf8')) as { users: unknown[] };
    expect(saved.users).to.have.length(3);

    // a rerun (another seed even) with two more users and three more devices: nobody loses a device
    const again = await UserPopulation.load(options(tmp, { users: 5, rng: seededRng(99) }));
    const more = [...fleet, device(), device(), device()];
    await again.deal(more);
    for (const e of again.active.slice(0, 3)) {
      for (const u of p.active.find((x) => x.username === e.username)?.udids ?? [])
        expect(e.udids).to.include(u);
    }
    expect(again.active.map((e) => e.username)).to.deep.equal([
      'simuser0001',
      'simuser0002',
      'simuser0003',
      'simuser0004',
      'simuser0005',
    ]);
    const all = again.active.flatMap((e) => e.udids);
    expect(new Set(all).size).to.equal(all.length);
  });

  it('creates the users on the server (or finds them) and assigns their enrolled devices', async function () {
    const calls: string[] = [];
    const app = express();
    app.use(express.json());
    app.post('/api/v1/users', (req, res) => {
      const body = req.body as { username: string; fullName: string; email: string };
      calls.push(`POST ${body.username} ${body.fullName} ${body.email} ${req.headers.authorization}`);
      if (body.username === 'simuser0002') {
        res.status(409).json({ error: { code: 'username_taken', message: 'taken' } });
        return;
      }
      res.status(201).json({ id: `id-${body.username}`, username: body.username });
    });
    app.get('/api/v1/users', (req, res) => {
      calls.push(`GET ${String(req.query.q)}`);
      res.json({ items: [{ id: '77', username: 'SimUser0002' }] });
    });
    app.put('/api/v1/devices/:udid/user', (req, res) => {
      if (req.params.udid === 'unknown') {
        res.status(404).json({ error: { code: 'not_found', message: 'device not found' } });
        return;
      }
      calls.push(`PUT ${req.params.udid} ${(req.body as { userId: string }).userId}`);
      res.json({ udid: req.params.udid });
    });
    const server = http.createServer(app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const admin = new AdminDirectoryClient({
        server: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
        adminToken: 'tok',
        ca: '',
      });
      const fleet = [device(true), device(true), device(false), device(true), device(true), device(true)];
      const p = await UserPopulation.load(options(tmp, { devicesPerUser: { min: 2, max: 2 } }));
      await p.deal(fleet);
      const r = await p.provision(admin, fleet, 2);
      expect(r).to.deep.equal({ created: 2, existing: 1, assigned: 5, failures: [] });
      expect(calls).to.include('POST simuser0001 Simulated User 1 simuser0001@users.sim.example Bearer tok');
      expect(calls).to.include('GET simuser0002');
      expect(p.active.map((e) => e.serverUserId)).to.deep.equal(['id-simuser0001', '77', 'id-simuser0003']);
      const puts = calls.filter((c) => c.startsWith('PUT'));
      expect(puts).to.have.length(5);
      expect(puts).to.include(`PUT ${fleet[0]?.udid} id-simuser0001`);
      expect(puts.some((c) => c.includes(fleet[2]?.udid ?? '-'))).to.equal(false); // not enrolled
      // the ids are kept in the map
      const saved = await readFile(path.join(tmp, USER_MAP_FILE), 'utf8');
      expect(saved).to.include('"serverUserId": "77"');
      await expectReject(admin.assignDevice('unknown', 'u'));
    } finally {
      server.close();
      server.closeAllConnections();
    }
  });

  it('starts users: Setup Assistant for the --not-now share, Self Service clients on enrolled devices', async function () {
    const fleet = [device(true), device(true), device(false), device(true)];
    const p = await UserPopulation.load(
      options(null, {
        users: 2,
        devicesPerUser: { min: 2, max: 2 },
        notNowShare: 1,
        notNowTimes: { min: 2, max: 2 },
      }),
    );
    await p.deal(fleet);
    await p.start(fleet);
    expect(p.users).to.have.length(2);
    expect(fleet.every((d) => d.spec.setupAssistant === true)).to.equal(true);
    expect(p.clients.map((c) => c.udid)).to.deep.equal([fleet[0]?.udid, fleet[1]?.udid, fleet[3]?.udid]);
    expect(p.clients.every((c) => !c.running)).to.equal(true);
    expect(await p.settle(100)).to.equal(true);
    await p.stop();
    const s = p.summary();
    expect(s).to.deep.include({ users: 2, withDevices: 2, sawInvitation: 0, prompts: 0, notNowAnswers: 0 });

    // and back out of Setup Assistant when the share is 0
    const q = await UserPopulation.load(options(null, { users: 2, devicesPerUser: { min: 2, max: 2 } }));
    await q.deal(fleet);
    await q.start(fleet);
    expect(fleet.every((d) => d.spec.setupAssistant === false)).to.equal(true);
    await q.stop();
  });

  it('sums up outcomes by channel, time to accept, prompts and NotNow answers', function () {
    const base = {
      appleId: 'a',
      devices: ['D1'],
      listings: 0,
      errors: [],
      devicesPrompted: ['D1'],
      notNowAnswers: 0,
    };
    const inv = (
      outcome: UserReport['invitations'][number]['outcome'],
      channel: 'prompt' | 'self_service',
      t?: number,
    ) => ({
      key: 'k',
      invitationUrl: 'https://x/invite?inviteCode=k',
      channel,
      udid: 'D1',
      firstSeenAt: 0,
      outcome,
      devices: ['D1'],
      ...(t !== undefined ? { timeToActMs: t } : {}),
      ...(outcome === 'failed' ? { detail: 'the page answered not_found' } : {}),
    });
    const reports: UserReport[] = [
      {
        ...base,
        username: 'u1',
        behaviour: 'accept',
        prompts: 2,
        notNowAnswers: 3,
        invitations: [inv('accepted', 'prompt', 100)],
      },
      {
        ...base,
        username: 'u2',
        behaviour: 'accept',
        prompts: 0,
        devicesPrompted: [],
        invitations: [inv('accepted', 'self_service', 300)],
      },
      {
        ...base,
        username: 'u3',
        behaviour: 'wrong_apple_id',
        prompts: 1,
        invitations: [inv('wrong_apple_id', 'prompt', 200)],
      },
      {
        ...base,
        username: 'u4',
        behaviour: 'decline',
        prompts: 1,
        invitations: [inv('declined', 'prompt', 50)],
      },
      { ...base, username: 'u5', behaviour: 'ignore', prompts: 1, invitations: [inv('ignored', 'prompt')] },
      {
        ...base,
        username: 'u6',
        behaviour: 'accept',
        prompts: 1,
        invitations: [inv('failed', 'prompt', 10)],
      },
      {
        ...base,
        username: 'u7',
        behaviour: 'accept',
        prompts: 0,
        devicesPrompted: [],
        devices: [],
        invitations: [],
      },
    ];
    const s = summarizeUsers(reports, [
      { polls: 10, failures: 1, accepts: 1, byError: { forbidden: 1 } },
      { polls: 5, failures: 0, accepts: 0, byError: {} },
    ]);
    expect(s).to.deep.include({
      users: 7,
      withDevices: 6,
      sawInvitation: 6,
      prompts: 6,
      devicesPrompted: 5,
      notNowAnswers: 3,
    });
    expect(s.outcomes).to.deep.equal({
      accepted: 2,
      wrong_apple_id: 1,
      declined: 1,
      ignored: 1,
      failed: 1,
      pending: 0,
    });
    expect(s.byChannel.prompt.accepted).to.equal(1);
    expect(s.byChannel.self_service.accepted).to.equal(1);
    expect(s.behaviours).to.deep.equal({ accept: 4, ignore: 1, decline: 1, wrong_apple_id: 1 });
    expect(s.timeToAccept).to.deep.include({ count: 3, p50Ms: 200, p99Ms: 300 });
    expect(s.selfService).to.deep.equal({ polls: 15, failures: 1, accepts: 1, byError: { forbidden: 1 } });
    expect(s.failures).to.deep.equal({ 'the page answered not_found': 1 });
    const text = formatUsersSummary(s);
    expect(text).to.include('users: 7 (6 with devices), 6 saw an invitation, 1 did not');
    expect(text).to.include(
      'accepted 2 (prompt 1, Self Service 1); wrong Apple ID 1 (prompt 1); declined 1 (prompt 1)',
    );
    expect(text).to.include('time to accept: p50 200 ms, p99 300 ms');
    expect(text).to.include(
      'devices prompted 5 (6 prompts), NotNow answers 3, Self Service polls 15 (failed 1, taps 1)',
    );
    expect(text).to.include('Self Service errors: forbidden 1');
    expect(text).to.match(/1 {2}the page answered not_found/);
  });
});

async function expectReject(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(AdminApiError);
    return;
  }
  throw new Error('expected a rejection');
}
