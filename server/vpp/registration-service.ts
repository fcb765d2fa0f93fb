import { randomUUID } from 'node:crypto';
import type { UserStore } from '../directory/store.ts';
import { NotFoundError } from '../errors.ts';
import type { EventBus } from '../events.ts';
import type { JobQueue } from '../jobs/job-runner.ts';
import type { Logger } from '../log.ts';
import { AppleError, type AppsAndBooks } from './apple-client.ts';
import {
  appleFailed,
  LocationTokenError,
  NoManagedAppleIdError,
  RegistrationInProgressError,
} from './errors.ts';
import {
  locationKeyPrefix,
  VPP_RETIRE,
  VPP_WORK,
  workKey,
  type LocationService,
} from './location-service.ts';
import type { Registration, RegistrationState, VppStore } from './store.ts';

export type SkipReason = 'user_not_found' | 'no_managed_apple_id';

export interface EnsureRegisteredResult {
  /** users whose registration was created (or restarted after retire/failure): Apple work is queued */
  queued: string[];
  /** users that already had a registration on its way or done (nothing queued) */
  existing: string[];
  /** users left out, with why */
  skipped: { userId: string; reason: SkipReason }[];
}

export interface RegistrationServiceDeps {
  store: VppStore;
  users: Pick<UserStore, 'get' | 'getUsersByIds' | 'missing'>;
  locations: LocationService;
  apple: AppsAndBooks;
  jobs: JobQueue;
  events: EventBus;
  log: Logger;
  now?: () => Date;
}

/** Users checked per directory call. */
const USER_CHUNK = 1000;

/** A registration to retire at Apple after its user was deleted here. */
export interface RetireAtApple {
  locationId: string;
  clientUserId: string;
}

/**
 * Registrations Apple may have: every state but `failed` (Apple refused the create) and `retired`.
 * `pending` is in: the location's work job may send its create between the read and the delete.
 * Retiring a user Apple does not have is a harmless per-user failure in Apple's event.
 */
const mayBeAtApple = (state: RegistrationState) => state !== 'failed' && state !== 'retired';
/** Users per `vpp.retire` job (the client splits them into Apple's batches). */
const RETIRE_JOB_USERS = 1000;

function chunked<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Registrations of users with Apple's Apps and Books, one per (user, location). Registering is
 * asynchronous and durable: rows are stored `pending`, and the location's work job creates them at
 * Apple in batches (`users/create`, 100 per call), follows the events and reads invite codes.
 */
export class RegistrationService {
  constructor(private readonly deps: RegistrationServiceDeps) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  /**
   * Makes sure every user has a registration at the location, creating the missing ones (and
   * restarting retired ones with a new clientUserId, failed ones with theirs) through durable jobs.
   * `managed`: users are created with their Managed Apple ID (associated at once, no invitation);
   * users without one are skipped (`no_managed_apple_id`). Never creates a user twice at Apple.
   * Works while the location's token is expired: the rows wait for the renewal.
   */
  async ensureRegistered(
    locationId: string,
    userIds: readonly string[],
    opts: { managed?: boolean } = {},
  ): Promise<EnsureRegisteredResult> {
    const loc = await this.deps.store.getLocation(locationId);
    if (!loc) throw new NotFoundError('location', 'location_not_found');
    const ids = [...new Set(userIds)];
    const skipped: EnsureRegisteredResult['skipped'] = [];
    const missing = new Set<string>();
    for (const part of chunked(ids, USER_CHUNK)) {
      for (const id of await this.deps.users.missing(part)) missing.add(id);
    }
    let wanted = ids.filter((id) => {
      if (!missing.has(id)) return true;
      skipped.push({ userId: id, reason: 'user_not_found' });
      return false;
    });
    const managed = opts.managed === true;
    if (managed) {
      const withId = new Set<string>();
      for (const part of chunked(wanted, USER_CHUNK)) {
        for (const u of await this.deps.users.getUsersByIds(part)) if (u.managedAppleId) withId.add(u.id);
      }
      wanted = wanted.filter((id) => {
        if (withId.has(id)) return true;
        skipped.push({ userId: id, reason: 'no_managed_apple_id' });
        return false;
      });
    }
    const added = await this.deps.store.addRegistrations(
      locationId,
      wanted,
      { managed },
      randomUUID,
      this.now(),
    );
    if (added.queued.length > 0) {
      await this.deps.jobs.enqueue(VPP_WORK, { locationId }, { key: workKey(locationId) });
    }
    this.deps.log.debug(
      { locationId, queued: added.queued.length, existing: added.existing.length, skipped: skipped.length },
      'registrations ensured',
    );
    return { queued: added.queued, existing: added.existing, skipped };
  }

