import { expect } from 'chai';
import { inviteToProgram, promptResultOf } from '../../../server/delivery/device-prompts.ts';
import {
  compareVersions,
  noPromptReason,
  parseOsVersion,
  promptTarget,
  type PromptChannel,
  type PromptDevice,
  type PromptUser,
} from '../../../server/delivery/eligibility.ts';

const USER: PromptUser = {
  userId: '7',
  username: 'alice',
  email: 'alice@example.com',
  managedAppleId: 'alice@appleid.example',
};

function channel(
  id: string,
  kind: PromptChannel['channel'],
  extra: Partial<PromptChannel> = {},
): PromptChannel {
  return { id, channel: kind, userShortName: null, enabled: true, tokenUpdatedAt: new Date(0), ...extra };
}

function device(extra: Partial<PromptDevice> = {}): PromptDevice {
  return {
    udid: 'UDID-1',
    platform: 'ios',
    osVersion: '17.5',
    userEnrollment: false,
    enrolled: true,
    deviceName: null,
    productName: 'iPhone15,2',
    model: 'iPhone15,2',
    userId: '7',
    channels: [channel('UDID-1', 'device')],
    ...extra,
  };
}

const mac = (osVersion: string, channels: PromptChannel[]) =>
  device({ platform: 'macos', osVersion, channels: [channel('UDID-1', 'device'), ...channels] });

describe('InviteToProgram eligibility', () => {
  it('parses OS versions and compares them part by part', () => {
    const table: [string | null, number[] | null][] = [
      ['17.5', [17, 5]],
      ['10.15.7', [10, 15, 7]],
      ['7', [7]],
      ['13.3.1 (a)', [13, 3, 1]],
      ['', null],
      ['beta', null],
      [null, null],
    ];
    for (const [input, expected] of table)
      expect(parseOsVersion(input), String(input)).to.deep.equal(expected);
    expect(compareVersions([10, 9], [10, 9, 0])).to.equal(0);
    expect(compareVersions([10, 10], [10, 9])).to.be.above(0); // numerically, not as text
    expect(compareVersions([6, 1, 3], [7, 0])).to.be.below(0);
  });

  it('iOS and iPadOS 7.0+ on the device channel; older, unknown, not enrolled or User Enrollment: none, with why', () => {
    const table: [string, Partial<PromptDevice>, ReturnType<typeof promptTarget>][] = [
      ['iOS 17.5', {}, { kind: 'prompt', enrollmentId: 'UDID-1' }],
      ['iOS 7.0', { osVersion: '7.0' }, { kind: 'prompt', enrollmentId: 'UDID-1' }],
      ['iPadOS 18', { platform: 'ipados', osVersion: '18.0' }, { kind: 'prompt', enrollmentId: 'UDID-1' }],
      ['iOS 6.1.3', { osVersion: '6.1.3' }, { kind: 'skip', reason: 'os_too_old' }],
      ['no OSVersion', { osVersion: null }, { kind: 'skip', reason: 'os_version_unknown' }],
      ['checked out', { enrolled: false }, { kind: 'skip', reason: 'not_enrolled' }],
      [
        'device channel disabled',
        { channels: [channel('UDID-1', 'device', { enabled: false })] },
        { kind: 'skip', reason: 'not_enrolled' },
      ],
      [
        'User Enrollment',
        { userEnrollment: true, channels: [channel('ENR-1', 'user_enrollment_device')] },
        { kind: 'skip', reason: 'user_enrollment_not_supported' },
      ],
    ];
    for (const [name, extra, expected] of table)
      expect(promptTarget(device(extra), USER), name).to.deep.equal(expected);
  });

  it('macOS 10.9+ on the user channel of the user (short name), else the console user’s; none: no_user_channel', () => {
    const own = channel('UDID-1:A', 'user', { userShortName: 'ALICE', tokenUpdatedAt: new Date(1) });
    const other = channel('UDID-1:B', 'user', { userShortName: 'bob', tokenUpdatedAt: new Date(2) });
    const older = channel('UDID-1:C', 'user', { userShortName: 'carol', tokenUpdatedAt: new Date(1) });
    expect(promptTarget(mac('14.5', [other, own]), USER)).to.deep.equal({
      kind: 'prompt',
      enrollmentId: 'UDID-1:A',
    });
    expect(promptTarget(mac('14.5', [older, other]), USER)).to.deep.equal({
      kind: 'prompt',
      enrollmentId: 'UDID-1:B',
    });
    expect(promptTarget(mac('10.9', [own]), USER)).to.deep.equal({
      kind: 'prompt',
      enrollmentId: 'UDID-1:A',
    });
    expect(promptTarget(mac('10.8.5', [own]), USER)).to.deep.equal({ kind: 'skip', reason: 'os_too_old' });
    expect(promptTarget(mac('14.5', []), USER)).to.deep.equal({ kind: 'skip', reason: 'no_user_channel' });
    expect(promptTarget(mac('14.5', [{ ...own, enabled: false }]), USER)).to.deep.equal({
      kind: 'skip',
      reason: 'no_user_channel',
    });
  });

  it('a Shared iPad on the user channel of the user (Managed Apple ID), else the one signed in last', () => {
    const shared = (channels: PromptChannel[]) =>
      device({ platform: 'ipados', channels: [channel('UDID-1', 'device'), ...channels] });
    const alice = channel('UDID-1:alice@appleid.example', 'shared_ipad_user', {
      userShortName: 'alice@appleid.example',
      tokenUpdatedAt: new Date(1),
    });
    const bob = channel('UDID-1:bob@appleid.example', 'shared_ipad_user', {
      userShortName: 'bob@appleid.example',
      tokenUpdatedAt: new Date(5),
    });
    expect(promptTarget(shared([bob, alice]), USER)).to.deep.equal({
      kind: 'prompt',
      enrollmentId: alice.id,
    });
    expect(promptTarget(shared([bob]), USER)).to.deep.equal({ kind: 'prompt', enrollmentId: bob.id });
    expect(promptTarget(shared([{ ...bob, enabled: false }]), USER)).to.deep.equal({
      kind: 'skip',
      reason: 'no_user_channel',
    });
  });

  it('the usage reason: no_device, the one reason, or no_eligible_device when they differ', () => {
    expect(noPromptReason([])).to.equal('no_device');
    expect(noPromptReason(['os_too_old', 'os_too_old'])).to.equal('os_too_old');
    expect(noPromptReason(['os_too_old', 'user_enrollment_not_supported'])).to.equal('no_eligible_device');
  });
});

