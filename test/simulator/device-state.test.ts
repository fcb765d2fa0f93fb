import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { randomSpec, seededRng } from '../../simulator/device/device-spec.ts';
import {
  initialState,
  listStates,
  parseState,
  readState,
  StateError,
  stateFile,
  writeState,
} from '../../simulator/device/device-state.ts';
import type { DeviceState } from '../../simulator/device/device-state.ts';

describe('simulator device state', () => {
  let tmp: string;
  beforeEach(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'sim-state-'));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  function enrolledState(): DeviceState {
    const state = initialState(randomSpec('macos', seededRng(1)));
    return {
      ...state,
      enrolled: true,
      enrolledAt: '2024-06-01T10:00:00.000Z',
      identity: { certPem: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n', keyPem: 'k' },
      server: {
        serverUrl: 'https://mdm.example/mdm/connect',
        checkInUrl: 'https://mdm.example/mdm/checkin',
        topic: 'com.apple.mgmt.External.x',
        signMessage: true,
        checkOutWhenRemoved: true,
        serverCapabilities: ['com.apple.mdm.per-user-connections'],
        caPems: [],
      },
      channels: {
        device: {
          ...state.channels.device,
          tokenUpdatedAt: '2024-06-01T10:00:01.000Z',
          lastStatusSent: 'NotNow',
        },
      },
      invitations: [
        {
          commandUuid: 'C',
          channel: 'user',
          invitationUrl: 'https://vpp.example/i',
          programId: 'com.apple.cloudvpp',
          receivedAt: '2024-06-01T10:00:02.000Z',
          status: 'Acknowledged',
          handledAt: null,
        },
      ],
    };
  }

  it('round-trips through a JSON file named after the UDID', async () => {
    const state = enrolledState();
    await writeState(tmp, state);
    const file = stateFile(tmp, state.spec.udid);
    expect(path.basename(file)).to.equal(`${state.spec.udid}.json`);
    expect(await readState(file)).to.deep.equal(state);
    expect(await listStates(tmp)).to.deep.equal([state.spec.udid]);
    expect((await readFile(file, 'utf8')).endsWith('\n')).to.equal(true);
  });

  it('makes fresh push info per channel', () => {
    const a = initialState(randomSpec('ios', seededRng(2)));
    const b = initialState(randomSpec('ios', seededRng(2)));
    expect(a.channels.device.pushToken).to.match(/^[0-9a-f]{64}$/);
    expect(a.channels.device.pushMagic).to.match(/^[0-9A-F-]{36}$/);
    expect(a.channels.device.pushToken).to.not.equal(b.channels.device.pushToken);
  });

  it('refuses files that are not a valid state, saying where', async () => {
    expect(() => parseState('{', 'x.json')).to.throw(StateError, /x\.json: not JSON/);
    const bad = { ...enrolledState(), enrolled: 'yes' };
    expect(() => parseState(JSON.stringify(bad), 'y.json')).to.throw(StateError, /y\.json: enrolled/);
    await writeFile(path.join(tmp, 'notes.txt'), 'x');
    expect(await listStates(tmp)).to.deep.equal([]);
    expect(await listStates(path.join(tmp, 'missing'))).to.deep.equal([]);
  });

  it('refuses a UDID that is not a safe file name', () => {
    expect(() => stateFile(tmp, '../etc/passwd')).to.throw(RangeError);
  });
});
