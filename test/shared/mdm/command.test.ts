import { expect } from 'chai';
import { decodeCommand, encodeCommand, ProtocolError } from '../../../shared/mdm/index.ts';
import type { CommandPayload } from '../../../shared/mdm/index.ts';
import { decodePlistDict } from '../../../shared/plist/index.ts';
import type { PlistDict } from '../../../shared/plist/index.ts';
import { readFixture } from '../plist/test-files.ts';

const UUID = '7a2d5e81-94c6-4f03-b2e8-6d1f0c9a3b57';

describe('commands', () => {
  const invite: CommandPayload = {
    RequestType: 'InviteToProgram',
    ProgramID: 'com.apple.cloudvpp',
    InvitationURL:
      'https://buy.itunes.apple.com/WebObjects/MZFinance.woa/wa/associateVPPUserWithITSAccount?cc=gb&inviteCode=3c81f0d27a9e4b6c8d15e2f4a07b9c63&mt=8',
  };

  describe('encodeCommand', () => {
    it('writes {CommandUUID, Command} as an Apple XML plist', () => {
      const xml = encodeCommand(UUID, invite);
      expect(xml).to.match(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<!DOCTYPE plist PUBLIC /);
      expect(xml).to.contain('cc=gb&amp;inviteCode=');
      expect(decodePlistDict(xml)).to.deep.equal({ CommandUUID: UUID, Command: invite });
    });

    it('is read back by decodeCommand, data and nested values included', () => {
      const command: CommandPayload = {
        RequestType: 'InstallProfile',
        Payload: Uint8Array.from([1, 2, 3]),
        Options: { Flags: [true], Count: 2 },
      };
      expect(decodeCommand(decodePlistDict(encodeCommand(UUID, command)))).to.deep.equal({
        CommandUUID: UUID,
        Command: command,
      });
    });

    it('matches the committed fixture', () => {
      const fixture = decodePlistDict(readFixture('command/invite-to-program.plist'));
      expect(decodePlistDict(encodeCommand(UUID, invite))).to.deep.equal(fixture);
    });

    it('refuses an empty CommandUUID or RequestType', () => {
      expect(() => encodeCommand('', invite))
        .to.throw(ProtocolError)
        .that.deep.includes({ code: 'invalid_message', field: 'CommandUUID' });
      expect(() => encodeCommand(UUID, { ...invite, RequestType: '' }))
        .to.throw(ProtocolError)
        .that.deep.includes({ code: 'invalid_message', field: 'Command.RequestType' });
    });
  });

  describe('decodeCommand', () => {
    it('reads the DeviceInformation fixture', () => {
      const { CommandUUID, Command } = decodeCommand(
        decodePlistDict(readFixture('command/device-information.plist')),
      );
      expect(CommandUUID).to.equal('9d4b3e0a-51c2-4f7e-9a61-0c8e2f5b7d13');
      expect(Command.RequestType).to.equal('DeviceInformation');
      expect(Command['Queries']).to.include('iTunesStoreAccountHash');
    });

    const bad: [string, PlistDict, string][] = [
      ['no CommandUUID', { Command: { RequestType: 'X' } }, 'CommandUUID'],
      ['an empty CommandUUID', { CommandUUID: '', Command: { RequestType: 'X' } }, 'CommandUUID'],
      [
        'CommandUUID as data',
        { CommandUUID: new Uint8Array(1), Command: { RequestType: 'X' } },
        'CommandUUID',
      ],
      ['no Command', { CommandUUID: UUID }, 'Command'],
      ['Command as an array', { CommandUUID: UUID, Command: [] }, 'Command'],
      ['Command as a string', { CommandUUID: UUID, Command: 'DeviceInformation' }, 'Command'],
      ['no RequestType', { CommandUUID: UUID, Command: { Queries: [] } }, 'Command.RequestType'],
      [
        'RequestType as an integer',
        { CommandUUID: UUID, Command: { RequestType: 1 } },
        'Command.RequestType',
      ],
    ];
    for (const [name, dict, field] of bad) {
      it(`refuses ${name} → invalid_message (${field})`, () => {
        expect(() => decodeCommand(dict))
          .to.throw(ProtocolError)
          .that.deep.includes({ code: 'invalid_message', field });
      });
    }
  });
});
