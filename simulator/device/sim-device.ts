/**
 * A simulated Apple device speaking MDM to a server over HTTPS exactly as a device does: it installs an
 * enrollment profile, checks in (Authenticate, TokenUpdate per channel, CheckOut), and on `connect()` runs
 * the command loop (Idle, command, result, ... until an empty answer). Every body is signed with the
 * identity from the profile (`Mdm-Signature`), or the identity is presented as the TLS client certificate.
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { promises as fs } from 'node:fs';
import https from 'node:https';
import { signDetached } from '../../shared/crypto/index.ts';
import {
  decodeCommand,
  encodeCheckin,
  encodeCommandReport,
  ProtocolError,
  SHARED_IPAD_USER_ID,
} from '../../shared/mdm/index.ts';
import type { CommandEnvelope, CommandStatus } from '../../shared/mdm/index.ts';
import { decodePlistDict, isPlistDict } from '../../shared/plist/index.ts';
import type { PlistValue } from '../../shared/plist/index.ts';
import { DEFAULT_HANDLERS, ERROR_MALFORMED, errorItem, handleCommand } from './command-handlers.ts';
import type {
  ChannelName,
  CommandContext,
  CommandHandler,
  CommandOutcome,
  ReportStatus,
} from './command-handlers.ts';
import { isSharedIpad, randomUuid } from './device-spec.ts';
import type { DeviceSpec, StoreAccount } from './device-spec.ts';
import { initialState, newChannelState, readState, stateFile, writeState } from './device-state.ts';
import type { ChannelState, DeviceState, InvitationRecord } from './device-state.ts';
import { readEnrollmentProfile } from './enrollment-profile.ts';
import { httpRequest } from './http-client.ts';
import type { HttpResponse } from './http-client.ts';

export type { ChannelName } from './command-handlers.ts';

/** How the device proves who it is on check-in and connect. */
export type SignatureMode = 'sha256' | 'sha1' | 'none';

export interface SimulatedDeviceOptions {
  /** where `<udid>.json` is kept; null keeps the state in memory only */
  stateDir: string | null;
  /** CA certificate(s), PEM, that the device trusts for the server's HTTPS certificate */
  ca: string | string[];
  /** connection pool; share one across a fleet. Default: one keep-alive agent per device */
  agent?: https.Agent;
  /**
   * `Mdm-Signature`: `sha256` (signed attributes, the default), `sha1` (no signed attributes, as many iOS
   * devices send) or `none` (no header: then use tlsClientCertificate)
   */
  signature?: SignatureMode;
  /** present the identity as the TLS client certificate (default false) */
  tlsClientCertificate?: boolean;
  /** per request (default 30 s) */
  timeoutMs?: number;
  /** command handlers by RequestType (default DEFAULT_HANDLERS); unknown types get an Error */
  handlers?: ReadonlyMap<string, CommandHandler>;
  /** a connect that receives more commands than this stops (a server that loops), default 1000 */
  maxCommandsPerConnect?: number;
  now?: () => Date;
}

/** What the device did, for the CLI, stats and tests. */
export type DeviceEvent =
  | { type: 'enrolled'; udid: string; channels: ChannelName[]; durationMs: number }
  | {
      type: 'checkin';
      udid: string;
      channel: ChannelName;
      messageType: string;
      status: number;
      durationMs: number;
    }
  | { type: 'command'; udid: string; channel: ChannelName; commandUuid: string; requestType: string }
  | {
      type: 'result';
      udid: string;
      channel: ChannelName;
      commandUuid: string;
      requestType: string;
      status: ReportStatus;
      durationMs: number;
    }
  | { type: 'invitation'; udid: string; invitation: InvitationRecord }
  | { type: 'connected'; udid: string; channel: ChannelName; commands: number; durationMs: number }
  | { type: 'checked_out'; udid: string }
  | { type: 'error'; udid: string; operation: DeviceOperation; error: Error };

