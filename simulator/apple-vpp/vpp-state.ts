/**
 * The simulated service's domain: locations (one per sToken), their users, asynchronous user events
 * and invitations. No I/O and no timers: operations return the notifications they cause, and the
 * service delivers them.
 */
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { appleErrorBody } from './errors.ts';
import { appleIdHash } from './id-hash.ts';
import { presentUser } from './model.ts';
import type {
  ClientConfig,
  EventRecord,
  EventType,
  FailureRecord,
  LocationRecord,
  NotificationType,
  RequestUser,
  StateFile,
  UserRecord,
} from './model.ts';
import { appleDate, encodeSToken } from './s-token.ts';

/** Apple sends at most 100 elements in one notification. */
export const NOTIFICATION_CHUNK = 100;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface NotificationDraft {
  locationToken: string;
  notificationType: NotificationType;
  notification: Record<string, unknown>;
}

export interface NewLocation {
  orgName: string;
  /** ISO-8601 or Apple's format, or epoch ms; default a year from now */
  expDate?: string | number | Date;
  locationName?: string;
  countryISO2ACode?: string;
  websiteURL?: string;
}

export type AcceptResult =
  | { result: 'associated'; uId: string; clientUserId: string; idHash: string }
  /** the same Apple ID accepted again: nothing changed */
  | { result: 'already_associated'; uId: string; clientUserId: string; idHash: string }
  /** a different Apple ID tried to accept an invitation already accepted: the first one is kept */
  | { result: 'kept_first_apple_id'; uId: string; clientUserId: string; idHash: string }
  | { result: 'retired'; uId: string; clientUserId: string }
  | { result: 'not_found' };

export type DeclineResult =
  | { result: 'declined'; uId: string; clientUserId: string }
  | { result: 'already_associated'; uId: string; clientUserId: string }
  | { result: 'retired'; uId: string; clientUserId: string }
  | { result: 'not_found' };

export interface InvitationInfo {
  orgName: string;
  locationName: string;
  uId: string;
  clientUserId: string;
  status: UserRecord['status'];
}

export interface UsersQuery {
  clientUserId?: string;
  activeOnly?: boolean;
  retiredOnly?: boolean;
  /** only users changed after this version (already parsed) */
  sinceVersion?: number;
  pageIndex: number;
  pageSize: number;
}

export interface UsersPage {
  users: UserRecord[];
  currentPageIndex: number;
  nextPageIndex?: number;
  totalPages: number;
}

interface LocationIndex {
  active: Map<string, UserRecord>;
  events: Map<string, EventRecord>;
}

function newInviteCode(): string {
  return randomBytes(16).toString('hex');
}

