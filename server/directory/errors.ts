import { BadRequestError, ConflictError } from '../errors.ts';

const SHOWN_IN_MESSAGE = 10;

/** Ids inside a body that name nothing: `400 unknown_ids`, `details` maps each field to its unknown ids. */
export class UnknownIdsError extends BadRequestError {
  constructor(readonly unknown: Record<string, string[]>) {
    const parts = Object.entries(unknown).map(([field, ids]) => {
      const shown = ids.slice(0, SHOWN_IN_MESSAGE).join(', ');
      return `${field} ${shown}${ids.length > SHOWN_IN_MESSAGE ? ` and ${ids.length - SHOWN_IN_MESSAGE} more` : ''}`;
    });
    super(`unknown ids: ${parts.join('; ')}`, unknown, 'unknown_ids');
  }
}

/** A unique name already in use: `409` with the code naming which (`site_name_taken`, `username_taken`, ...). */
export class NameTakenError extends ConflictError {
  constructor(code: string, field: string, value: string) {
    super(code, `${field} ${JSON.stringify(value)} is already taken`, { [field]: value });
  }
}

/**
 * A site that users or locations still use cannot be deleted: `409 site_in_use`; details count what uses
 * it (`users`, and `locations` when any).
 */
export class SiteInUseError extends ConflictError {
  constructor(users: number, locations = 0) {
    const parts = [
      ...(users > 0 || locations === 0 ? [`${users} user(s)`] : []),
      ...(locations > 0 ? [`${locations} location(s)`] : []),
    ];
    super('site_in_use', `the site still has ${parts.join(' and ')}: move them to another site first`, {
      users,
      ...(locations > 0 ? { locations } : {}),
    });
  }
}