  /**
   * Registers one user now (the admin's call): the registration as it is after queueing, and whether it
   * was created. A location whose token does not work is a `409` here (nothing stored).
   */
  async registerNow(
    userId: string,
    locationId: string,
    opts: { managed?: boolean } = {},
  ): Promise<{ registration: Registration; created: boolean }> {
    const user = await this.deps.users.get(userId);
    if (!user) throw new NotFoundError('user');
    const loc = await this.deps.store.getLocation(locationId);
    if (!loc) throw new NotFoundError('location');
    if (loc.status !== 'active') throw new LocationTokenError(loc.status, loc.statusMessage);
    if (opts.managed && !user.managedAppleId) throw new NoManagedAppleIdError();
    const r = await this.ensureRegistered(locationId, [userId], opts);
    const registration = await this.deps.store.getRegistration(userId, locationId);
    if (!registration) throw new NotFoundError('registration');
    return { registration, created: r.queued.includes(userId) };
  }

  registrationsOfUser(userId: string): Promise<Registration[]> {
    return this.deps.store.registrationsOfUser(userId);
  }

  /**
   * The user's registrations Apple may know (sent to it and not retired): what to retire at Apple once
   * the user is deleted here (read before the delete, which removes them).
   */
  async knownAtApple(userId: string): Promise<RetireAtApple[]> {
    const regs = await this.deps.store.registrationsOfUser(userId);
    return regs
      .filter((r) => mayBeAtApple(r.state))
      .map((r) => ({ locationId: r.locationId, clientUserId: r.clientUserId }));
  }

  /**
   * Durable `users/retire` calls for registrations whose user is gone: one job per location and
   * `RETIRE_JOB_USERS` users, keyed under the location (a token renewal wakes them).
   */
  async retireAtApple(items: readonly RetireAtApple[]): Promise<void> {
    const byLocation = new Map<string, string[]>();
    for (const i of items)
      byLocation.set(i.locationId, [...(byLocation.get(i.locationId) ?? []), i.clientUserId]);
    for (const [locationId, ids] of byLocation) {
      for (let i = 0; i < ids.length; i += RETIRE_JOB_USERS) {
        await this.deps.jobs.enqueue(
          VPP_RETIRE,
          { locationId, clientUserIds: ids.slice(i, i + RETIRE_JOB_USERS) },
          { key: `${locationKeyPrefix(locationId)}retire:${randomUUID()}` },
        );
      }
    }
  }

  /** The registrations of these users at the location (users without one are left out). */
  registrationsAt(locationId: string, userIds: readonly string[]): Promise<Registration[]> {
    return this.deps.store.registrationsAt(locationId, userIds);
  }

  getRegistration(userId: string, locationId: string): Promise<Registration | null> {
    return this.deps.store.getRegistration(userId, locationId);
  }

  /**
   * Retires the user's registration at Apple (`users/retire`) and here. A later `ensureRegistered`
   * registers the user again with a new clientUserId (and so a new invitation: the "wrong Apple ID" fix).
   */
  async retire(userId: string, locationId: string): Promise<Registration> {
    const reg = await this.deps.store.getRegistration(userId, locationId);
    if (!reg) throw new NotFoundError('registration');
    if (reg.state === 'retired') return reg;
    if (reg.state === 'creating' || reg.state === 'lookup') throw new RegistrationInProgressError();
    if (reg.state !== 'pending' && reg.state !== 'failed') {
      // Apple has the user: retire it there first.
      const loc = await this.deps.store.getLocation(locationId);
      if (!loc) throw new NotFoundError('location');
      if (loc.status !== 'active') throw new LocationTokenError(loc.status, loc.statusMessage);
      try {
        await this.deps.apple.retireUsers(this.deps.locations.tokenOf(loc), [reg.clientUserId]);
      } catch (err) {
        const problem = await this.deps.locations.onAppleError(loc, err);
        if (problem) throw new LocationTokenError(problem, err instanceof Error ? err.message : null);
        if (err instanceof AppleError) throw appleFailed(err);
        throw err;
      }
    }
    const retired = await this.deps.store.retireRegistration(reg.id, this.now());
    if (!retired) throw new NotFoundError('registration');
    this.deps.log.info({ userId, locationId, clientUserId: reg.clientUserId }, 'registration retired');
    this.deps.events.emit('registration.retired', { userId, locationId });
    return retired;
  }
}
