/**
 * The directory of people: sites, users, user groups, and the devices assigned to users. Store
 * interfaces only (implemented in `server/storage/directory-store.ts`). Ids are strings; times come
 * from the caller. Stores throw the errors of `./errors.ts` for unknown referenced ids and taken names.
 */

export interface Site {
  id: string;
  name: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface User {
  id: string;
  username: string;
  fullName: string | null;
  email: string | null;
  managedAppleId: string | null;
  /** Sorted by id (numerically). */
  siteIds: string[];
  /** A local account: a password hash is stored (the hash itself never leaves the store but by `getPasswordHash`). */
  hasPassword: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export interface UserGroup {
  id: string;
  name: string;
  userCount: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** Keyset pagination: `limit` is clamped to 1..1000; `q` is a case-insensitive substring filter. */
export interface ListOptions {
  limit: number;
  cursor: string | null;
  q: string | null;
}

export interface UserListOptions extends ListOptions {
  /** Only members of this site. */
  siteId: string | null;
  /** Only members of this group. */
  groupId: string | null;
}

export interface NewUser {
  username: string;
  fullName: string | null;
  email: string | null;
  managedAppleId: string | null;
  siteIds: string[];
  passwordHash: string | null;
}

/** A field left out stays as it is; `siteIds` replaces the whole set; `passwordHash: null` removes the local account. */
export type UserPatch = Partial<NewUser>;

export interface GroupPatch {
  name?: string;
  /** Replaces the whole membership. Not together with `addUserIds` / `removeUserIds`. */
  userIds?: string[];
  addUserIds?: string[];
  removeUserIds?: string[];
}

/** Id streams come in batches (at most `batchSize`, default 1000), ascending by numeric id. */
export type IdBatches = AsyncIterable<string[]>;

export interface SiteStore {
  /** Throws `NameTakenError` (`site_name_taken`). */
  create(name: string, now: Date): Promise<Site>;
  get(id: string): Promise<Site | null>;
  /** Ordered by name. */
  list(opts: ListOptions): Promise<Page<Site>>;
  /** Null when the site does not exist. Throws `NameTakenError`. */
  rename(id: string, name: string, now: Date): Promise<Site | null>;
  /** False when the site does not exist. Throws `SiteInUseError` while users belong to it. */
  delete(id: string): Promise<boolean>;
  /** The ids among `ids` that name no site (in the order given, without duplicates). */
  missing(ids: readonly string[]): Promise<string[]>;
}

export interface UserStore {
  /** Throws `NameTakenError` (`username_taken`) and `UnknownIdsError` (`siteIds`). */
  create(user: NewUser, now: Date): Promise<User>;
  get(id: string): Promise<User | null>;
  /** The users that exist among `ids`, in the order given (unknown ids are left out). */
  getUsersByIds(ids: readonly string[]): Promise<User[]>;
  /** Usernames are unique regardless of case; the lookup ignores case too. */
  findByUsername(username: string): Promise<User | null>;
  /** Ordered by username (case-insensitively); `q` matches username, full name and email. */
  list(opts: UserListOptions): Promise<Page<User>>;
  /** Null when the user does not exist. Throws like `create`. */
  update(id: string, patch: UserPatch, now: Date): Promise<User | null>;
  /** Removes the user from its sites and groups and unassigns its devices. False when unknown. */
  delete(id: string, now: Date): Promise<boolean>;
  /** The stored hash of a local account (null: no local account or no such user). */
  getPasswordHash(id: string): Promise<string | null>;
  /** False when the user does not exist. */
  setPasswordHash(id: string, hash: string | null, now: Date): Promise<boolean>;
  /** The ids among `ids` that name no user (in the order given, without duplicates). */
  missing(ids: readonly string[]): Promise<string[]>;
  /** Every user id, for work over the whole directory (10,000+ users: never one big array). */
  allUserIds(batchSize?: number): IdBatches;
  /** The ids of the users that belong to the site. */
  listUserIdsInSite(siteId: string, batchSize?: number): IdBatches;
}

export interface GroupStore {
  /** Throws `NameTakenError` (`user_group_name_taken`) and `UnknownIdsError` (`userIds`). */
  create(group: { name: string; userIds: string[] }, now: Date): Promise<UserGroup>;
  get(id: string): Promise<UserGroup | null>;
  /** Ordered by name. */
  list(opts: ListOptions): Promise<Page<UserGroup>>;
  /** Null when the group does not exist. Throws like `create` (unknown ids named per field). */
  update(id: string, patch: GroupPatch, now: Date): Promise<UserGroup | null>;
  delete(id: string): Promise<boolean>;
  /** The ids among `ids` that name no group (in the order given, without duplicates). */
  missing(ids: readonly string[]): Promise<string[]>;
  /** The distinct ids of the users in any of these groups. */
  listMemberIds(groupIds: readonly string[], batchSize?: number): IdBatches;
}

export type AssignResult = 'assigned' | 'unchanged' | 'device_not_found' | 'user_not_found';

/** Which user a device is assigned to (`Device.userId`), changed together with the user's existence check. */
export interface DeviceAssignmentStore {
  /**
   * Sets the device's user (null unassigns) in one transaction with checking that both exist.
   * With `onlyIfUnassigned`, a device that already has a user is left alone (`unchanged`).
   */
  assign(
    udid: string,
    userId: string | null,
    opts: { onlyIfUnassigned: boolean },
    now: Date,
  ): Promise<AssignResult>;
}

/** Collects id batches into one array (for callers that know the set is small). */
export async function collectIds(batches: IdBatches): Promise<string[]> {
  const ids: string[] = [];
  for await (const batch of batches) ids.push(...batch);
  return ids;
}