export type DeviceOperation = 'enroll' | 'connect' | 'checkout' | 'token_update';

export interface HandledCommand {
  commandUuid: string;
  requestType: string;
  status: ReportStatus;
}

export interface ConnectResult {
  channel: ChannelName;
  enrollmentId: string;
  /** HTTP requests made (the Idle included) */
  requests: number;
  commands: HandledCommand[];
  durationMs: number;
}

/** The server answered something a device cannot go on with. */
export class DeviceRequestError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number,
    readonly responseText: string,
    options?: ErrorOptions,
  ) {
    super(
      `${operation}: HTTP ${status}${responseText ? ` (${responseText.slice(0, 200).trim()})` : ''}`,
      options,
    );
    this.name = 'DeviceRequestError';
  }
}

export class DeviceStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceStateError';
  }
}

const CHECKIN_CONTENT_TYPE = 'application/x-apple-aspen-mdm-checkin';
const PLIST_CONTENT_TYPE = 'application/x-apple-aspen-mdm';
const PER_USER_CONNECTIONS = 'com.apple.mdm.per-user-connections';

function userAgent(spec: DeviceSpec): string {
  const os = spec.platform === 'macos' ? 'macOS' : spec.platform === 'ipados' ? 'iPadOS' : 'iOS';
  return `MDM/1.0 (${os} ${spec.osVersion} ${spec.buildVersion}; ${spec.productName})`;
}

/**
 * Reads a command body. A plist with a CommandUUID but no usable Command is answered CommandFormatError
 * (as devices do); anything else unreadable fails the connect.
 */
function readCommand(body: Buffer): { envelope: CommandEnvelope; malformed: string | null } {
  const dict = decodePlistDict(body);
  try {
    return { envelope: decodeCommand(dict), malformed: null };
  } catch (err) {
    const uuid = dict['CommandUUID'];
    if (!(err instanceof ProtocolError) || typeof uuid !== 'string' || uuid === '') throw err;
    const command = dict['Command'];
    const requestType = isPlistDict(command) ? command['RequestType'] : undefined;
    return {
      envelope: {
        CommandUUID: uuid,
        Command: {
          RequestType: typeof requestType === 'string' && requestType !== '' ? requestType : '(none)',
        },
      },
      malformed: err.message,
    };
  }
}

/** A simulated macOS, iOS or iPadOS device. */
export class SimulatedDevice extends EventEmitter<{ event: [DeviceEvent] }> {
  private state: DeviceState;
  private readonly options: SimulatedDeviceOptions;
  private readonly agent: https.Agent;
  private readonly ownAgent: boolean;
  private key: KeyObject | null = null;
  /** operations on one device run one at a time, as on a real device */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(state: DeviceState, options: SimulatedDeviceOptions) {
    super();
    this.state = state;
    this.options = options;
    this.ownAgent = options.agent === undefined;
    this.agent = options.agent ?? new https.Agent({ keepAlive: true, maxSockets: 2, ca: options.ca });
  }

  /** A new, never-enrolled device (saved at once when a stateDir is given). */
  static async create(spec: DeviceSpec, options: SimulatedDeviceOptions): Promise<SimulatedDevice> {
    const filled: DeviceSpec = spec.userEnrollment
      ? {
          ...spec,
          enrollmentId: spec.enrollmentId ?? randomUuid(),
          ...(spec.platform === 'macos' && spec.consoleUser
            ? { enrollmentUserId: spec.enrollmentUserId ?? randomUuid() }
            : {}),
        }
      : spec;
    const device = new SimulatedDevice(initialState(filled), options);
    if (device.hasUserChannel) device.state.channels.user = newChannelState();
    await device.save();
    return device;
  }

