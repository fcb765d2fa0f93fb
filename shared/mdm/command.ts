import { encodePlist, isPlistDict } from '../plist/index.ts';
import type { PlistDict, PlistValue } from '../plist/index.ts';
import { ProtocolError } from './protocol-error.ts';

/** A command as the device receives it: `RequestType` and the command's own keys. */
export interface CommandPayload {
  RequestType: string;
  [key: string]: PlistValue;
}

export interface CommandEnvelope {
  CommandUUID: string;
  Command: CommandPayload;
}

/** The body the server answers on ServerURL: `{CommandUUID, Command}` as an XML plist. */
export function encodeCommand(commandUuid: string, command: CommandPayload): string {
  if (commandUuid === '')
    throw new ProtocolError('invalid_message', 'empty CommandUUID', { field: 'CommandUUID' });
  if (typeof command.RequestType !== 'string' || command.RequestType === '') {
    throw new ProtocolError('invalid_message', 'command without RequestType', {
      field: 'Command.RequestType',
    });
  }
  const envelope: CommandEnvelope = { CommandUUID: commandUuid, Command: command };
  return encodePlist({ ...envelope });
}

/** Reads a command body as a device does (for the simulator). Throws ProtocolError `invalid_message`. */
export function decodeCommand(dict: PlistDict): CommandEnvelope {
  const uuid = dict['CommandUUID'];
  if (typeof uuid !== 'string' || uuid === '') {
    throw new ProtocolError('invalid_message', 'command body without CommandUUID', { field: 'CommandUUID' });
  }
  const command = dict['Command'];
  if (!isPlistDict(command)) {
    throw new ProtocolError('invalid_message', 'command body without a Command dictionary', {
      field: 'Command',
    });
  }
  const requestType = command['RequestType'];
  if (typeof requestType !== 'string' || requestType === '') {
    throw new ProtocolError('invalid_message', 'command without RequestType', {
      field: 'Command.RequestType',
    });
  }
  return { CommandUUID: uuid, Command: { ...command, RequestType: requestType } };
}
