import { BadRequestError, ConflictError } from '../errors.ts';

/** Unmet requirements of an invitation, checked on save: `409` with a code that names each. */

export class LocationNotFoundError extends ConflictError {
  constructor(locationId: string) {
    super('location_not_found', `location ${locationId} does not exist: add it with POST /locations first`, {
      locationId,
    });
  }
}

export class SmtpNotConfiguredError extends ConflictError {
  constructor() {
    super(
      'smtp_not_configured',
      'the email distribution method needs an SMTP server: set MDM_SMTP_URL (and MDM_MAIL_FROM)',
    );
  }
}

export class PushCertificateMissingError extends ConflictError {
  constructor() {
    super(
      'push_certificate_missing',
      'prompt_and_self_service needs a push certificate: upload one with PUT /push-certificate',
    );
  }
}

export class AutoRegisterNotEnabledError extends ConflictError {
  constructor(locationId: string) {
    super(
      'auto_register_not_enabled_on_location',
      `automatic registration of Managed Apple IDs is not enabled on location ${locationId}: ` +
        'enable it with PATCH /locations/{id} {"autoRegisterManagedUsers": true}',
      { locationId },
    );
  }
}

/** A field that cannot change once the invitation is saved (create a new invitation instead). */
export class ImmutableFieldError extends BadRequestError {
  constructor(fields: string[]) {
    super(
      `cannot be changed once the invitation is saved: ${fields.join(', ')} (create a new invitation instead)`,
      Object.fromEntries(fields.map((f) => [f, 'cannot be changed once the invitation is saved'])),
      'immutable_field',
    );
  }
}

/** Users named in a resend that are not in the invitation's scope. */
export class NotInScopeError extends BadRequestError {
  constructor(userIds: string[]) {
    const shown = userIds.slice(0, 10).join(', ');
    super(
      `not in the invitation's scope: ${shown}${userIds.length > 10 ? ` and ${userIds.length - 10} more` : ''}`,
      { userIds },
      'not_in_scope',
    );
  }
}
