/**
 * A simulated person: an Apple ID, the devices assigned to them, and one behaviour (accept after a delay,
 * ignore, decline, or accept with another Apple ID). They see invitations through two channels: an
 * `InviteToProgram` prompt on a device (`prompt`), or a pending item in a device's Self Service listing
 * (`self_service`). They act once per invitation, on the device where they saw it first; later prompts
 * and listings of the same invitation on their other devices are dismissed.
 *
 * Devices in Setup Assistant answer `NotNow` to the prompt; after each NotNow the device polls again
 * (a while later) and, once it has answered NotNow `notNowTimes` times, Setup Assistant ends and the
 * next poll shows the prompt.
 */
import { EventEmitter } from 'node:events';
import { appleIdHash } from '../apple-vpp/id-hash.ts';
import type { Rng } from '../device/device-spec.ts';
import type { InvitationRecord } from '../device/device-state.ts';
import type { DeviceEvent, SimulatedDevice } from '../device/sim-device.ts';
import type { SelfServiceClient, SelfServiceListing } from '../selfservice/self-service-client.ts';
import { drawInRange } from './behaviour.ts';
import type { BehaviourKind, IntRange, UserBehaviour } from './behaviour.ts';
import { inviteCodeOf } from './invitation-actor.ts';
import type { ActOutcome, InvitationActor } from './invitation-actor.ts';

export type InvitationChannel = 'prompt' | 'self_service';
export const INVITATION_CHANNELS: readonly InvitationChannel[] = ['prompt', 'self_service'];

/** What became of one invitation a user saw. `pending`: not acted on (yet). */
export type InvitationOutcome = 'accepted' | 'wrong_apple_id' | 'declined' | 'ignored' | 'failed' | 'pending';
export const INVITATION_OUTCOMES: readonly InvitationOutcome[] = [
  'accepted',
  'wrong_apple_id',
  'declined',
  'ignored',
  'failed',
  'pending',
];

export interface UserInvitation {
  /** the invite code (one per user and location), else the URL */
  key: string;
  invitationUrl: string;
  /** where the user saw it first, and so acts on it */
  channel: InvitationChannel;
  /** the device they saw it on first */
  udid: string;
  /** the Self Service id (usage id), when first seen there */
  selfServiceId?: string;
  /** the prompt's CommandUUID, when first seen as a prompt */
  commandUuid?: string;
  /** epoch ms */
  firstSeenAt: number;
  outcome: InvitationOutcome;
  /** epoch ms when the page (or the service) answered */
  actedAt?: number;
  /** from first seeing the invitation to the page's answer */
  timeToActMs?: number;
  /** the Apple ID they signed in with */
  appleId?: string;
  /** what the page answered */
  result?: ActOutcome;
  detail?: string;
  /** every device that showed it (prompt or listing) */
  devices: string[];
}

export interface SimulatedUserOptions {
  username: string;
  appleId: string;
  devices: readonly SimulatedDevice[];
  behaviour: UserBehaviour;
  actor: InvitationActor;
  /** the Apple ID used under `wrong_apple_id` (default `family.shared@icloud.example`) */
  otherAppleId?: string;
  /** by UDID: how many times the device answers NotNow (Setup Assistant) before showing the prompt */
  notNowTimes?: ReadonlyMap<string, number>;
  /** how long a device in Setup Assistant waits before polling again after a NotNow (default 200-1000 ms) */
  setupAssistantRetryMs?: IntRange;
  /** sign the devices' store account in with the user's own Apple ID (default true; inactive ones stay so) */
  signInStore?: boolean;
  rng?: Rng;
  /** epoch ms (default Date.now) */
  clock?: () => number;
}

export interface UserReport {
  username: string;
  appleId: string;
  behaviour: BehaviourKind;
  devices: string[];
  invitations: UserInvitation[];
  /** InviteToProgram prompts shown (Acknowledged), all devices */
  prompts: number;
  devicesPrompted: string[];
  /** NotNow answers to InviteToProgram, all devices */
  notNowAnswers: number;
  /** Self Service listings seen */
  listings: number;
  errors: string[];
}

export const DEFAULT_OTHER_APPLE_ID = 'family.shared@icloud.example';

