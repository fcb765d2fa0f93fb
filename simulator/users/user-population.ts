/**
 * The simulated users of a run and how they are wired to the fleet: a stable user map in the state
 * directory (`users.map.json`: usernames, Apple IDs, which devices each owns), the users and device
 * assignments on the server (admin API), one `SimulatedUser` per user with a behaviour drawn from the
 * run's probabilities, and one Self Service client per device of theirs, polling on an interval.
 */
import { promises as fs } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { z } from 'zod';
import type { Rng } from '../device/device-spec.ts';
import type { SimulatedDevice } from '../device/sim-device.ts';
import { runPool } from '../fleet.ts';
import { SelfServiceClient } from '../selfservice/self-service-client.ts';
import type { AdminDirectoryClient } from './admin-directory-client.ts';
import { drawInRange, drawUserBehaviour } from './behaviour.ts';
import type { BehaviourProbabilities, IntRange } from './behaviour.ts';
import type { InvitationActor } from './invitation-actor.ts';
import { SimulatedUser } from './simulated-user.ts';
import { summarizeUsers } from './user-summary.ts';
import type { UsersSummary } from './user-summary.ts';

/** Not a device state file: `listStates` only takes names without dots. */
export const USER_MAP_FILE = 'users.map.json';

const userEntrySchema = z.object({
  username: z.string().min(1),
  fullName: z.string().min(1),
  email: z.string().min(1),
  appleId: z.string().min(1),
  /** how many devices the user should have (drawn once in the devices-per-user range) */
  deviceTarget: z.number().int().nonnegative(),
  udids: z.array(z.string()),
  /** the server's id, from the last run that created or found them */
  serverUserId: z.string().optional(),
});
export type UserEntry = z.infer<typeof userEntrySchema>;

const userMapSchema = z.object({ version: z.literal(1), users: z.array(userEntrySchema) });

export interface UserPopulationOptions {
  /** where the user map is kept; null: in memory only */
  stateDir: string | null;
  users: number;
  devicesPerUser: IntRange;
  probabilities: BehaviourProbabilities;
  acceptDelayMs: IntRange;
  /** fraction of the users' devices in Setup Assistant at first (they answer NotNow) */
  notNowShare: number;
  /** how many NotNow answers such a device gives (default 1-3) */
  notNowTimes?: IntRange;
  /** 0: no Self Service polling */
  selfServiceIntervalMs: number;
  actor: InvitationActor;
  /** CA certificate(s) the Self Service clients trust for the server */
  ca: string | string[];
  rng?: Rng;
  /** default `simuser` (usernames `simuser0001`, ...) */
  usernamePrefix?: string;
  /** default `icloud.example` (Apple IDs `<username>@icloud.example`) */
  appleIdDomain?: string;
  /** the Apple ID users with `wrong_apple_id` sign in with */
  otherAppleId?: string;
  timeoutMs?: number;
  clock?: () => number;
}

export interface ProvisionResult {
  created: number;
  existing: number;
  assigned: number;
  failures: string[];
}

export interface DealResult {
  users: number;
  devicesAssigned: number;
  devicesUnassigned: number;
  usersWithoutDevices: number;
}

export class UserPopulation {
  private entries: UserEntry[] = [];
  readonly users: SimulatedUser[] = [];
  readonly clients: SelfServiceClient[] = [];
  private readonly rng: Rng;
  private readonly agent = new https.Agent({ keepAlive: false, maxSockets: 64 });

  private constructor(private readonly options: UserPopulationOptions) {
    this.rng = options.rng ?? Math.random;
  }

  /** Reads the user map from the state directory (none yet: empty). */
  static async load(options: UserPopulationOptions): Promise<UserPopulation> {
    const p = new UserPopulation(options);
    if (options.stateDir !== null) {
      const file = path.join(options.stateDir, USER_MAP_FILE);
      let text: string | null = null;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      if (text !== null) {
        const parsed = userMapSchema.safeParse(JSON.parse(text));
        if (!parsed.success) throw new Error(`${file}: not a user map (${parsed.error.issues[0]?.message})`);
        p.entries = parsed.data.users;
      }
    }
    return p;
  }

  /** The users of this run (the first `users` of the map). */
  get active(): readonly UserEntry[] {
    return this.entries.slice(0, this.options.users);
  }

  private newEntry(index: number): UserEntry {
    const username = `${this.options.usernamePrefix ?? 'simuser'}${String(index + 1).padStart(4, '0')}`;
    return {
      username,
      fullName: `Simulated User ${index + 1}`,
      email: `${username}@users.sim.example`,
      appleId: `${username}@${this.options.appleIdDomain ?? 'icloud.example'}`,
      deviceTarget: drawInRange(this.options.devicesPerUser, this.rng),
      udids: [],
    };
  }