describe('InviteToProgram command and answers', () => {
  it('the command carries the cloud VPP program and the user’s invitation URL', () => {
    expect(inviteToProgram('https://apple.example/i?c=1')).to.deep.equal({
      RequestType: 'InviteToProgram',
      ProgramID: 'com.apple.cloudvpp',
      InvitationURL: 'https://apple.example/i?c=1',
    });
  });

  it('maps answers: Acknowledged, InvitationResult refusals, Error, CommandFormatError, NotNow', () => {
    expect(promptResultOf('acknowledged', { InvitationResult: 'Acknowledged' })).to.deep.equal({
      state: 'acknowledged',
      commandStatus: 'acknowledged',
      reason: null,
    });
    expect(promptResultOf('acknowledged', {})).to.include({ state: 'acknowledged' });
    expect(promptResultOf('acknowledged', { InvitationResult: 'InvalidInvitationURL' })).to.deep.equal({
      state: 'failed',
      commandStatus: 'acknowledged',
      reason: 'InvalidInvitationURL',
    });
    expect(promptResultOf('acknowledged', { InvitationResult: 'InvalidProgramID' })).to.include({
      state: 'failed',
      reason: 'InvalidProgramID',
    });
    expect(
      promptResultOf('error', {
        ErrorChain: [
          { ErrorCode: 12079, ErrorDomain: 'MCMDMErrorDomain', LocalizedDescription: 'Not allowed.' },
        ],
      }),
    ).to.deep.equal({
      state: 'failed',
      commandStatus: 'error',
      reason: 'Error 12079 (MCMDMErrorDomain): Not allowed.',
    });
    expect(promptResultOf('error', null)).to.deep.equal({
      state: 'failed',
      commandStatus: 'error',
      reason: 'Error',
    });
    expect(promptResultOf('command_format_error', {})).to.include({
      state: 'failed',
      commandStatus: 'command_format_error',
    });
    expect(promptResultOf('not_now', {})).to.deep.equal({
      state: 'not_now',
      commandStatus: 'not_now',
      reason: null,
    });
  });
});