  /** A device saved earlier in `options.stateDir` (no re-enrollment). */
  static async load(udid: string, options: SimulatedDeviceOptions): Promise<SimulatedDevice> {
    if (options.stateDir === null) throw new DeviceStateError('load needs a stateDir');
    return new SimulatedDevice(await readState(stateFile(options.stateDir, udid)), options);
  }

  /** A device from a state object (e.g. a test fixture); not saved until something changes. */
  static fromState(state: DeviceState, options: SimulatedDeviceOptions): SimulatedDevice {
    return new SimulatedDevice(structuredClone(state), options);
  }

  get udid(): string {
    return this.state.spec.udid;
  }

  get spec(): Readonly<DeviceSpec> {
    return this.state.spec;
  }

  get enrolled(): boolean {
    return this.state.enrolled;
  }

  /** A copy of everything the device remembers. */
  snapshot(): DeviceState {
    return structuredClone(this.state);
  }

  get invitations(): readonly InvitationRecord[] {
    return this.state.invitations;
  }

  /** Whether the device has a user channel: a macOS console user, or a Shared iPad user. */
  get hasUserChannel(): boolean {
    return (
      this.state.spec.consoleUser !== undefined && (this.state.spec.platform === 'macos' || this.isSharedIpad)
    );
  }

  private get isSharedIpad(): boolean {
    return isSharedIpad(this.state.spec);
  }

  /** The channels that are enrolled (device first). */
  get channels(): ChannelName[] {
    const out: ChannelName[] = [];
    if (this.state.channels.device.tokenUpdatedAt !== null) out.push('device');
    if (this.state.channels.user?.tokenUpdatedAt) out.push('user');
    return out;
  }

  /** The enrollment ID the server knows a channel by (see shared/mdm resolveEnrollment). */
  enrollmentId(channel: ChannelName = 'device'): string {
    const keys = this.channelKeys(channel);
    const device = keys['UDID'] ?? keys['EnrollmentID'];
    if (typeof device !== 'string') throw new DeviceStateError('no device identifier');
    if (channel === 'device') return device;
    if (this.state.spec.userEnrollment) return `${device}:${String(keys['EnrollmentUserID'])}`;
    if (this.isSharedIpad) return `${device}:${String(keys['UserShortName'])}`;
    return `${device}:${String(keys['UserID'])}`;
  }

  /** The push token (hex) and PushMagic of a channel, as an APNs gateway needs them. */
  pushInfo(channel: ChannelName = 'device'): { token: string; pushMagic: string; topic: string | null } {
    const c = this.channelState(channel);
    return { token: c.pushToken, pushMagic: c.pushMagic, topic: this.state.server?.topic ?? null };
  }

  /** The device finished (true → false) or entered Setup Assistant. */
  async setSetupAssistant(active: boolean): Promise<void> {
    this.state.spec = { ...this.state.spec, setupAssistant: active };
    await this.save();
  }

  async setStoreAccount(account: StoreAccount): Promise<void> {
    this.state.spec = { ...this.state.spec, storeAccount: account };
    await this.save();
  }

  /** A user model marks an invitation as acted upon. */
  async markInvitationHandled(commandUuid: string): Promise<void> {
    const at = this.now().toISOString();
    this.state.invitations = this.state.invitations.map((i) =>
      i.commandUuid === commandUuid && i.handledAt === null ? { ...i, handledAt: at } : i,
    );
    await this.save();
  }

  /** Closes the device's own connection pool (a shared agent is left to its owner). */
  close(): void {
    if (this.ownAgent) this.agent.destroy();
  }

  // ---------------------------------------------------------------------------------------------------
  // Enrollment