  /**
   * Makes sure the map has `users` users and deals them the fleet's devices: a user keeps the devices
   * they had; devices nobody (active) has go to users below their target, in order. Saves the map.
   */
  async deal(devices: readonly SimulatedDevice[]): Promise<DealResult> {
    const { devicesPerUser } = this.options;
    while (this.entries.length < this.options.users) this.entries.push(this.newEntry(this.entries.length));
    const active = this.active;
    const fleet = new Set(devices.map((d) => d.udid));
    // a device has one owner (the first one in the map); users beyond this run's count keep theirs
    const owned = new Set<string>();
    for (const e of this.entries) {
      e.udids = e.udids.filter((u) => !owned.has(u));
      for (const u of e.udids) owned.add(u);
    }
    for (const e of active) {
      if (e.deviceTarget < devicesPerUser.min || e.deviceTarget > devicesPerUser.max) {
        e.deviceTarget = drawInRange(devicesPerUser, this.rng);
      }
    }
    const free = devices.filter((d) => !owned.has(d.udid)).map((d) => d.udid);
    let next = 0;
    for (const e of active) {
      let present = e.udids.filter((u) => fleet.has(u)).length;
      while (present < e.deviceTarget && next < free.length) {
        e.udids.push(free[next++] as string);
        present++;
      }
    }
    await this.save();
    const assigned = active.reduce((n, e) => n + e.udids.filter((u) => fleet.has(u)).length, 0);
    return {
      users: active.length,
      devicesAssigned: assigned,
      devicesUnassigned: devices.length - assigned,
      usersWithoutDevices: active.filter((e) => !e.udids.some((u) => fleet.has(u))).length,
    };
  }

  /** Creates (or finds) the users on the server and assigns each enrolled device of theirs. */
  async provision(
    admin: AdminDirectoryClient,
    devices: readonly SimulatedDevice[],
    concurrency = 8,
  ): Promise<ProvisionResult> {
    const byUdid = new Map(devices.map((d) => [d.udid, d]));
    const result: ProvisionResult = { created: 0, existing: 0, assigned: 0, failures: [] };
    await runPool(this.active, concurrency, async (e) => {
      try {
        const { id, created } = await admin.ensureUser({
          username: e.username,
          fullName: e.fullName,
          email: e.email,
        });
        e.serverUserId = id;
        if (created) result.created++;
        else result.existing++;
      } catch (err) {
        result.failures.push(`user ${e.username}: ${(err as Error).message}`);
      }
    });
    const assignments = this.active.flatMap((e) =>
      e.serverUserId === undefined
        ? []
        : e.udids
            .filter((u) => byUdid.get(u)?.enrolled === true)
            .map((udid) => ({ udid, userId: e.serverUserId as string })),
    );
    await runPool(assignments, concurrency, async ({ udid, userId }) => {
      try {
        await admin.assignDevice(udid, userId);
        result.assigned++;
      } catch (err) {
        result.failures.push(`device ${udid}: ${(err as Error).message}`);
      }
    });
    await this.save();
    return result;
  }

  /**
   * Makes the users of this run and starts them: behaviours drawn, devices put in Setup Assistant for
   * `notNowShare` of them, Self Service clients polling every `selfServiceIntervalMs` on enrolled devices.
   */
  async start(devices: readonly SimulatedDevice[]): Promise<void> {
    const o = this.options;
    const byUdid = new Map(devices.map((d) => [d.udid, d]));
    for (const e of this.active) {
      const own = e.udids.map((u) => byUdid.get(u)).filter((d): d is SimulatedDevice => d !== undefined);
      const notNowTimes = new Map<string, number>();
      for (const d of own) {
        if (this.rng() < o.notNowShare)
          notNowTimes.set(d.udid, drawInRange(o.notNowTimes ?? { min: 1, max: 3 }, this.rng));
      }
      const user = new SimulatedUser({
        username: e.username,
        appleId: e.appleId,
        devices: own,
        behaviour: drawUserBehaviour(o.probabilities, o.acceptDelayMs, this.rng),
        actor: o.actor,
        notNowTimes,
        setupAssistantRetryMs: o.acceptDelayMs,
        rng: this.rng,
        ...(o.otherAppleId !== undefined ? { otherAppleId: o.otherAppleId } : {}),
        ...(o.clock ? { clock: o.clock } : {}),
      });
      await user.start();
      for (const d of own) {
        if (!d.enrolled) continue;
        const client = SelfServiceClient.forDevice(d, {
          ca: o.ca,
          agent: this.agent,
          ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        });
        user.attachSelfService(client);
        this.clients.push(client);
        if (o.selfServiceIntervalMs > 0) client.start({ intervalMs: o.selfServiceIntervalMs, rng: this.rng });
      }
      this.users.push(user);
    }
  }

  /** One Self Service listing on every client (e.g. at the end of a run that does not stay). */
  async pollAllOnce(concurrency = 16): Promise<void> {
    await runPool(this.clients, concurrency, async (c) => {
      await c.pollOnce();
    });
  }

  /** Waits until no user has anything scheduled or running, or the deadline passes. */
  async settle(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await Promise.all(this.users.map((u) => u.settle(Math.max(0, deadline - Date.now()))));
      if (this.users.every((u) => u.idle)) return true;
      if (Date.now() >= deadline) return false;
    }
  }

  /** Stops the Self Service clients and the users (actions not yet started stay `pending`). */
  async stop(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.stop()));
    await Promise.all(this.users.map((u) => u.stop()));
    this.agent.destroy();
  }

  summary(): UsersSummary {
    return summarizeUsers(
      this.users.map((u) => u.report()),
      this.clients.map((c) => c.stats),
    );
  }

  private async save(): Promise<void> {
    const dir = this.options.stateDir;
    if (dir === null) return;
    await fs.mkdir(dir, { recursive: true });
    const file = path.join(dir, USER_MAP_FILE);
    const tmp = `${file}.${process.pid}.tmp`;
    await fs.writeFile(tmp, `${JSON.stringify({ version: 1, users: this.entries }, null, 2)}\n`, {
      mode: 0o600,
    });
    await fs.rename(tmp, file);
  }
}
