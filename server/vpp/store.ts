/**
 * Apps and Books data: locations (one per service token) and registrations (one per user and
 * location). Store interfaces only (implemented in `server/storage/vpp-store.ts`). Ids are strings;
 * times come from the caller.
 */
import type { AppleUser } from './apple-client.ts';

export type LocationStatus = 'setting_up' | 'active' | 'token_expired' | 'token_revoked' | 'token_invalid';

export interface Location {
  id: string;
  /** the admin's label */
  name: string;
  organizationName: string;
  /** Apple's own name of the location (`client/config`) */
  locationName: string | null;
  countryCode: string | null;
  tokenExpiration: Date | null;
  appleUid: string | null;
  siteId: string | null;
  autoRegisterManagedUsers: boolean;
  status: LocationStatus;
  /** why the location does not work (Apple's message), when it does not */
  statusMessage: string | null;
  /** `service/config`'s `invitationEmail`, as last read */
  invitationTemplate: string | null;
  /** Apple's `versionId` of the last `users` sync */
  versionId: string | null;
  lastSyncedAt: Date | null;
  lastSyncError: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** The location with its secrets, for the services only (never presented). */
export interface LocationSecrets {
  sTokenSealed: string;
  notificationTokenHash: string | null;
}

export interface NewLocation {
  name: string;
  organizationName: string;
  locationName: string | null;
  countryCode: string | null;
  tokenExpiration: Date | null;
  appleUid: string | null;
  siteId: string | null;
  autoRegisterManagedUsers: boolean;
  invitationTemplate: string | null;
  notificationTokenHash: string;
}

export interface LocationPatch {
  name?: string;
  siteId?: string | null;
  autoRegisterManagedUsers?: boolean;
  /** a renewed token: sealed by the caller's function (associated data needs the id) */
  renewal?: {
    seal: (id: string) => string;
    organizationName: string;
    locationName: string | null;
    countryCode: string | null;
    tokenExpiration: Date | null;
  };
  status?: LocationStatus;
  statusMessage?: string | null;
  invitationTemplate?: string | null;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/**
 * Internal registration states:
 * `pending` (to create at Apple) → `creating` (in a `users/create` event, `eventId` set) → `created`
 * (the event completed; the invite code comes by notification or sync) → `registered` (invite code
 * known) → `associated` (the user accepted; `idHash`); `lookup` (Apple answered 9716: read the
 * existing user by `clientUserId`); `failed` (Apple refused the user); `retired`.
 */
export type RegistrationState =
  'pending' | 'creating' | 'created' | 'lookup' | 'registered' | 'associated' | 'failed' | 'retired';

/** What the API shows: `pending` covers every state before Apple's answer is known. */
export type RegistrationStatus = 'pending' | 'registered' | 'associated' | 'retired' | 'failed';

export function publicStatus(state: RegistrationState): RegistrationStatus {
  switch (state) {
    case 'registered':
    case 'associated':
    case 'failed':
    case 'retired':
      return state;
    default:
      return 'pending';
  }
}

export interface Registration {
  id: string;
  locationId: string;
  userId: string;
  clientUserId: string;
  state: RegistrationState;
  status: RegistrationStatus;
  /** created with the user's Managed Apple ID (associated without invitation) */
  managed: boolean;
  inviteCode: string | null;
  invitationUrl: string | null;
  idHash: string | null;
  eventId: string | null;
  errorNumber: number | null;
  errorMessage: string | null;
  requestedAt: Date;
  sentAt: Date | null;
  registeredAt: Date | null;
  associatedAt: Date | null;
  retiredAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

/** A pending registration with what `users/create` needs. */
export interface PendingRegistration {
  id: string;
  userId: string;
  clientUserId: string;
  managed: boolean;
  /** the user's Managed Apple ID (null when the user has none, or the row is not `managed`) */
  managedAppleId: string | null;
}

export interface AddRegistrationsResult {
  /** users whose registration is new, or restarted (retired or failed before): to create at Apple */
  queued: string[];
  /** users with a registration already on its way or done */
  existing: string[];
}

/** What applying Apple's view of users changed. */
export interface AppliedUsers {
  registered: { userId: string; clientUserId: string }[];
  associated: { userId: string; clientUserId: string; idHash: string }[];
  retired: { userId: string; clientUserId: string }[];
  /** users Apple knows and we do not (another MDM's, or retired here and re-registered) */
  unknown: number;
  /** users Apple reports `Registered` without an invite code: moved to `lookup` */
  lookups: number;
}

export interface EventOutcome {
  /** users whose create failed with 9716 (exists): moved to `lookup` */
  lookups: number;
  failed: { userId: string; clientUserId: string; errorNumber: number; errorMessage: string }[];
  /** users the event created (now `created` until their invite code is known) */
  created: number;
}

export interface OutstandingWork {
  pending: number;
  creating: number;
  created: number;
  lookup: number;
}

export interface VppStore {
  // ---- locations ----
  /**
   * Inserts a location (status `setting_up`) with its sealed token in one transaction. `seal` gets the
   * new id (the associated data). Throws `LocationExistsError` when the Apple location is already one of ours.
   */
  createLocation(input: NewLocation, seal: (id: string) => string, now: Date): Promise<Location>;
  getLocation(id: string): Promise<(Location & LocationSecrets) | null>;
  findLocationByAppleUid(appleUid: string): Promise<Location | null>;
  /** Ordered by id; `q` matches the name, Apple's location name and the organization. */
  /** `siteId`: only the locations of that site (a site-limited API token's list). */
  listLocations(opts: {
    limit: number;
    cursor: string | null;
    q: string | null;
    siteId?: string | null;
  }): Promise<Page<Location>>;
  /** Every location id, for the periodic work. */
  allLocationIds(): Promise<string[]>;
  /** Null when the location does not exist. */
  updateLocation(id: string, patch: LocationPatch, now: Date): Promise<Location | null>;
  /** Marks the token problem unless the token changed meanwhile (`sTokenSealed` is the one that failed). */
  markLocationToken(
    id: string,
    sTokenSealed: string,
    status: LocationStatus,
    message: string,
    now: Date,
  ): Promise<void>;
  setSyncState(
    id: string,
    state: { versionId?: string | null; syncedAt?: Date; error: string | null },
    now: Date,
  ): Promise<void>;
  /** Removes the location, its registrations and its notification ids. False when unknown. */
  deleteLocation(id: string): Promise<boolean>;

