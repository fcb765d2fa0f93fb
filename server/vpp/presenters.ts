import type { Location, Registration } from './store.ts';

/** JSON of Apps and Books objects: camelCase, ISO 8601 times, ids as strings. Never a token. */

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function presentLocation(l: Location) {
  return {
    id: l.id,
    name: l.name,
    organizationName: l.organizationName,
    countryCode: l.countryCode,
    tokenExpiration: iso(l.tokenExpiration),
    siteId: l.siteId,
    autoRegisterManagedUsers: l.autoRegisterManagedUsers,
    locationName: l.locationName,
    status: l.status,
    statusMessage: l.statusMessage,
    appleUid: l.appleUid,
    lastSyncedAt: iso(l.lastSyncedAt),
    lastSyncError: l.lastSyncError,
    createdAt: l.createdAt.toISOString(),
    updatedAt: l.updatedAt.toISOString(),
  };
}

/**
 * One registration. `status`: `pending` (stored; Apple has not answered with an invite code yet),
 * `registered` (Apple's `Registered`: invite code and invitation URL known), `associated` (the user
 * accepted with an Apple ID: `idHash`), `retired`, `failed` (Apple refused: `error`).
 */
export function presentRegistration(r: Registration) {
  return {
    locationId: r.locationId,
    status: r.status,
    clientUserId: r.clientUserId,
    managed: r.managed,
    ...(r.inviteCode !== null ? { inviteCode: r.inviteCode } : {}),
    ...(r.invitationUrl !== null ? { invitationUrl: r.invitationUrl } : {}),
    ...(r.idHash !== null ? { idHash: r.idHash } : {}),
    ...(r.registeredAt ? { registeredAt: r.registeredAt.toISOString() } : {}),
    ...(r.associatedAt ? { associatedAt: r.associatedAt.toISOString() } : {}),
    ...(r.retiredAt ? { retiredAt: r.retiredAt.toISOString() } : {}),
    ...(r.status === 'failed'
      ? { error: { errorNumber: r.errorNumber, message: r.errorMessage ?? 'refused by Apple' } }
      : {}),
    requestedAt: r.requestedAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
  };
}
