import { expect } from 'chai';
import {
  decodeCommand,
  parseCheckin,
  parseCommandReport,
  resolveEnrollment,
} from '../../../shared/mdm/index.ts';
import type { CheckinMessage, CommandEnvelope, CommandReport } from '../../../shared/mdm/index.ts';
import { decodePlistDict, isPlistDict } from '../../../shared/plist/index.ts';
import type { PlistDict } from '../../../shared/plist/index.ts';
import { listFiles, readVector, skipWithoutVectors, VECTORS_DIR } from '../plist/test-files.ts';

/*
 * Real device messages (../shared/vectors, beside the repository): what each one says, read
 * through the same path the server takes (decodePlistDict → parseCheckin / parseCommandReport).
 */

const NANOMDM_TOPIC = 'com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9';
const MICROMDM_TOPIC = 'com.apple.mgmt.External.3a7c95f2-c214-4b53-a585-a553c2623e04';
const IPAD_UDID = '663b07bb783e9ade1dae4fbb92ea12afc0ce5b69';
const IMAC_UDID = '66ADE930-5FDF-5EC4-8429-15640684C489';
const MACBOOK_UDID = 'A5EF1BA1-586D-4F29-B4F3-759DADAC2DDD';

function hex(bytes: Uint8Array | undefined): string {
  return Buffer.from(bytes ?? []).toString('hex');
}

type Expectation =
  | { kind: 'checkin'; udid: string; check: (msg: CheckinMessage) => void }
  | { kind: 'report'; udid: string; check: (report: CommandReport) => void }
  | { kind: 'command'; check: (command: CommandEnvelope) => void }
  | { kind: 'profile'; check: (dict: PlistDict) => void };

