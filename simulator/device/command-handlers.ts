/**
 * How a simulated device answers MDM commands: pure functions from (command, device facts) to the status
 * and result keys of its report. No I/O: the device sends what these return.
 */
import { createHash } from 'node:crypto';
import type { CommandPayload, ErrorChainItem } from '../../shared/mdm/index.ts';
import type { PlistValue } from '../../shared/plist/index.ts';
import { isSharedIpad } from './device-spec.ts';
import type { DeviceSpec } from './device-spec.ts';

/** `device` is the device channel; `user` the macOS console user, Shared iPad user or User Enrollment user. */
export type ChannelName = 'device' | 'user';

export interface CommandContext {
  spec: DeviceSpec;
  channel: ChannelName;
  /** the enrollment ID the server knows this channel by */
  enrollmentId: string;
  /** User Enrollment: the anonymous IDs the device reports */
  enrollmentIds?: { enrollmentId: string; enrollmentUserId?: string };
}

export type ReportStatus = 'Acknowledged' | 'Error' | 'CommandFormatError' | 'NotNow';

export interface CommandOutcome {
  Status: ReportStatus;
  /** command-specific result keys, added to the report */
  result?: Record<string, PlistValue>;
  ErrorChain?: ErrorChainItem[];
  /** an invitation the device showed (or will show): a user model acts on it */
  invitation?: { invitationUrl: string; programId: string };
}

export type CommandHandler = (command: CommandPayload, ctx: CommandContext) => CommandOutcome;

export const MDM_ERROR_DOMAIN = 'MCMDMErrorDomain';
/** MCMDMErrorDomain: the device does not know the request type */
export const ERROR_UNKNOWN_COMMAND = 12021;
/** The simulator's code for a command refused on this channel or enrollment type */
export const ERROR_NOT_ALLOWED = 12079;
/** The simulator's code for a command with a missing or mistyped key */
export const ERROR_MALFORMED = 12001;

export function errorItem(code: number, description: string, domain = MDM_ERROR_DOMAIN): ErrorChainItem {
  return {
    ErrorCode: code,
    ErrorDomain: domain,
    LocalizedDescription: description,
    USEnglishDescription: description,
  };
}

function error(code: number, description: string): CommandOutcome {
  return { Status: 'Error', ErrorChain: [errorItem(code, description)] };
}

function formatError(description: string): CommandOutcome {
  return { Status: 'CommandFormatError', ErrorChain: [errorItem(ERROR_MALFORMED, description)] };
}

/** A stable pseudo-random byte string derived from the device, so answers do not change between queries. */
function derived(spec: DeviceSpec, label: string, bytes: number): Buffer {
  return createHash('sha256').update(`${spec.udid}/${label}`).digest().subarray(0, bytes);
}

