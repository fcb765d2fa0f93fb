import { BadRequestError, ConflictError, UpstreamError, type AppError } from '../errors.ts';
import type { AppleError } from './apple-client.ts';
import type { LocationStatus } from './store.ts';

/** A token Apple refuses (or that is not an sToken at all): `400 invalid_service_token` with Apple's reason. */
export class InvalidServiceTokenError extends BadRequestError {
  constructor(reason: string, errorNumber: number | null = null) {
    super(
      `the service token was refused: ${reason}`,
      {
        serviceToken: reason,
        ...(errorNumber !== null ? { appleErrorNumber: errorNumber } : {}),
      },
      'invalid_service_token',
    );
  }
}

/** Another MDM server holds the token (Apple's `mdmInfo`): `409 service_token_in_use` unless `?force=true`. */
export class ServiceTokenInUseError extends ConflictError {
  constructor(mdmName: string | null) {
    super(
      'service_token_in_use',
      `the service token is in use by another MDM server${mdmName ? ` (${mdmName})` : ''}; add ?force=true to take it over`,
      mdmName ? { mdmName } : undefined,
    );
  }
}

/** The Apple location is already one of ours. */
export class LocationExistsError extends ConflictError {
  constructor(locationId: string | null) {
    super(
      'location_exists',
      'a location with this service token (the same Apple location) exists already; renew its token with PATCH instead',
      locationId ? { locationId } : undefined,
    );
  }
}

/** A renewal token of another Apple location. */
export class ServiceTokenMismatchError extends ConflictError {
  constructor() {
    super('service_token_mismatch', 'the new service token belongs to another Apple location than this one');
  }
}

/** The location's token no longer works: its work waits until the token is renewed. */
export class LocationTokenError extends ConflictError {
  constructor(status: LocationStatus, message: string | null) {
    super(
      `location_${status}`,
      `the location's service token does not work (${status.replace('_', ' ')})${message ? `: ${message}` : ''}; renew it with PATCH /locations/{id} {"serviceToken"}`,
    );
  }
}

export class RegistrationInProgressError extends ConflictError {
  constructor() {
    super('registration_in_progress', 'Apple is still creating this registration; try again in a moment');
  }
}

export class NoManagedAppleIdError extends ConflictError {
  constructor() {
    super('no_managed_apple_id', 'the user has no Managed Apple ID');
  }
}

/** Apple failed or refused a call made for an admin request: `502` with Apple's reason. */
export function appleFailed(err: AppleError): AppError {
  return new UpstreamError(
    err.errorNumber !== null ? 'apple_error' : 'apple_unreachable',
    `Apple's Apps and Books service: ${err.message}${err.errorNumber !== null ? ` (${err.errorNumber})` : ''}`,
    { cause: err },
  );
}
