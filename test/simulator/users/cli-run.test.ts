import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { appleIdHash } from '../../../simulator/apple-vpp/id-hash.ts';
import { runSimulator } from '../../../simulator/cli.ts';
import { newUuid } from '../../../simulator/device/sim-device.ts';
import { USER_MAP_FILE } from '../../../simulator/users/user-population.ts';
import { FakeMdmServer, testPki } from '../helpers/fake-mdm-server.ts';
import { VppFixture } from './helpers.ts';

class Buffered {
  text = '';
  readonly isTTY = false;
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}

/**
 * The simulate command with users, in-process, against the recording MDM endpoint (no admin API, no
 * Self Service there) and the Apps and Books service: the wiring, not the server.
 */
describe('simulator CLI: a run with simulated users', function () {
  let tmp: string;
  let mdm: FakeMdmServer;
  let vpp: VppFixture;

  before(async function () {
    const pki = await testPki();
    tmp = await mkdtemp(path.join(os.tmpdir(), 'sim-cli-users-'));
    await writeFile(path.join(tmp, 'ca.pem'), pki.caCertPem);
    mdm = new FakeMdmServer(pki);
    vpp = new VppFixture(pki);
    await Promise.all([mdm.start(), vpp.start()]);
  });
  after(async function () {
    await Promise.all([mdm.close(), vpp.stop()]);
    await rm(tmp, { recursive: true, force: true });
  });

  it('deals devices to users, acts on a prompt during --connect, and prints what the users did', async function () {
    const url = (await vpp.register(['cli-1'])).get('cli-1') ?? '';
    mdm.enqueue(newUuid(), {
      RequestType: 'InviteToProgram',
      ProgramID: 'com.apple.cloudvpp',
      InvitationURL: url,
    });
    const stdout = new Buffered();
    const stderr = new Buffered();
    const args = [
      '--devices',
      '2',
      '--macos-share',
      '0',
      '--enroll-url',
      `${mdm.url}/mdm/enroll?token=t`,
      '--ca',
      'ca.pem',
      '--data-dir',
      'no-data',
      '--state-dir',
      'sim',
      '--apns',
      'off',
      '--apple-vpp',
      'off',
      '--connect',
      '--seed',
      '5',
      '--users',
      '2',
      '--devices-per-user',
      '1',
      '--accept',
      '1',
      '--ignore',
      '0',
      '--decline',
      '0',
      '--wrong-apple-id',
      '0',
      '--accept-delay',
      '10-30',
      '--not-now',
      '0',
      '--self-service-interval',
      // long: no timed poll can land inside the run, only the final poll per device counts
      '3600000',
    ];
    const result = await runSimulator(args, { stdout, stderr, cwd: tmp });
    expect(result.exitCode, stderr.text).to.equal(0);
    expect(stderr.text).to.include('users: 2, 2 devices dealt (1 each)');
    expect(stderr.text).to.match(/users: not created on the server \(cannot read the admin token/);
    expect(result.users).to.deep.include({ users: 2, withDevices: 2, sawInvitation: 1, prompts: 1 });
    expect(result.users?.outcomes.accepted).to.equal(1);
    expect(result.users?.byChannel.prompt.accepted).to.equal(1);
    expect(result.users?.timeToAccept.count).to.equal(1);
    // the recording endpoint has no Self Service: the one poll per device at the end answered 404
    expect(result.users?.selfService).to.deep.include({ polls: 2, failures: 2 });
    expect(result.users?.selfService.byError).to.deep.equal({ not_found: 2 });
    expect(stdout.text).to.include('users: 2 (2 with devices), 1 saw an invitation, 1 did not');
    expect(stdout.text).to.include('accepted 1 (prompt 1)');
    const map = JSON.parse(await readFile(path.join(tmp, 'sim', USER_MAP_FILE), 'utf8')) as {
      users: { username: string; appleId: string; udids: string[] }[];
    };
    const [first, second] = map.users;
    expect(map.users.map((u) => u.username)).to.deep.equal(['simuser0001', 'simuser0002']);
    expect(map.users.map((u) => u.udids.length)).to.deep.equal([1, 1]);
    const associated = vpp.user('cli-1');
    expect(associated?.status).to.equal('Associated');
    expect([first?.appleId, second?.appleId].map((a) => appleIdHash(a ?? ''))).to.include(associated?.idHash);

    // a rerun keeps the users and their devices (and loads the devices, not the user map, as devices)
    const rerun = await runSimulator(
      args.filter((a) => a !== '--connect'),
      { stdout: new Buffered(), stderr: new Buffered(), cwd: tmp },
    );
    expect(rerun.exitCode).to.equal(0);
    expect(rerun.summary?.failures).to.deep.equal([]);
    const again = JSON.parse(await readFile(path.join(tmp, 'sim', USER_MAP_FILE), 'utf8')) as typeof map;
    expect(again.users).to.deep.equal(map.users);
  });

  it('prints the users summary as part of the JSON summary', async function () {
    const stdout = new Buffered();
    const result = await runSimulator(
      [
        '--devices',
        '1',
        '--enroll-url',
        `${mdm.url}/mdm/enroll?token=t`,
        '--ca',
        'ca.pem',
        '--data-dir',
        'no-data',
        '--state-dir',
        'sim-json',
        '--apns',
        'off',
        '--apple-vpp',
        'off',
        '--users',
        '1',
        '--self-service-interval',
        '0',
        '--json',
      ],
      { stdout, stderr: new Buffered(), cwd: tmp },
    );
    expect(result.exitCode).to.equal(0);
    const json = JSON.parse(stdout.text) as {
      devices: number;
      users: { users: number; selfService: { polls: number } };
    };
    expect(json.devices).to.equal(1);
    expect(json.users.users).to.equal(1);
    expect(json.users.selfService.polls).to.equal(0);
  });
});