  /**
   * Downloads and installs the enrollment profile, then checks in: Authenticate, TokenUpdate for the
   * device channel and, on a Mac with a console user (or a Shared iPad user), the user channel.
   */
  enroll(enrollUrl: string): Promise<void> {
    return this.exclusive('enroll', async () => {
      const started = performance.now();
      const res = await this.request('enroll', { method: 'GET', url: enrollUrl, headers: {} }, false);
      if (res.status !== 200) throw this.httpError('GET enrollment profile', res);
      const profile = readEnrollmentProfile(res.body);
      this.key = null;
      this.state = {
        ...this.state,
        identity: { certPem: profile.identity.certPem, keyPem: profile.identity.keyPem },
        server: {
          serverUrl: profile.serverUrl,
          checkInUrl: profile.checkInUrl,
          topic: profile.topic,
          signMessage: profile.signMessage,
          checkOutWhenRemoved: profile.checkOutWhenRemoved,
          serverCapabilities: profile.serverCapabilities,
          caPems: profile.caPems,
        },
        enrolled: false,
        checkedOutAt: null,
        channels: {
          device: { ...this.state.channels.device, tokenUpdatedAt: null },
          ...(this.state.channels.user
            ? { user: { ...this.state.channels.user, tokenUpdatedAt: null } }
            : {}),
        },
      };
      await this.checkin('device', this.authenticateMessage());
      await this.tokenUpdateLocked('device');
      const channels: ChannelName[] = ['device'];
      if (this.hasUserChannel && profile.serverCapabilities.includes(PER_USER_CONNECTIONS)) {
        await this.tokenUpdateLocked('user');
        channels.push('user');
      }
      const now = this.now().toISOString();
      this.state.enrolled = true;
      this.state.enrolledAt = now;
      await this.save();
      this.emit('event', {
        type: 'enrolled',
        udid: this.udid,
        channels,
        durationMs: performance.now() - started,
      });
    });
  }

  /** Sends a TokenUpdate again (new push info after a restore, or a refresh), for one channel. */
  tokenUpdate(channel: ChannelName = 'device', options: { newToken?: boolean } = {}): Promise<void> {
    return this.exclusive('token_update', async () => {
      this.requireEnrolled();
      if (options.newToken) {
        const fresh = newChannelState();
        const c = this.channelState(channel);
        c.pushToken = fresh.pushToken;
        c.pushMagic = fresh.pushMagic;
      }
      await this.tokenUpdateLocked(channel);
      await this.save();
    });
  }

  /** Tells the server the MDM profile is removed (CheckOut) and forgets the enrollment. */
  checkOut(): Promise<void> {
    return this.exclusive('checkout', async () => {
      this.requireEnrolled();
      const server = this.requireServer();
      await this.checkin('device', {
        MessageType: 'CheckOut',
        Topic: server.topic,
        ...this.channelKeys('device'),
      });
      this.state.enrolled = false;
      this.state.checkedOutAt = this.now().toISOString();
      this.state.channels.device.tokenUpdatedAt = null;
      if (this.state.channels.user) this.state.channels.user.tokenUpdatedAt = null;
      await this.save();
      this.emit('event', { type: 'checked_out', udid: this.udid });
    });
  }

  private authenticateMessage(): Record<string, PlistValue> & { MessageType: string } {
    const { spec } = this.state;
    const server = this.requireServer();
    const msg: Record<string, PlistValue> & { MessageType: string } = {
      MessageType: 'Authenticate',
      Topic: server.topic,
      ...this.channelKeys('device'),
      OSVersion: spec.osVersion,
      BuildVersion: spec.buildVersion,
      ProductName: spec.productName,
    };
    if (!spec.userEnrollment) msg['SerialNumber'] = spec.serialNumber;
    if (spec.platform === 'macos') {
      msg['DeviceName'] = spec.deviceName;
      msg['Model'] = spec.model ?? spec.productName;
      msg['ModelName'] = spec.modelName ?? 'Mac';
    }
    return msg;
  }