function mac(spec: DeviceSpec, label: string): string {
  const b = derived(spec, label, 6);
  b[0] = ((b[0] ?? 0) & 0xfc) | 0x00; // unicast, globally administered
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

const CAPACITY_GB = [64, 128, 256, 512];

/** Everything this device can answer to `DeviceInformation`, by query name. */
export function deviceInformation(
  spec: DeviceSpec,
  ctx?: Pick<CommandContext, 'enrollmentIds'>,
): Record<string, PlistValue> {
  const seed = derived(spec, 'capacity', 2);
  const capacity = CAPACITY_GB[(seed[0] ?? 0) % CAPACITY_GB.length] ?? 128;
  const available = Math.round(capacity * (0.2 + ((seed[1] ?? 0) / 255) * 0.6) * 100) / 100;
  const isMac = spec.platform === 'macos';
  const values: Record<string, PlistValue> = {
    DeviceName: spec.deviceName,
    OSVersion: spec.osVersion,
    BuildVersion: spec.buildVersion,
    ProductName: spec.productName,
    ModelName:
      spec.modelName ?? (spec.platform === 'ipados' ? 'iPad' : spec.platform === 'ios' ? 'iPhone' : 'Mac'),
    Model: spec.model ?? `${derived(spec, 'model', 3).toString('hex').toUpperCase().slice(0, 4)}LL/A`,
    DeviceCapacity: capacity,
    AvailableDeviceCapacity: available,
    IsSupervised: false,
    IsActivationLockEnabled: false,
    IsDeviceLocatorServiceEnabled: false,
    AwaitingConfiguration: spec.setupAssistant === true,
    iTunesStoreAccountIsActive: spec.storeAccount.active,
    WiFiMAC: mac(spec, 'wifi'),
    BluetoothMAC: mac(spec, 'bluetooth'),
  };
  if (spec.storeAccount.active && spec.storeAccount.appleIdHash !== undefined) {
    values['iTunesStoreAccountHash'] = spec.storeAccount.appleIdHash;
  }
  if (isMac) {
    const host = spec.deviceName
      .normalize('NFD')
      .replace(/[^A-Za-z0-9]+/g, '-')
      .replace(/^-|-$/g, '');
    values['HostName'] = `${host}.local`;
    values['LocalHostName'] = host;
    values['IsAppleSilicon'] = !/^MacBookPro1[0-6]|^iMac|^MacBookAir[0-9],/.test(spec.productName);
  } else {
    values['ModelNumber'] = `${derived(spec, 'model', 3).toString('hex').toUpperCase().slice(0, 4)}`;
    values['BatteryLevel'] = Math.round((0.3 + ((seed[1] ?? 0) / 255) * 0.7) * 100) / 100;
    values['IsMDMLostModeEnabled'] = false;
    values['IsCloudBackupEnabled'] = false;
    values['IsMultiUser'] = false;
  }
  if (spec.userEnrollment) {
    // User Enrollment hides the hardware identifiers (Apple forbids them) and reports its anonymous IDs
    if (ctx?.enrollmentIds) {
      values['EnrollmentID'] = ctx.enrollmentIds.enrollmentId;
      if (ctx.enrollmentIds.enrollmentUserId) values['EnrollmentUserID'] = ctx.enrollmentIds.enrollmentUserId;
    }
    for (const hidden of ['DeviceName', 'WiFiMAC', 'BluetoothMAC', 'HostName', 'LocalHostName'])
      delete values[hidden];
  } else {
    values['UDID'] = spec.udid;
    values['SerialNumber'] = spec.serialNumber;
  }
  return values;
}

const DEFAULT_QUERIES = [
  'UDID',
  'DeviceName',
  'OSVersion',
  'BuildVersion',
  'ProductName',
  'SerialNumber',
  'Model',
  'ModelName',
];

export const handleDeviceInformation: CommandHandler = (command, ctx) => {
  const queries = command['Queries'];
  let names: string[];
  if (queries === undefined) {
    names = DEFAULT_QUERIES;
  } else if (Array.isArray(queries) && queries.every((q): q is string => typeof q === 'string')) {
    names = queries;
  } else {
    return formatError('The “Queries” key must be an array of strings.');
  }
  const all = deviceInformation(ctx.spec, ctx);
  const QueryResponses: Record<string, PlistValue> = {};
  for (const name of names) {
    const value = all[name];
    if (value !== undefined) QueryResponses[name] = value; // unknown or hidden queries are left out, as devices do
  }
  return { Status: 'Acknowledged', result: { QueryResponses, RequestType: 'DeviceInformation' } };
};

export const CLOUD_VPP_PROGRAM_ID = 'com.apple.cloudvpp';

/**
 * `InviteToProgram`: iOS/iPadOS on the device channel, macOS on the user channel; never under User
 * Enrollment; NotNow while Setup Assistant runs. The result says only that the prompt was shown.
 */
export const handleInviteToProgram: CommandHandler = (command, ctx) => {
  const { spec, channel } = ctx;
  if (spec.userEnrollment) {
    return error(ERROR_NOT_ALLOWED, 'The command “InviteToProgram” is not allowed for User Enrollment.');
  }
  // macOS and Shared iPad: the user channel only; iOS and iPadOS: the device channel
  const userOnly = spec.platform === 'macos' || isSharedIpad(spec);
  if (userOnly !== (channel === 'user')) {
    return error(
      ERROR_NOT_ALLOWED,
      `The command “InviteToProgram” is not supported on the ${channel} channel.`,
    );
  }
  if (spec.setupAssistant) return { Status: 'NotNow' };
  const programId = command['ProgramID'];
  const url = command['InvitationURL'];
  if (typeof programId !== 'string' || typeof url !== 'string') {
    return formatError('The “ProgramID” and “InvitationURL” keys are required strings.');
  }
  if (programId !== CLOUD_VPP_PROGRAM_ID) {
    return { Status: 'Acknowledged', result: { InvitationResult: 'InvalidProgramID' } };
  }
  if (!isHttpsUrl(url)) {
    return { Status: 'Acknowledged', result: { InvitationResult: 'InvalidInvitationURL' } };
  }
  return {
    Status: 'Acknowledged',
    result: { InvitationResult: 'Acknowledged' },
    invitation: { invitationUrl: url, programId },
  };
};

function isHttpsUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return u.protocol === 'https:' || u.protocol === 'http:';
  } catch {
    return false;
  }
}

export function unknownCommand(requestType: string): CommandOutcome {
  return error(ERROR_UNKNOWN_COMMAND, `Unknown command “${requestType}”.`);
}

export const DEFAULT_HANDLERS: ReadonlyMap<string, CommandHandler> = new Map<string, CommandHandler>([
  ['DeviceInformation', handleDeviceInformation],
  ['InviteToProgram', handleInviteToProgram],
]);

/** Answers a command with the given handlers; unknown request types get an Error with an ErrorChain. */
export function handleCommand(
  command: CommandPayload,
  ctx: CommandContext,
  handlers: ReadonlyMap<string, CommandHandler> = DEFAULT_HANDLERS,
): CommandOutcome {
  const handler = handlers.get(command.RequestType);
  return handler ? handler(command, ctx) : unknownCommand(command.RequestType);
}
