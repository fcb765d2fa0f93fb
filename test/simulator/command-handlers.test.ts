import { expect } from 'chai';
import {
  CLOUD_VPP_PROGRAM_ID,
  ERROR_UNKNOWN_COMMAND,
  handleCommand,
} from '../../simulator/device/command-handlers.ts';
import type { CommandContext } from '../../simulator/device/command-handlers.ts';
import { randomSpec, seededRng } from '../../simulator/device/device-spec.ts';

const INVITATION_URL =
  'https://buy.itunes.apple.com/WebObjects/MZFinance.woa/wa/associateVPPUserWithITSAccount?cc=us&inviteCode=abc&mt=8';

function ctx(over: Partial<CommandContext> = {}): CommandContext {
  const spec = randomSpec('ios', seededRng(5), { storeAccountShare: 1 });
  return { spec, channel: 'device', enrollmentId: spec.udid, ...over };
}

describe('simulator command handlers', () => {
  describe('DeviceInformation', () => {
    it('answers exactly the requested queries it knows', () => {
      const c = ctx();
      const out = handleCommand(
        {
          RequestType: 'DeviceInformation',
          Queries: [
            'UDID',
            'DeviceName',
            'OSVersion',
            'BuildVersion',
            'ProductName',
            'SerialNumber',
            'Model',
            'iTunesStoreAccountIsActive',
            'iTunesStoreAccountHash',
            'NoSuchQuery',
          ],
        },
        c,
      );
      expect(out.Status).to.equal('Acknowledged');
      const responses = out.result?.['QueryResponses'];
      expect(responses).to.deep.include({
        UDID: c.spec.udid,
        DeviceName: c.spec.deviceName,
        OSVersion: c.spec.osVersion,
        BuildVersion: c.spec.buildVersion,
        ProductName: c.spec.productName,
        SerialNumber: c.spec.serialNumber,
        iTunesStoreAccountIsActive: true,
        iTunesStoreAccountHash: c.spec.storeAccount.appleIdHash,
      });
      expect(Object.keys(responses as object).sort()).to.deep.equal(
        [
          'BuildVersion',
          'DeviceName',
          'Model',
          'OSVersion',
          'ProductName',
          'SerialNumber',
          'UDID',
          'iTunesStoreAccountHash',
          'iTunesStoreAccountIsActive',
        ].sort(),
      );
    });

    it('leaves the hash out when no store account is signed in', () => {
      const spec = randomSpec('macos', seededRng(6), { storeAccountShare: 0 });
      const out = handleCommand(
        {
          RequestType: 'DeviceInformation',
          Queries: ['iTunesStoreAccountIsActive', 'iTunesStoreAccountHash', 'Model', 'HostName'],
        },
        { spec, channel: 'device', enrollmentId: spec.udid },
      );
      expect(out.result?.['QueryResponses']).to.deep.equal({
        iTunesStoreAccountIsActive: false,
        Model: spec.model,
        HostName: (out.result?.['QueryResponses'] as Record<string, string>)['HostName'],
      });
    });

    it('hides hardware identifiers under User Enrollment', () => {
      const spec = randomSpec('ios', seededRng(7), { userEnrollment: true });
      const out = handleCommand(
        { RequestType: 'DeviceInformation', Queries: ['UDID', 'SerialNumber', 'OSVersion', 'EnrollmentID'] },
        { spec, channel: 'device', enrollmentId: 'E1', enrollmentIds: { enrollmentId: 'E1' } },
      );
      expect(out.result?.['QueryResponses']).to.deep.equal({ OSVersion: spec.osVersion, EnrollmentID: 'E1' });
    });

    it('refuses Queries that are not an array of strings', () => {
      const out = handleCommand({ RequestType: 'DeviceInformation', Queries: 'UDID' }, ctx());
      expect(out.Status).to.equal('CommandFormatError');
      expect(out.ErrorChain).to.have.length(1);
    });
  });

  describe('InviteToProgram', () => {
    const invite = {
      RequestType: 'InviteToProgram',
      ProgramID: CLOUD_VPP_PROGRAM_ID,
      InvitationURL: INVITATION_URL,
    };

    it('acknowledges on an iPhone and keeps the invitation', () => {
      const out = handleCommand(invite, ctx());
      expect(out.Status).to.equal('Acknowledged');
      expect(out.result).to.deep.equal({ InvitationResult: 'Acknowledged' });
      expect(out.invitation).to.deep.equal({
        invitationUrl: INVITATION_URL,
        programId: CLOUD_VPP_PROGRAM_ID,
      });
    });

    it('answers NotNow while Setup Assistant runs', () => {
      const c = ctx();
      const out = handleCommand(invite, { ...c, spec: { ...c.spec, setupAssistant: true } });
      expect(out).to.deep.equal({ Status: 'NotNow' });
    });

    it('takes it on the macOS user channel only', () => {
      const spec = randomSpec('macos', seededRng(8));
      const onDevice = handleCommand(invite, { spec, channel: 'device', enrollmentId: spec.udid });
      expect(onDevice.Status).to.equal('Error');
      const onUser = handleCommand(invite, { spec, channel: 'user', enrollmentId: `${spec.udid}:x` });
      expect(onUser.Status).to.equal('Acknowledged');
      expect(onUser.result).to.deep.equal({ InvitationResult: 'Acknowledged' });
    });

    it('takes it on the Shared iPad user channel only', () => {
      const spec = randomSpec('ipados', seededRng(11), { sharedIpad: true });
      expect(handleCommand(invite, { spec, channel: 'device', enrollmentId: spec.udid }).Status).to.equal(
        'Error',
      );
      expect(handleCommand(invite, { spec, channel: 'user', enrollmentId: 'x' }).Status).to.equal(
        'Acknowledged',
      );
      const iphone = randomSpec('ios', seededRng(11));
      expect(handleCommand(invite, { spec: iphone, channel: 'user', enrollmentId: 'x' }).Status).to.equal(
        'Error',
      );
    });

    it('refuses under User Enrollment, and reports bad program IDs and URLs', () => {
      const ue = randomSpec('ios', seededRng(10), { userEnrollment: true });
      expect(handleCommand(invite, { spec: ue, channel: 'device', enrollmentId: 'E' }).Status).to.equal(
        'Error',
      );
      expect(handleCommand({ ...invite, ProgramID: 'com.example' }, ctx()).result).to.deep.equal({
        InvitationResult: 'InvalidProgramID',
      });
      expect(handleCommand({ ...invite, InvitationURL: 'not a url' }, ctx()).result).to.deep.equal({
        InvitationResult: 'InvalidInvitationURL',
      });
    });
  });

  it('answers unknown commands with an Error and a realistic ErrorChain', () => {
    const out = handleCommand({ RequestType: 'ProfileList' }, ctx());
    expect(out.Status).to.equal('Error');
    expect(out.ErrorChain).to.deep.equal([
      {
        ErrorCode: ERROR_UNKNOWN_COMMAND,
        ErrorDomain: 'MCMDMErrorDomain',
        LocalizedDescription: 'Unknown command “ProfileList”.',
        USEnglishDescription: 'Unknown command “ProfileList”.',
      },
    ]);
  });
});