  private async tokenUpdateLocked(channel: ChannelName): Promise<void> {
    const server = this.requireServer();
    const c = this.channelState(channel);
    const msg: Record<string, PlistValue> & { MessageType: string } = {
      MessageType: 'TokenUpdate',
      Topic: server.topic,
      ...this.channelKeys(channel),
      Token: Buffer.from(c.pushToken, 'hex'),
      PushMagic: c.pushMagic,
    };
    if (channel === 'device') msg['AwaitingConfiguration'] = this.state.spec.setupAssistant === true;
    await this.checkin(channel, msg);
    c.tokenUpdatedAt = this.now().toISOString();
  }

  private async checkin(
    channel: ChannelName,
    msg: Record<string, PlistValue> & { MessageType: string },
  ): Promise<void> {
    const server = this.requireServer();
    const body = Buffer.from(encodeCheckin(msg), 'utf8');
    const started = performance.now();
    const res = await this.request(
      'checkin',
      { method: 'PUT', url: server.checkInUrl, headers: { 'content-type': CHECKIN_CONTENT_TYPE }, body },
      true,
    );
    this.emit('event', {
      type: 'checkin',
      udid: this.udid,
      channel,
      messageType: msg.MessageType,
      status: res.status,
      durationMs: performance.now() - started,
    });
    if (res.status !== 200) throw this.httpError(msg.MessageType, res);
  }

  // ---------------------------------------------------------------------------------------------------
  // The command loop

  /**
   * One conversation with the server on a channel, as after a push: Idle, then each command's result,
   * until the server answers with an empty body.
   */
  connect(channel: ChannelName = 'device'): Promise<ConnectResult> {
    return this.exclusive('connect', async () => {
      this.requireEnrolled();
      const server = this.requireServer();
      if (this.channelState(channel).tokenUpdatedAt === null) {
        throw new DeviceStateError(`the ${channel} channel of ${this.udid} is not enrolled`);
      }
      const started = performance.now();
      const max = this.options.maxCommandsPerConnect ?? 1000;
      const handled: HandledCommand[] = [];
      let report: Record<string, PlistValue> & { Status: CommandStatus } = {
        ...this.channelKeys(channel),
        Status: 'Idle',
      };
      let requests = 0;
      let pending: { envelope: CommandEnvelope; outcome: CommandOutcome; started: number } | null = null;
      for (;;) {
        const body = Buffer.from(encodeCommandReport(report), 'utf8');
        const res = await this.request(
          'connect',
          { method: 'PUT', url: server.serverUrl, headers: { 'content-type': PLIST_CONTENT_TYPE }, body },
          true,
        );
        requests++;
        if (res.status !== 200) throw this.httpError(`connect (${report.Status})`, res);
        this.channelState(channel).lastStatusSent = report.Status;
        if (pending) {
          this.emit('event', {
            type: 'result',
            udid: this.udid,
            channel,
            commandUuid: pending.envelope.CommandUUID,
            requestType: pending.envelope.Command.RequestType,
            status: pending.outcome.Status,
            durationMs: performance.now() - pending.started,
          });
          pending = null;
        }
        if (res.body.length === 0) break;
        if (handled.length >= max) {
          throw new DeviceStateError(`more than ${max} commands in one connect: stopping`);
        }
        const commandStarted = performance.now();
        const { envelope, malformed } = readCommand(res.body);
        this.emit('event', {
          type: 'command',
          udid: this.udid,
          channel,
          commandUuid: envelope.CommandUUID,
          requestType: envelope.Command.RequestType,
        });
        const outcome: CommandOutcome = malformed
          ? { Status: 'CommandFormatError', ErrorChain: [errorItem(ERROR_MALFORMED, malformed)] }
          : this.handle(envelope, channel);
        handled.push({
          commandUuid: envelope.CommandUUID,
          requestType: envelope.Command.RequestType,
          status: outcome.Status,
        });
        report = {
          ...this.channelKeys(channel),
          Status: outcome.Status,
          CommandUUID: envelope.CommandUUID,
          ...(outcome.ErrorChain ? { ErrorChain: outcome.ErrorChain.map((e) => ({ ...e })) } : {}),
          ...outcome.result,
        };
        pending = { envelope, outcome, started: commandStarted };
      }
      this.channelState(channel).lastConnectAt = this.now().toISOString();
      await this.save();
      const durationMs = performance.now() - started;
      this.emit('event', {
        type: 'connected',
        udid: this.udid,
        channel,
        commands: handled.length,
        durationMs,
      });
      return { channel, enrollmentId: this.enrollmentId(channel), requests, commands: handled, durationMs };
    });
  }