function newUId(): string {
  // Apple's uIds are 16-digit decimal strings
  return `${randomInt(1, 10)}${String(randomInt(0, 1_000_000_000)).padStart(9, '0')}${String(randomInt(0, 1_000_000)).padStart(6, '0')}`;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export class VppState {
  private readonly locations = new Map<string, LocationRecord>();
  private readonly index = new Map<string, LocationIndex>();
  private readonly invites = new Map<string, { loc: LocationRecord; user: UserRecord }>();

  constructor(private readonly now: () => number) {}

  // ---- locations ----

  addLocation(opts: NewLocation): { sToken: string; location: LocationRecord } {
    const now = this.now();
    const expMs =
      opts.expDate === undefined
        ? now + 365 * DAY_MS
        : opts.expDate instanceof Date
          ? opts.expDate.getTime()
          : typeof opts.expDate === 'number'
            ? opts.expDate
            : Date.parse(opts.expDate.replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
    if (!Number.isFinite(expMs)) throw new Error(`invalid expDate: ${String(opts.expDate)}`);
    const token = randomBytes(48).toString('base64');
    const location: LocationRecord = {
      token,
      uId: newUId(),
      orgName: opts.orgName,
      locationName: opts.locationName ?? opts.orgName,
      countryISO2ACode: opts.countryISO2ACode ?? 'US',
      expDate: appleDate(expMs),
      revoked: false,
      websiteURL: opts.websiteURL ?? 'https://business.apple.com',
      clientConfig: { notificationTypes: [] },
      version: 0,
      nextSeq: 0,
      users: [],
      events: [],
    };
    this.insertLocation(location);
    return { sToken: this.sTokenOf(location), location };
  }

  sTokenOf(loc: LocationRecord): string {
    return encodeSToken({ token: loc.token, expDate: loc.expDate, orgName: loc.orgName });
  }

  byToken(token: string): LocationRecord | undefined {
    return this.locations.get(token);
  }

  byUId(uId: string): LocationRecord | undefined {
    for (const loc of this.locations.values()) if (loc.uId === uId) return loc;
    return undefined;
  }

  allLocations(): LocationRecord[] {
    return [...this.locations.values()];
  }

  setClientConfig(loc: LocationRecord, config: ClientConfig): void {
    loc.clientConfig = config;
  }

  // ---- users ----

  activeUser(loc: LocationRecord, clientUserId: string): UserRecord | undefined {
    return this.idx(loc).active.get(clientUserId);
  }

  /** Records an asynchronous user event; `completeEvent` applies it. */
  addEvent(loc: LocationRecord, type: EventType, users: RequestUser[]): EventRecord {
    const event: EventRecord = {
      eventId: randomUUID(),
      type,
      eventStatus: 'PENDING',
      users,
      numCompleted: 0,
      failures: [],
      createdAt: this.now(),
    };
    loc.events.push(event);
    this.idx(loc).events.set(event.eventId, event);
    return event;
  }

  event(loc: LocationRecord, eventId: string): EventRecord | undefined {
    return this.idx(loc).events.get(eventId);
  }

  pendingEvents(): { loc: LocationRecord; event: EventRecord }[] {
    const out: { loc: LocationRecord; event: EventRecord }[] = [];
    for (const loc of this.locations.values()) {
      for (const event of loc.events) if (event.eventStatus === 'PENDING') out.push({ loc, event });
    }
    return out;
  }

  /** Applies a pending event and returns the USER_MANAGEMENT notifications it causes. */
  completeEvent(loc: LocationRecord, eventId: string): NotificationDraft[] {
    const event = this.event(loc, eventId);
    if (!event || event.eventStatus !== 'PENDING') return [];
    const done: UserRecord[] = [];
    const failures: FailureRecord[] = [];
    const fail = (clientUserId: string, errorNumber: number) =>
      failures.push({ clientUserId, ...appleErrorBody(errorNumber) });

    for (const req of event.users) {
      const existing = this.activeUser(loc, req.clientUserId);
      if (event.type === 'CREATE') {
        if (existing) fail(req.clientUserId, 9716);
        else done.push(this.createUser(loc, req));
      } else if (!existing) {
        fail(req.clientUserId, 9609);
      } else if (event.type === 'UPDATE') {
        done.push(this.updateUser(loc, existing, req));
      } else {
        done.push(this.retireUser(loc, existing));
      }
    }

    event.numCompleted = done.length;
    event.failures = failures;
    event.eventStatus = failures.length > 0 && done.length === 0 ? 'FAILED' : 'COMPLETE';
    event.completedAt = this.now();
    return this.userManagementDrafts(loc, event, done, failures);
  }

  private createUser(loc: LocationRecord, req: RequestUser): UserRecord {
    const now = this.now();
    const user: UserRecord = {
      seq: loc.nextSeq++,
      clientUserId: req.clientUserId,
      status: 'Registered',
      version: this.bump(loc),
      createdAt: now,
      modifiedAt: now,
      declines: 0,
    };
    if (req.email !== undefined) user.email = req.email;
    if (req.managedAppleId !== undefined) {
      user.managedAppleId = req.managedAppleId;
      user.status = 'Associated';
      user.appleId = req.managedAppleId;
      user.idHash = appleIdHash(req.managedAppleId);
    } else {
      user.inviteCode = newInviteCode();
      this.invites.set(user.inviteCode, { loc, user });
    }
    loc.users.push(user);
    this.idx(loc).active.set(user.clientUserId, user);
    return user;
  }

  private updateUser(loc: LocationRecord, user: UserRecord, req: RequestUser): UserRecord {
    if (req.email !== undefined) user.email = req.email;
    if (req.managedAppleId !== undefined && req.managedAppleId !== user.managedAppleId) {
      user.managedAppleId = req.managedAppleId;
      user.status = 'Associated';
      user.appleId = req.managedAppleId;
      user.idHash = appleIdHash(req.managedAppleId);
    }
    this.touch(loc, user);
    return user;
  }

  private retireUser(loc: LocationRecord, user: UserRecord): UserRecord {
    user.status = 'Retired';
    this.idx(loc).active.delete(user.clientUserId);
    this.touch(loc, user);
    return user;
  }

  private userManagementDrafts(
    loc: LocationRecord,
    event: EventRecord,
    done: UserRecord[],
    failures: FailureRecord[],
  ): NotificationDraft[] {
    const drafts: NotificationDraft[] = [];
    for (const part of chunks(done, NOTIFICATION_CHUNK)) {
      drafts.push({
        locationToken: loc.token,
        notificationType: 'USER_MANAGEMENT',
        notification: {
          eventId: event.eventId,
          result: 'SUCCESS',
          type: event.type,
          users: part.map(presentUser),
        },
      });
    }
    // Apple puts at most one error in a notification: one FAILURE notification per error number
    const byNumber = new Map<number, FailureRecord[]>();
    for (const f of failures) byNumber.set(f.errorNumber, [...(byNumber.get(f.errorNumber) ?? []), f]);
    for (const [errorNumber, list] of byNumber) {
      for (const part of chunks(list, NOTIFICATION_CHUNK)) {
        const clientUserIds = part.map((f) => f.clientUserId);
        drafts.push({
          locationToken: loc.token,
          notificationType: 'USER_MANAGEMENT',
          notification: {
            eventId: event.eventId,
            result: 'FAILURE',
            type: event.type,
            users: clientUserIds.map((clientUserId) => ({ clientUserId })),
            error: { ...appleErrorBody(errorNumber), errorInfo: { clientUserIds } },
            failures: part,
          },
        });
      }
    }
    return drafts;
  }

  listUsers(loc: LocationRecord, q: UsersQuery): UsersPage | { pageOutOfRange: true } {
    let users = loc.users;
    if (q.clientUserId !== undefined) users = users.filter((u) => u.clientUserId === q.clientUserId);
    if (q.activeOnly) users = users.filter((u) => u.status !== 'Retired');
    if (q.retiredOnly) users = users.filter((u) => u.status === 'Retired');
    const since = q.sinceVersion;
    if (since !== undefined) users = users.filter((u) => u.version > since);
    const totalPages = Math.ceil(users.length / q.pageSize);
    if (q.pageIndex < 0 || (q.pageIndex > 0 && q.pageIndex >= totalPages)) return { pageOutOfRange: true };
    const start = q.pageIndex * q.pageSize;
    const page: UsersPage = {
      users: users.slice(start, start + q.pageSize),
      currentPageIndex: q.pageIndex,
      totalPages,
    };
    if (q.pageIndex + 1 < totalPages) page.nextPageIndex = q.pageIndex + 1;
    return page;
  }

  /** `<uId>.<counter>`: opaque to clients; a version from another location or the future is invalid. */
  versionIdOf(loc: LocationRecord): string {
    return `${loc.uId}.${loc.version}`;
  }

  parseVersionId(loc: LocationRecord, versionId: string): number | null {
    const m = /^(\d+)\.(\d+)$/.exec(versionId);
    if (!m || m[1] !== loc.uId) return null;
    const n = Number(m[2]);
    return Number.isSafeInteger(n) && n <= loc.version ? n : null;
  }

  // ---- invitations ----

  invitation(inviteCode: string): InvitationInfo | null {
    const hit = this.invites.get(inviteCode);
    if (!hit) return null;
    return {
      orgName: hit.loc.orgName,
      locationName: hit.loc.locationName,
      uId: hit.loc.uId,
      clientUserId: hit.user.clientUserId,
      status: hit.user.status,
    };
  }

  accept(inviteCode: string, appleId: string): { outcome: AcceptResult; drafts: NotificationDraft[] } {
    const hit = this.invites.get(inviteCode);
    if (!hit) return { outcome: { result: 'not_found' }, drafts: [] };
    const { loc, user } = hit;
    const base = { uId: loc.uId, clientUserId: user.clientUserId };
    if (user.status === 'Retired') return { outcome: { result: 'retired', ...base }, drafts: [] };
    const idHash = appleIdHash(appleId);
    if (user.status === 'Associated' && user.idHash !== undefined) {
      const result = user.idHash === idHash ? 'already_associated' : 'kept_first_apple_id';
      return { outcome: { result, ...base, idHash: user.idHash }, drafts: [] };
    }
    user.status = 'Associated';
    user.idHash = idHash;
    user.appleId = appleId.trim();
    this.touch(loc, user);
    const draft: NotificationDraft = {
      locationToken: loc.token,
      notificationType: 'USER_ASSOCIATED',
      notification: { associatedUsers: [presentUser(user)] },
    };
    return { outcome: { result: 'associated', ...base, idHash }, drafts: [draft] };
  }

  decline(inviteCode: string): DeclineResult {
    const hit = this.invites.get(inviteCode);
    if (!hit) return { result: 'not_found' };
    const { loc, user } = hit;
    const base = { uId: loc.uId, clientUserId: user.clientUserId };
    if (user.status === 'Retired') return { result: 'retired', ...base };
    if (user.status === 'Associated') return { result: 'already_associated', ...base };
    user.declines += 1;
    return { result: 'declined', ...base };
  }

  // ---- persistence ----

  toJSON(): Omit<StateFile, 'pendingNotifications'> {
    return { format: 1, locations: this.allLocations() };
  }

  /** Adds the file's locations (locations minted before loading are kept). */
  load(file: Omit<StateFile, 'pendingNotifications'>): void {
    for (const loc of file.locations) if (!this.locations.has(loc.token)) this.insertLocation(loc);
  }

  // ---- internals ----

  private insertLocation(loc: LocationRecord): void {
    this.locations.set(loc.token, loc);
    const ix: LocationIndex = { active: new Map(), events: new Map() };
    for (const u of loc.users) {
      if (u.status !== 'Retired') ix.active.set(u.clientUserId, u);
      if (u.inviteCode !== undefined) this.invites.set(u.inviteCode, { loc, user: u });
    }
    for (const e of loc.events) ix.events.set(e.eventId, e);
    this.index.set(loc.token, ix);
  }

  private idx(loc: LocationRecord): LocationIndex {
    const ix = this.index.get(loc.token);
    if (!ix) throw new Error('location is not registered');
    return ix;
  }

  private bump(loc: LocationRecord): number {
    loc.version += 1;
    return loc.version;
  }

  private touch(loc: LocationRecord, user: UserRecord): void {
    user.version = this.bump(loc);
    user.modifiedAt = this.now();
  }
}
