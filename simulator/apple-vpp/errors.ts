/**
 * Apple's Apps and Books (v2) error numbers, with the messages and HTTP statuses of Apple's
 * "Handling error responses" and "Service Config" documentation.
 */

export interface AppleErrorCode {
  errorNumber: number;
  errorMessage: string;
  /** HTTP status when the error is answered synchronously */
  status: number;
}

const codes: AppleErrorCode[] = [
  { errorNumber: 9600, errorMessage: 'Missing required argument.', status: 400 },
  { errorNumber: 9601, errorMessage: 'Login required.', status: 401 },
  { errorNumber: 9602, errorMessage: 'Invalid argument.', status: 400 },
  { errorNumber: 9603, errorMessage: 'Internal error.', status: 500 },
  { errorNumber: 9609, errorMessage: 'Unable to find the registered user.', status: 400 },
  {
    errorNumber: 9621,
    errorMessage:
      "The token has expired. You need to generate a new token online using your organization's account at either school.apple.com or business.apple.com.",
    status: 401,
  },
  { errorNumber: 9625, errorMessage: 'The server has revoked the sToken.', status: 401 },
  { errorNumber: 9634, errorMessage: 'This service is no longer available.', status: 410 },
  { errorNumber: 9635, errorMessage: 'Unable to associate the Apple Account with this user.', status: 400 },
  {
    errorNumber: 9641,
    errorMessage: 'The Apple Account is already associated with another user.',
    status: 400,
  },
  { errorNumber: 9644, errorMessage: 'The service is in maintenance mode. Try again later.', status: 503 },
  {
    errorNumber: 9646,
    errorMessage:
      'There are too many requests for the current organization, and the server rejected the request, either due to high server volume or an issue with the device management service. Use an incremental/exponential backoff strategy to retry the request until successful.',
    status: 429,
  },
  {
    errorNumber: 9650,
    errorMessage: 'The provided page index must be greater than 0, and less than the total number of pages.',
    status: 400,
  },
  { errorNumber: 9708, errorMessage: 'Unable to find eventId.', status: 400 },
  {
    errorNumber: 9710,
    errorMessage: 'Both the notification URL and the authentication token are necessary.',
    status: 400,
  },
  {
    errorNumber: 9711,
    errorMessage:
      'Either the notification URL or the authentication token exceeds its maximum length. Change the request to stay within the specified limit.',
    status: 400,
  },
  {
    errorNumber: 9712,
    errorMessage: 'The provided notification URL must be a valid URL and use HTTPS as the protocol.',
    status: 400,
  },
  {
    errorNumber: 9713,
    errorMessage:
      'The device management service metadata exceeds the maximum length. Change the request to stay within the specified limit.',
    status: 400,
  },
  {
    errorNumber: 9714,
    errorMessage:
      'The number of users exceeds the maximum. Change the request to stay within the specified limit.',
    status: 400,
  },
  {
    errorNumber: 9715,
    errorMessage: 'This request contains duplicate users. Change the request to send unique users.',
    status: 400,
  },
  {
    errorNumber: 9716,
    errorMessage: 'A registered user already exists with the specified clientUserId.',
    status: 400,
  },
  {
    errorNumber: 9717,
    errorMessage:
      'This request contains an invalid email address. Change the request to send valid email addresses.',
    status: 400,
  },
  {
    errorNumber: 9720,
    errorMessage: 'Users are a required argument. Change the request to provide a user.',
    status: 400,
  },
  {
    errorNumber: 9721,
    errorMessage:
      'This request contains an invalid version ID. Change the request to send the version ID from the read APIs.',
    status: 400,
  },
  {
    errorNumber: 9722,
    errorMessage:
      "This request contains an invalid authorization header. Change the request to send an authorization header that matches the format 'Bearer {sToken}'.",
    status: 401,
  },
  {
    errorNumber: 9723,
    errorMessage: 'You must provide a name, ID, and metadata when setting the device management information.',
    status: 400,
  },
  {
    errorNumber: 9724,
    errorMessage:
      'The device management ID exceeds the maximum length. Change the request to stay within the specified limit.',
    status: 400,
  },
  {
    errorNumber: 9725,
    errorMessage:
      'The device management name exceeds the maximum length. Change the request to stay within the specified limit.',
    status: 400,
  },
  {
    errorNumber: 9726,
    errorMessage: 'This request contains an unsupported HTTP method for the requested endpoint.',
    status: 405,
  },
  {
    errorNumber: 9727,
    errorMessage: 'This request contains an unsupported Content-Type for the requested endpoint.',
    status: 415,
  },
  { errorNumber: 9728, errorMessage: 'The provided notification URL is unreachable.', status: 400 },
  {
    errorNumber: 9729,
    errorMessage: 'The service is temporarily unavailable. Try again later.',
    status: 503,
  },
];

export const APPLE_ERROR_CODES: ReadonlyMap<number, AppleErrorCode> = new Map(
  codes.map((c) => [c.errorNumber, Object.freeze(c)]),
);

/** The body Apple answers with, `{ errorNumber, errorMessage }` (plus `errorInfo` in some failures). */
export interface AppleErrorBody {
  errorNumber: number;
  errorMessage: string;
  errorInfo?: { clientUserIds?: string[] };
}

export function appleErrorBody(errorNumber: number, errorMessage?: string): AppleErrorBody {
  return {
    errorNumber,
    errorMessage: errorMessage ?? APPLE_ERROR_CODES.get(errorNumber)?.errorMessage ?? 'Internal error.',
  };
}

/** The HTTP status Apple uses for a synchronous error number (400 when the number is not catalogued). */
export function appleErrorStatus(errorNumber: number): number {
  return APPLE_ERROR_CODES.get(errorNumber)?.status ?? 400;
}

/** A synchronous API failure: the route answers `status` with Apple's error body. */
export class VppApiError extends Error {
  readonly errorNumber: number;
  readonly status: number;
  readonly retryAfterSeconds: number | undefined;

  constructor(
    errorNumber: number,
    opts: { status?: number; errorMessage?: string; retryAfterSeconds?: number } = {},
  ) {
    const body = appleErrorBody(errorNumber, opts.errorMessage);
    super(body.errorMessage);
    this.name = 'VppApiError';
    this.errorNumber = errorNumber;
    this.status = opts.status ?? appleErrorStatus(errorNumber);
    this.retryAfterSeconds = opts.retryAfterSeconds;
  }

  body(): AppleErrorBody {
    return appleErrorBody(this.errorNumber, this.message);
  }
}