  /** Whether the device will poll by itself: the last status it sent on the channel was NotNow. */
  wantsToPoll(channel: ChannelName = 'device'): boolean {
    return this.state.enrolled && this.channelState(channel).lastStatusSent === 'NotNow';
  }

  /**
   * What a device does when the condition behind a NotNow is gone (e.g. Setup Assistant finished): it
   * connects again on each channel whose last status was NotNow, without a push.
   */
  async pollIfPending(): Promise<ConnectResult[]> {
    const out: ConnectResult[] = [];
    for (const channel of this.channels) {
      if (this.wantsToPoll(channel)) out.push(await this.connect(channel));
    }
    return out;
  }

  /** Runs the handler for a command and remembers any invitation it showed. */
  private handle(envelope: CommandEnvelope, channel: ChannelName): CommandOutcome {
    const ctx: CommandContext = { spec: this.state.spec, channel, enrollmentId: this.enrollmentId(channel) };
    if (this.state.spec.enrollmentId !== undefined) {
      ctx.enrollmentIds = {
        enrollmentId: this.state.spec.enrollmentId,
        ...(channel === 'user' && this.state.spec.enrollmentUserId !== undefined
          ? { enrollmentUserId: this.state.spec.enrollmentUserId }
          : {}),
      };
    }
    let outcome: CommandOutcome;
    try {
      outcome = handleCommand(envelope.Command, ctx, this.options.handlers ?? DEFAULT_HANDLERS);
    } catch (err) {
      outcome = {
        Status: 'Error',
        ErrorChain: [
          {
            ErrorCode: 12000,
            ErrorDomain: 'MCMDMErrorDomain',
            LocalizedDescription: `The command could not be processed: ${(err as Error).message}`,
          },
        ],
      };
    }
    const isInvite = envelope.Command.RequestType === 'InviteToProgram';
    const url = envelope.Command['InvitationURL'];
    const programId = envelope.Command['ProgramID'];
    if (
      (outcome.invitation || (isInvite && outcome.Status === 'NotNow')) &&
      typeof url === 'string' &&
      typeof programId === 'string'
    ) {
      const existing = this.state.invitations.find((i) => i.commandUuid === envelope.CommandUUID);
      const record: InvitationRecord = {
        commandUuid: envelope.CommandUUID,
        channel,
        invitationUrl: outcome.invitation?.invitationUrl ?? url,
        programId: outcome.invitation?.programId ?? programId,
        receivedAt: existing?.receivedAt ?? this.now().toISOString(),
        status: outcome.Status === 'NotNow' ? 'NotNow' : 'Acknowledged',
        handledAt: existing?.handledAt ?? null,
      };
      this.state.invitations = [...this.state.invitations.filter((i) => i !== existing), record];
      this.emit('event', { type: 'invitation', udid: this.udid, invitation: record });
    }
    return outcome;
  }

  // ---------------------------------------------------------------------------------------------------
  // Plumbing