  // ---- registrations ----
  /**
   * Makes sure each user has a live registration at the location (many rows per transaction): missing
   * ones are inserted `pending` with a new `clientUserId`; `retired` ones restart with a new
   * `clientUserId`; `failed` ones restart with theirs. The users must exist.
   */
  addRegistrations(
    locationId: string,
    userIds: readonly string[],
    opts: { managed: boolean },
    newClientUserId: () => string,
    now: Date,
  ): Promise<AddRegistrationsResult>;
  getRegistration(userId: string, locationId: string): Promise<Registration | null>;
  registrationsOfUser(userId: string): Promise<Registration[]>;
  /** The registrations of these users at the location (any order; users without one are left out). */
  registrationsAt(locationId: string, userIds: readonly string[]): Promise<Registration[]>;
  /** Oldest first. */
  pendingRegistrations(locationId: string, limit: number): Promise<PendingRegistration[]>;
  /** `pending` → `creating` with the event, for those still pending. */
  markCreating(ids: readonly string[], eventId: string, now: Date): Promise<void>;
  /** `pending`/`creating` → `failed` with Apple's error (a create Apple refused); returns the users. */
  failRegistrations(
    ids: readonly string[],
    error: { errorNumber: number | null; errorMessage: string },
    now: Date,
  ): Promise<{ userId: string; clientUserId: string }[]>;
  /** Events with rows still `creating`, oldest first, sent before `sentBefore`. */
  openEvents(
    locationId: string,
    sentBefore: Date,
    limit: number,
  ): Promise<{ eventId: string; sentAt: Date }[]>;
  /** Applies a finished event: 9716 → `lookup`, other failures → `failed`, the rest → `created`. */
  finishEvent(
    locationId: string,
    eventId: string,
    failures: readonly { clientUserId: string; errorNumber: number; errorMessage: string }[],
    now: Date,
  ): Promise<EventOutcome>;
  /** Rows in `lookup`, oldest first. */
  lookups(locationId: string, limit: number): Promise<{ id: string; clientUserId: string }[]>;
  /** Moves these users (by clientUserId) to `lookup` when they are still before `registered`. */
  markLookup(locationId: string, clientUserIds: readonly string[], now: Date): Promise<number>;
  /** A `lookup` that found no user at Apple: `pending` again (with a new clientUserId when `renew`). */
  restartRegistration(id: string, newClientUserId: string | null, now: Date): Promise<void>;
  /** `created` rows not touched since `before`: the sync did not see them, so read them one by one. */
  lookupStaleCreated(locationId: string, before: Date): Promise<number>;
  outstanding(locationId: string): Promise<OutstandingWork>;
  /**
   * Applies Apple's view of users (notification, sync or lookup): states only move forward
   * (`registered` → `associated`); unknown clientUserIds are counted and ignored. With
   * `notificationId`, the notification is recorded in the same transaction and a duplicate applies
   * nothing (`duplicate: true`).
   */
  applyAppleUsers(
    locationId: string,
    users: readonly AppleUser[],
    now: Date,
    opts?: {
      notification?: { id: string; type: string };
      /** failures from a notification: 9716 → `lookup`, others → `failed` */
      failures?: readonly { clientUserId: string; errorNumber: number; errorMessage: string }[];
    },
  ): Promise<AppliedUsers & { duplicate: boolean; failed: EventOutcome['failed']; failedLookups: number }>;
  /** Records a notification that changes nothing (e.g. an unknown type). False when already seen. */
  recordNotification(locationId: string, notificationId: string, type: string, now: Date): Promise<boolean>;
  /** Marks the registration retired (locally). Null when it does not exist. */
  retireRegistration(id: string, now: Date): Promise<Registration | null>;
  /** Forgets notification ids received before `before`. */
  purgeNotifications(before: Date): Promise<number>;
}
