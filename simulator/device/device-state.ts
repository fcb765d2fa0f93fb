/**
 * What a simulated device remembers between runs, as JSON in `<stateDir>/<udid>.json`: its spec, the
 * identity from its enrollment profile, the server's URLs, push info per channel and what it was asked.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { deviceSpecSchema } from './device-spec.ts';
import type { DeviceSpec } from './device-spec.ts';

const isoDate = z.iso.datetime({ offset: true });

export const channelStateSchema = z.object({
  /** 32 bytes, lowercase hex, sent as `Token` */
  pushToken: z.string().regex(/^[0-9a-f]{64}$/),
  pushMagic: z.string().min(1),
  /** when the last TokenUpdate was accepted */
  tokenUpdatedAt: isoDate.nullable(),
  lastConnectAt: isoDate.nullable(),
  /** the Status of the last report the server took: after NotNow the device polls again by itself */
  lastStatusSent: z
    .enum(['Idle', 'Acknowledged', 'Error', 'CommandFormatError', 'NotNow'])
    .nullable()
    .default(null),
});
export type ChannelState = z.infer<typeof channelStateSchema>;

export const invitationRecordSchema = z.object({
  commandUuid: z.string().min(1),
  channel: z.enum(['device', 'user']),
  invitationUrl: z.string().min(1),
  programId: z.string().min(1),
  receivedAt: isoDate,
  /** what the device answered: Acknowledged (prompt shown) or NotNow (shown once Setup Assistant ends) */
  status: z.enum(['Acknowledged', 'NotNow']),
  /** set by a user model once it acted on the prompt */
  handledAt: isoDate.nullable(),
});
export type InvitationRecord = z.infer<typeof invitationRecordSchema>;

export const deviceStateSchema = z.object({
  version: z.literal(1),
  spec: deviceSpecSchema,
  enrolled: z.boolean(),
  enrolledAt: isoDate.nullable(),
  checkedOutAt: isoDate.nullable(),
  identity: z.object({ certPem: z.string().min(1), keyPem: z.string().min(1) }).nullable(),
  server: z
    .object({
      serverUrl: z.string().min(1),
      checkInUrl: z.string().min(1),
      topic: z.string().min(1),
      signMessage: z.boolean(),
      checkOutWhenRemoved: z.boolean(),
      serverCapabilities: z.array(z.string()),
      /** the CA certificates the profile installed */
      caPems: z.array(z.string()),
    })
    .nullable(),
  channels: z.object({ device: channelStateSchema, user: channelStateSchema.optional() }),
  invitations: z.array(invitationRecordSchema),
});
export type DeviceState = z.infer<typeof deviceStateSchema>;

export function newChannelState(): ChannelState {
  return {
    pushToken: randomBytes(32).toString('hex'),
    pushMagic: randomUUID().toUpperCase(),
    tokenUpdatedAt: null,
    lastConnectAt: null,
    lastStatusSent: null,
  };
}

/** A device that has never enrolled. */
export function initialState(spec: DeviceSpec): DeviceState {
  return {
    version: 1,
    spec,
    enrolled: false,
    enrolledAt: null,
    checkedOutAt: null,
    identity: null,
    server: null,
    channels: { device: newChannelState() },
    invitations: [],
  };
}

const SAFE_NAME = /^[0-9A-Za-z-]{1,64}$/;

export function stateFile(stateDir: string, udid: string): string {
  if (!SAFE_NAME.test(udid)) throw new RangeError(`not a UDID usable as a file name: ${udid}`);
  return path.join(stateDir, `${udid}.json`);
}

export class StateError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'StateError';
  }
}

export function parseState(text: string, source: string): DeviceState {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new StateError(`${source}: not JSON`, { cause: err });
  }
  const r = deviceStateSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new StateError(
      `${source}: ${issue ? `${issue.path.join('.')} ${issue.message}` : 'invalid state'}`,
    );
  }
  return r.data;
}

export async function readState(file: string): Promise<DeviceState> {
  return parseState(await fs.readFile(file, 'utf8'), file);
}

let tmpCounter = 0;

/** Writes atomically (temporary file, then rename), so a crash never leaves half a state. */
export async function writeState(stateDir: string, state: DeviceState): Promise<void> {
  const file = stateFile(stateDir, state.spec.udid);
  const tmp = `${file}.${process.pid}.${++tmpCounter}.tmp`;
  await fs.writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  await fs.rename(tmp, file);
}

/** The UDIDs of the devices saved in a state directory (none when it does not exist). */
export async function listStates(stateDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(stateDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return names
    .filter((n) => n.endsWith('.json'))
    .map((n) => n.slice(0, -'.json'.length))
    .filter((n) => SAFE_NAME.test(n))
    .sort();
}