const expectations: Record<string, Expectation> = {
  'nanomdm/mdm__testdata__Authenticate.1.plist': {
    kind: 'checkin',
    udid: IPAD_UDID,
    check: (msg) => {
      if (msg.MessageType !== 'Authenticate') throw new Error(msg.MessageType);
      expect(msg.Topic).to.equal(NANOMDM_TOPIC);
      expect(msg.ProductName).to.equal('iPad2,5');
      expect(msg.OSVersion).to.equal('9.3.5');
      expect(msg.BuildVersion).to.equal('13G36');
      expect(msg.SerialNumber).to.equal('F5JM992LF193');
      expect(msg.DeviceName, 'iOS sends no DeviceName').to.equal(undefined);
      expect(msg.Model).to.equal(undefined);
    },
  },
  'nanomdm/mdm__testdata__Authenticate.2.plist': {
    kind: 'checkin',
    udid: IMAC_UDID,
    check: (msg) => {
      if (msg.MessageType !== 'Authenticate') throw new Error(msg.MessageType);
      expect(msg.Topic).to.equal(NANOMDM_TOPIC);
      expect(msg.DeviceName).to.equal('Fruit');
      expect(msg.Model).to.equal('iMac14,2');
      expect(msg.ModelName).to.equal('iMac');
      expect(msg.OSVersion).to.equal('10.12.6');
      expect(Buffer.from(msg.Challenge ?? []).toString('utf8')).to.equal('apple');
    },
  },
  'nanomdm/mdm__testdata__TokenUpdate.1.plist': {
    kind: 'checkin',
    udid: IPAD_UDID,
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(msg.Topic).to.equal(NANOMDM_TOPIC);
      expect(msg.Token.byteLength).to.equal(32);
      expect(hex(msg.Token)).to.equal('47e8eec062c2f729ec1703c1b3e18f1971d85f00be76445d34080baa701b5f51');
      expect(msg.PushMagic).to.equal('CEFDF0BD-E342-4A27-8742-E930EA116B0A');
      expect(msg.AwaitingConfiguration).to.equal(false);
      expect(msg.UnlockToken?.byteLength).to.be.greaterThan(1000);
      expect(
        Buffer.from(msg.UnlockToken ?? [])
          .subarray(0, 4)
          .toString('latin1'),
      ).to.equal('DATA');
    },
  },
  'nanomdm/mdm__testdata__TokenUpdate.2.plist': {
    kind: 'checkin',
    udid: IMAC_UDID,
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(msg.Token.byteLength).to.equal(32);
      expect(hex(msg.Token)).to.match(/^1ba7c900.*42cc$/);
      expect(msg.PushMagic).to.equal('888CEB39-BFFA-40F6-89FA-B60752EB63C2');
      expect(msg.UnlockToken).to.equal(undefined);
    },
  },
  'nanomdm/mdm__testdata__DeviceInformation.1.plist': {
    kind: 'report',
    udid: IMAC_UDID,
    check: (report) => {
      expect(report.Status).to.equal('Acknowledged');
      expect(report.CommandUUID).to.equal('76eda240-5488-4989-8339-f2ae160113c4');
      expect(report.raw['RequestType']).to.equal('DeviceInformation');
      expect(report.raw['QueryResponses']).to.deep.equal({ HostName: 'fruit.example.com', UDID: IMAC_UDID });
    },
  },
  'nanomdm/docs__enroll.mobileconfig': {
    kind: 'profile',
    check: (profile) => {
      expect(profile['PayloadType']).to.equal('Configuration');
      const payloads = profile['PayloadContent'];
      if (!Array.isArray(payloads)) throw new Error('PayloadContent is not an array');
      const mdm = payloads.find((p) => isPlistDict(p) && p['PayloadType'] === 'com.apple.mdm');
      if (!isPlistDict(mdm)) throw new Error('no com.apple.mdm payload');
      expect(mdm['AccessRights']).to.equal(8191);
      expect(mdm['SignMessage']).to.equal(true);
      expect(mdm['CheckOutWhenRemoved']).to.equal(true);
      expect(mdm['ServerCapabilities']).to.include('com.apple.mdm.per-user-connections');
    },
  },
  'micromdm-docs/Authenticate.macOS-10.13.6.plist': {
    kind: 'checkin',
    udid: MACBOOK_UDID,
    check: (msg) => {
      if (msg.MessageType !== 'Authenticate') throw new Error(msg.MessageType);
      expect(msg.Topic).to.equal(MICROMDM_TOPIC);
      expect(msg.Model).to.equal('MacBookPro14,3');
      expect(msg.ModelName).to.equal('MacBook Pro');
      expect(msg.BuildVersion).to.equal('17G65');
      expect(msg.SerialNumber).to.equal('C04W00D3HTD0');
    },
  },
  'micromdm-docs/TokenUpdate.macOS-10.13.6.plist': {
    kind: 'checkin',
    udid: MACBOOK_UDID,
    check: (msg) => {
      if (msg.MessageType !== 'TokenUpdate') throw new Error(msg.MessageType);
      expect(msg.Token.byteLength, 'sanitised: shorter than a real token').to.equal(16);
      expect(msg.PushMagic).to.equal('728F8670-4934-4A30-BADF-7B43C261FC14');
    },
  },
  'micromdm-docs/CheckOut.macOS-10.13.6.plist': {
    kind: 'checkin',
    udid: MACBOOK_UDID,
    check: (msg) => {
      expect(msg.MessageType).to.equal('CheckOut');
      expect(msg.Topic).to.equal(MICROMDM_TOPIC);
    },
  },
  'micromdm-docs/Connect-Acknowledged.macOS-10.13.6.plist': {
    kind: 'report',
    udid: MACBOOK_UDID,
    check: (report) => {
      expect(report.Status).to.equal('Acknowledged');
      expect(report.CommandUUID).to.equal('41d35de3-a343-4146-ba4b-0069bae2a54f');
      expect(report.ErrorChain).to.equal(undefined);
    },
  },
  'apple-docs-examples/InviteToProgram.command.plist': {
    kind: 'command',
    check: ({ CommandUUID, Command }) => {
      expect(CommandUUID).to.equal('0001_InviteToProgram');
      expect(Command.RequestType).to.equal('InviteToProgram');
      expect(Command['ProgramID']).to.equal('com.apple.cloudvpp');
      expect(Command['InvitationURL']).to.equal(
        'https://buy.itunes.apple.com/WebObjects/MZFinance.woa/wa/associateVPPUserWithITSAccount?cc=us&inviteCode=7770596534cf46b58fb0254e7112a5e5&mt=8',
      );
    },
  },
  'apple-docs-examples/InviteToProgram.response.plist': {
    kind: 'report',
    udid: '00008020-000915083C80012E',
    check: (report) => {
      expect(report.Status).to.equal('Acknowledged');
      expect(report.CommandUUID).to.equal('0001_InviteToProgram');
      expect(report.raw['InvitationResult']).to.equal('Acknowledged');
    },
  },
  'synthetic/mdm-signature.body.plist': {
    kind: 'report',
    udid: 'X',
    check: (report) => {
      expect(report.Status).to.equal('Idle');
      expect(report.CommandUUID).to.equal(undefined);
    },
  },
};

const files = listFiles(VECTORS_DIR, ['.plist', '.mobileconfig']);

describe('MDM vectors (../shared/vectors)', function () {
  before(function () {
    skipWithoutVectors(this);
  });

  it('every vector has an expectation, and every expectation a vector', () => {
    expect(files).to.have.members(Object.keys(expectations));
  });

  for (const file of files) {
    const expectation = expectations[file];
    it(`${file}: ${expectation?.kind ?? 'unknown kind'}`, () => {
      if (expectation === undefined) throw new Error(`no expectation for ${file}: add one`);
      const dict = decodePlistDict(readVector(file));
      switch (expectation.kind) {
        case 'checkin': {
          const msg = parseCheckin(dict);
          expect(msg.UDID).to.equal(expectation.udid);
          expect(resolveEnrollment(msg)).to.deep.equal({
            id: expectation.udid,
            deviceId: expectation.udid,
            channel: 'device',
          });
          expectation.check(msg);
          break;
        }
        case 'report': {
          const report = parseCommandReport(dict);
          expect(report.UDID).to.equal(expectation.udid);
          expect(report.raw).to.equal(dict);
          expect(resolveEnrollment(report).id).to.equal(expectation.udid);
          expectation.check(report);
          break;
        }
        case 'command':
          expectation.check(decodeCommand(dict));
          break;
        case 'profile':
          expectation.check(dict);
          break;
      }
    });
  }
});
