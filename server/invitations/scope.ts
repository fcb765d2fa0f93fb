/**
 * Who is in an invitation's scope. `computeScope` is a pure function over id sets; `resolveScope`
 * feeds it from the directory's id streams (ascending batches), so a directory of 10,000+ users is read
 * in a few batched queries and only the ids are held in memory, never a row per user.
 *
 * The rule: (every user, or the explicit users ∪ the members of the groups) minus the excluded users
 * and the members of the excluded groups, intersected with the site's users when the location has a
 * site.
 */
import type { IdBatches } from '../directory/store.ts';
import type { ScopeDefinition } from './model.ts';

export interface ScopeSets {
  /** every user id (only read when `allUsers`) */
  allUserIds?: Iterable<string>;
  /** the members of the scope's groups (any order, duplicates allowed) */
  groupMemberIds: Iterable<string>;
  /** the members of the excluded groups */
  excludedGroupMemberIds: Iterable<string>;
  /** the users of the location's site; null when the location has no site */
  siteUserIds: ReadonlySet<string> | null;
}

const byNumericId = (a: string, b: string) => {
  const d = Number(a) - Number(b);
  return d !== 0 ? d : a < b ? -1 : a > b ? 1 : 0;
};

/** Decides for one id whether it is in scope, given what is excluded and the site. */
export class ScopeFilter {
  private readonly excluded: Set<string>;

  constructor(
    excludedUserIds: Iterable<string>,
    excludedGroupMemberIds: Iterable<string>,
    private readonly siteUserIds: ReadonlySet<string> | null,
  ) {
    this.excluded = new Set(excludedUserIds);
    for (const id of excludedGroupMemberIds) this.excluded.add(id);
  }

  accepts(userId: string): boolean {
    if (this.excluded.has(userId)) return false;
    return this.siteUserIds === null || this.siteUserIds.has(userId);
  }
}

/** The user ids in scope, distinct, ascending by numeric id. Pure. */
export function computeScope(def: ScopeDefinition, sets: ScopeSets): string[] {
  const filter = new ScopeFilter(def.exclusions.userIds, sets.excludedGroupMemberIds, sets.siteUserIds);
  const out = new Set<string>();
  const consider = (ids: Iterable<string>) => {
    for (const id of ids) if (!out.has(id) && filter.accepts(id)) out.add(id);
  };
  if (def.allUsers) {
    consider(sets.allUserIds ?? []);
  } else {
    consider(def.userIds);
    consider(sets.groupMemberIds);
  }
  return [...out].sort(byNumericId);
}

/** The explicit `userIds` that belong to the site (a scope saved on a site keeps only those). Pure. */
export function limitExplicitUsersToSite(
  def: ScopeDefinition,
  siteUserIds: ReadonlySet<string> | null,
): ScopeDefinition {
  if (siteUserIds === null) return def;
  return { ...def, userIds: def.userIds.filter((id) => siteUserIds.has(id)) };
}

/** The directory's id streams the scope is computed from. */
export interface ScopeSources {
  allUserIds(batchSize?: number): IdBatches;
  listUserIdsInSite(siteId: string, batchSize?: number): IdBatches;
  listMemberIds(groupIds: readonly string[], batchSize?: number): IdBatches;
}

async function collectSet(batches: IdBatches): Promise<Set<string>> {
  const set = new Set<string>();
  for await (const batch of batches) for (const id of batch) set.add(id);
  return set;
}

/**
 * Computes the scope from the directory: the exclusion and site sets are read first (id batches), then
 * the included ids are streamed through the filter. Users named explicitly that no longer exist are
 * left out when `existing` says so (ids from groups, sites and the whole directory always exist).
 */
export async function resolveScope(
  def: ScopeDefinition,
  siteId: string | null,
  sources: ScopeSources,
  opts: { batchSize?: number; missingUsers?: (ids: readonly string[]) => Promise<string[]> } = {},
): Promise<string[]> {
  const batchSize = opts.batchSize ?? 1000;
  const siteUserIds = siteId === null ? null : await collectSet(sources.listUserIdsInSite(siteId, batchSize));
  const excludedGroupMemberIds =
    def.exclusions.groupIds.length > 0
      ? await collectSet(sources.listMemberIds(def.exclusions.groupIds, batchSize))
      : new Set<string>();
  const filter = new ScopeFilter(def.exclusions.userIds, excludedGroupMemberIds, siteUserIds);
  const out = new Set<string>();
  const consider = (ids: readonly string[]) => {
    for (const id of ids) if (filter.accepts(id)) out.add(id);
  };
  if (def.allUsers) {
    for await (const batch of sources.allUserIds(batchSize)) consider(batch);
  } else {
    let explicit = [...new Set(def.userIds)];
    if (opts.missingUsers && explicit.length > 0) {
      const gone = new Set<string>();
      for (let i = 0; i < explicit.length; i += batchSize) {
        for (const id of await opts.missingUsers(explicit.slice(i, i + batchSize))) gone.add(id);
      }
      explicit = explicit.filter((id) => !gone.has(id));
    }
    consider(explicit);
    if (def.groupIds.length > 0) {
      for await (const batch of sources.listMemberIds(def.groupIds, batchSize)) consider(batch);
    }
  }
  return [...out].sort(byNumericId);
}

/** The site's users as a set (for limiting explicit users to the site), or null without a site. */
export async function siteUserSet(
  siteId: string | null,
  sources: Pick<ScopeSources, 'listUserIdsInSite'>,
): Promise<Set<string> | null> {
  return siteId === null ? null : collectSet(sources.listUserIdsInSite(siteId));
}

/** Two scope definitions name the same users, groups and exclusions (order and duplicates aside). */
export function sameScope(a: ScopeDefinition, b: ScopeDefinition): boolean {
  const same = (x: readonly string[], y: readonly string[]) => {
    const sx = new Set(x);
    const sy = new Set(y);
    return sx.size === sy.size && [...sx].every((v) => sy.has(v));
  };
  return (
    a.allUsers === b.allUsers &&
    same(a.userIds, b.userIds) &&
    same(a.groupIds, b.groupIds) &&
    same(a.exclusions.userIds, b.exclusions.userIds) &&
    same(a.exclusions.groupIds, b.exclusions.groupIds)
  );
}

/** A scope as stored and answered: ids distinct and sorted numerically. */
export function normaliseScope(def: ScopeDefinition): ScopeDefinition {
  const norm = (ids: readonly string[]) => [...new Set(ids)].sort(byNumericId);
  return {
    allUsers: def.allUsers,
    userIds: norm(def.userIds),
    groupIds: norm(def.groupIds),
    exclusions: { userIds: norm(def.exclusions.userIds), groupIds: norm(def.exclusions.groupIds) },
  };
}
