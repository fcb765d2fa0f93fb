import type { Page, Site, User, UserGroup } from './store.ts';

/** JSON of the directory: camelCase, ISO 8601 times, ids as strings. Never a password or its hash. */

export function presentSite(site: Site) {
  return {
    id: site.id,
    name: site.name,
    createdAt: site.createdAt.toISOString(),
    updatedAt: site.updatedAt.toISOString(),
  };
}

export function presentUser(user: User) {
  return {
    id: user.id,
    username: user.username,
    fullName: user.fullName,
    email: user.email,
    managedAppleId: user.managedAppleId,
    siteIds: user.siteIds,
    hasPassword: user.hasPassword,
    createdAt: user.createdAt.toISOString(),
    updatedAt: user.updatedAt.toISOString(),
  };
}

/** `userIds` (every member) in single-group answers; lists carry `userCount` only. */
export function presentGroup(group: UserGroup, userIds?: string[]) {
  return {
    id: group.id,
    name: group.name,
    ...(userIds ? { userIds } : {}),
    userCount: group.userCount,
    createdAt: group.createdAt.toISOString(),
    updatedAt: group.updatedAt.toISOString(),
  };
}

export function presentPage<T, J>(page: Page<T>, present: (item: T) => J) {
  return {
    items: page.items.map((item) => present(item)),
    ...(page.nextCursor !== null ? { nextCursor: page.nextCursor } : {}),
  };
}