export class SimulatedUser extends EventEmitter<{
  seen: [UserInvitation];
  acted: [UserInvitation];
  error: [Error];
}> {
  readonly username: string;
  readonly appleId: string;
  readonly behaviour: UserBehaviour;
  private readonly devices = new Map<string, SimulatedDevice>();
  private readonly clients = new Map<string, SelfServiceClient>();
  private readonly invitations = new Map<string, UserInvitation>();
  private readonly devicesPrompted = new Set<string>();
  private readonly notNowCount = new Map<string, number>();
  private readonly errors: string[] = [];
  private prompts = 0;
  private notNowAnswers = 0;
  private listings = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly detach: (() => void)[] = [];
  private stopped = false;
  private readonly rng: Rng;
  private readonly clock: () => number;

  constructor(private readonly options: SimulatedUserOptions) {
    super();
    this.username = options.username;
    this.appleId = options.appleId;
    this.behaviour = options.behaviour;
    this.rng = options.rng ?? Math.random;
    this.clock = options.clock ?? Date.now;
    for (const d of options.devices) this.devices.set(d.udid, d);
  }

  /** The hash Apple reports for the user's own Apple ID (what their devices report when signed in). */
  get appleIdHash(): string {
    return appleIdHash(this.appleId);
  }

  get otherAppleId(): string {
    return this.options.otherAppleId ?? DEFAULT_OTHER_APPLE_ID;
  }

  /**
   * Puts the devices in (or out of) Setup Assistant as `notNowTimes` says, signs their store accounts in
   * with the user's Apple ID, starts listening to them, and acts on prompts they showed earlier and
   * nobody handled.
   */
  async start(): Promise<void> {
    for (const device of this.devices.values()) {
      const inSetup = (this.options.notNowTimes?.get(device.udid) ?? 0) > 0;
      if ((device.spec.setupAssistant === true) !== inSetup) await device.setSetupAssistant(inSetup);
      const account = device.spec.storeAccount;
      if (this.options.signInStore !== false && account.active && account.appleIdHash !== this.appleIdHash) {
        await device.setStoreAccount({ active: true, appleIdHash: this.appleIdHash });
      }
      const listener = (e: DeviceEvent) => this.onDeviceEvent(device, e);
      device.on('event', listener);
      this.detach.push(() => device.off('event', listener));
    }
    for (const device of this.devices.values()) {
      for (const inv of device.invitations) {
        if (inv.status === 'Acknowledged' && inv.handledAt === null) this.onPrompt(device, inv);
      }
    }
  }

  /** Follows a device's Self Service client: its listings are what the user sees there. */
  attachSelfService(client: SelfServiceClient): void {
    const udid = client.udid;
    if (udid === null || !this.devices.has(udid))
      throw new Error(`${String(udid)} is not a device of ${this.username}`);
    this.clients.set(udid, client);
    const listener = (l: SelfServiceListing) => this.onListing(udid, l);
    client.on('listing', listener);
    this.detach.push(() => client.off('listing', listener));
  }

  /** Stops reacting: timers not yet fired are dropped (their invitations stay `pending`). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const d of this.detach.splice(0)) d();
    await Promise.allSettled([...this.inFlight]);
  }

  /** True once nothing is scheduled or running. */
  get idle(): boolean {
    return this.timers.size === 0 && this.inFlight.size === 0;
  }

  /** Waits until the user has nothing scheduled or running, or the deadline passes; answers `idle`. */
  async settle(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.idle && Date.now() < deadline) {
      await Promise.race([
        ...this.inFlight,
        new Promise((r) => setTimeout(r, Math.max(1, Math.min(25, deadline - Date.now())))),
      ]);
    }
    return this.idle;
  }

  report(): UserReport {
    return {
      username: this.username,
      appleId: this.appleId,
      behaviour: this.behaviour.kind,
      devices: [...this.devices.keys()],
      invitations: [...this.invitations.values()].map((i) => ({ ...i, devices: [...i.devices] })),
      prompts: this.prompts,
      devicesPrompted: [...this.devicesPrompted],
      notNowAnswers: this.notNowAnswers,
      listings: this.listings,
      errors: [...this.errors],
    };
  }

  // ---------------------------------------------------------------------------------------------------

  private onDeviceEvent(device: SimulatedDevice, e: DeviceEvent): void {
    if (this.stopped) return;
    if (e.type === 'invitation') {
      if (e.invitation.status === 'NotNow') {
        this.notNowAnswers++;
        this.notNowCount.set(device.udid, (this.notNowCount.get(device.udid) ?? 0) + 1);
      } else if (e.invitation.handledAt === null) {
        this.onPrompt(device, e.invitation);
      }
    } else if (e.type === 'connected' && device.spec.setupAssistant && device.wantsToPoll(e.channel)) {
      // the connect that carried a NotNow is over: a while later, Setup Assistant goes on or ends
      this.later(drawInRange(this.options.setupAssistantRetryMs ?? { min: 200, max: 1000 }, this.rng), () =>
        this.afterNotNow(device),
      );
    }
  }

  private async afterNotNow(device: SimulatedDevice): Promise<void> {
    const wanted = this.options.notNowTimes?.get(device.udid) ?? 1;
    if ((this.notNowCount.get(device.udid) ?? 0) >= wanted && device.spec.setupAssistant) {
      await device.setSetupAssistant(false);
    }
    await device.pollIfPending();
  }

  private onPrompt(device: SimulatedDevice, inv: InvitationRecord): void {
    this.prompts++;
    this.devicesPrompted.add(device.udid);
    this.see(device.udid, inv.invitationUrl, 'prompt', { commandUuid: inv.commandUuid });
  }

  private onListing(udid: string, listing: SelfServiceListing): void {
    if (this.stopped) return;
    this.listings++;
    for (const item of listing.invitations) {
      if (item.status !== 'pending') continue;
      this.see(udid, item.invitationUrl, 'self_service', { selfServiceId: item.id });
    }
  }

  private see(
    udid: string,
    invitationUrl: string,
    channel: InvitationChannel,
    ids: { commandUuid?: string; selfServiceId?: string },
  ): void {
    const key = inviteCodeOf(invitationUrl) ?? invitationUrl;
    const known = this.invitations.get(key);
    if (known) {
      if (!known.devices.includes(udid)) known.devices.push(udid);
      // acted on (or about to be) elsewhere: the user dismisses this prompt
      if (ids.commandUuid !== undefined && known.outcome !== 'ignored') {
        this.track(this.dismiss(udid, ids.commandUuid));
      }
      return;
    }
    const kind = this.behaviour.kind;
    const inv: UserInvitation = {
      key,
      invitationUrl,
      channel,
      udid,
      ...ids,
      firstSeenAt: this.clock(),
      outcome: kind === 'ignore' ? 'ignored' : 'pending',
      devices: [udid],
    };
    this.invitations.set(key, inv);
    this.emit('seen', { ...inv });
    if (kind !== 'ignore') this.later(this.behaviour.delayMs, () => this.act(inv));
  }

  private async act(inv: UserInvitation): Promise<void> {
    const kind = this.behaviour.kind;
    let url = inv.invitationUrl;
    try {
      if (inv.channel === 'self_service' && inv.selfServiceId !== undefined) {
        const client = this.clients.get(inv.udid);
        if (!client) throw new Error(`no Self Service client on ${inv.udid}`);
        url = await client.accept(inv.selfServiceId);
      }
      const appleId = kind === 'wrong_apple_id' ? this.otherAppleId : this.appleId;
      const r =
        kind === 'decline'
          ? await this.options.actor.decline(url)
          : await this.options.actor.accept(url, appleId);
      if (kind !== 'decline') inv.appleId = appleId;
      inv.result = r.outcome;
      if (r.detail !== undefined) inv.detail = r.detail;
      const ok =
        kind === 'decline'
          ? r.outcome === 'declined'
          : r.outcome === 'associated' || r.outcome === 'already_associated';
      inv.outcome = !ok
        ? 'failed'
        : kind === 'decline'
          ? 'declined'
          : kind === 'wrong_apple_id'
            ? 'wrong_apple_id'
            : 'accepted';
      if (!ok && inv.detail === undefined) inv.detail = `the page answered ${r.outcome}`;
    } catch (err) {
      inv.outcome = 'failed';
      inv.detail = (err as Error).message;
    }
    inv.actedAt = this.clock();
    inv.timeToActMs = inv.actedAt - inv.firstSeenAt;
    if (inv.outcome === 'failed') this.errors.push(`${inv.key}: ${inv.detail ?? 'failed'}`);
    await this.dismissAll(inv.key);
    this.emit('acted', { ...inv, devices: [...inv.devices] });
  }

  /** Marks every prompt of this invitation on the user's devices as handled. */
  private async dismissAll(key: string): Promise<void> {
    for (const device of this.devices.values()) {
      for (const p of device.invitations) {
        if (p.handledAt === null && (inviteCodeOf(p.invitationUrl) ?? p.invitationUrl) === key) {
          await device.markInvitationHandled(p.commandUuid);
        }
      }
    }
  }

  private async dismiss(udid: string, commandUuid: string): Promise<void> {
    await this.devices.get(udid)?.markInvitationHandled(commandUuid);
  }

  /** Runs `fn` after `ms` (tracked, so `settle` and `stop` know about it). */
  private later(ms: number, fn: () => Promise<void>): void {
    if (this.stopped) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopped) this.track(fn());
    }, ms);
    this.timers.add(t);
  }

  private track(p: Promise<void>): void {
    const run = p.catch((err: unknown) => {
      const error = err instanceof Error ? err : new Error(String(err));
      this.errors.push(error.message);
      if (this.listenerCount('error') > 0) this.emit('error', error);
    });
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
  }
}