  /** The keys that name this device and channel in every message. */
  channelKeys(channel: ChannelName): Record<string, string> {
    const { spec } = this.state;
    const device: Record<string, string> =
      spec.userEnrollment && spec.enrollmentId !== undefined
        ? { EnrollmentID: spec.enrollmentId }
        : { UDID: spec.udid };
    if (channel === 'device') return device;
    const user = spec.consoleUser;
    if (!user) throw new DeviceStateError(`${spec.udid} has no user channel`);
    if (spec.userEnrollment) {
      if (spec.enrollmentUserId === undefined)
        throw new DeviceStateError(`${spec.udid} has no EnrollmentUserID`);
      return { ...device, EnrollmentUserID: spec.enrollmentUserId };
    }
    if (this.isSharedIpad) {
      return {
        ...device,
        UserID: SHARED_IPAD_USER_ID,
        UserShortName: user.shortName,
        UserLongName: user.longName,
      };
    }
    return { ...device, UserID: user.userId, UserShortName: user.shortName, UserLongName: user.longName };
  }

  private channelState(channel: ChannelName): ChannelState {
    if (channel === 'device') return this.state.channels.device;
    const c = this.state.channels.user;
    if (!c) throw new DeviceStateError(`${this.udid} has no user channel`);
    return c;
  }

  private requireServer(): NonNullable<DeviceState['server']> {
    if (!this.state.server) throw new DeviceStateError(`${this.udid} has no enrollment profile installed`);
    return this.state.server;
  }

  private requireEnrolled(): void {
    if (!this.state.enrolled) throw new DeviceStateError(`${this.udid} is not enrolled`);
  }

  private signingKey(): KeyObject {
    if (!this.state.identity) throw new DeviceStateError(`${this.udid} has no identity`);
    this.key ??= createPrivateKey(this.state.identity.keyPem);
    return this.key;
  }

  /** Signs the exact body bytes as `Mdm-Signature` (base64 of a detached CMS SignedData). */
  signBody(body: Uint8Array): string | null {
    const mode = this.options.signature ?? 'sha256';
    if (mode === 'none') return null;
    if (!this.state.identity) throw new DeviceStateError(`${this.udid} has no identity`);
    const der = signDetached(
      body,
      this.state.identity.certPem,
      this.signingKey(),
      mode === 'sha1'
        ? { digest: 'sha1', signedAttributes: false }
        : { digest: 'sha256', signedAttributes: true },
    );
    return der.toString('base64');
  }

  private async request(
    operation: string,
    req: { method: 'GET' | 'PUT'; url: string; headers: Record<string, string>; body?: Buffer },
    authenticated: boolean,
  ): Promise<HttpResponse> {
    const headers: Record<string, string> = { 'user-agent': userAgent(this.state.spec), ...req.headers };
    let tls: { cert: string; key: string } | null = null;
    if (authenticated) {
      const signature = this.signBody(req.body ?? Buffer.alloc(0));
      if (signature !== null) headers['mdm-signature'] = signature;
      if (this.options.tlsClientCertificate && this.state.identity) {
        tls = { cert: this.state.identity.certPem, key: this.state.identity.keyPem };
      }
    }
    try {
      return await httpRequest({
        ...req,
        headers,
        agent: this.agent,
        ca: this.options.ca,
        ...(tls ?? {}),
        timeoutMs: this.options.timeoutMs ?? 30_000,
      });
    } catch (err) {
      throw new DeviceRequestError(operation, 0, (err as Error).message, { cause: err });
    }
  }

  private httpError(operation: string, res: HttpResponse): DeviceRequestError {
    return new DeviceRequestError(operation, res.status, res.body.toString('utf8'));
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  /** Persists the state (no-op without a stateDir). */
  async save(): Promise<void> {
    if (this.options.stateDir === null) return;
    await fs.mkdir(this.options.stateDir, { recursive: true });
    await writeState(this.options.stateDir, this.state);
  }

  private exclusive<T>(operation: DeviceOperation, fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run.catch((err: unknown) => {
      const error = err instanceof Error ? err : new Error(String(err));
      if (this.listenerCount('event') > 0)
        this.emit('event', { type: 'error', udid: this.udid, operation, error });
      throw error;
    });
  }
}

/** A fresh uppercase UUID (for tests that need a CommandUUID or user ID). */
export function newUuid(): string {
  return randomUUID().toUpperCase();
}
