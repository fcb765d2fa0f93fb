import { z } from 'zod';
import { AppError, BadRequestError, UnauthorizedError } from '../errors.ts';
import type { EventBus } from '../events.ts';
import type { JobQueue } from '../jobs/job-runner.ts';
import type { Logger } from '../log.ts';
import { appleUserSchema, flattenFailures, type AppleUser, type UserFailure } from './apple-client.ts';
import { VPP_WORK, workKey, type LocationService } from './location-service.ts';
import type { Location, LocationSecrets, VppStore } from './store.ts';
import { emitApplied } from './vpp-worker.ts';

/** The envelope of every Apps and Books notification. */
export const notificationSchema = z.object({
  notificationId: z.string().min(1).max(255),
  notificationType: z.string().min(1).max(64),
  uId: z.union([z.string(), z.number()]).transform(String).optional(),
  notification: z.unknown().optional(),
});

const errorSchema = z.object({
  errorNumber: z.number().int(),
  errorMessage: z.string().default(''),
  errorInfo: z.object({ clientUserIds: z.array(z.string()).optional() }).optional(),
});

const failureSchema = z.object({
  clientUserId: z.string().optional(),
  errorNumber: z.number().int(),
  errorMessage: z.string().default(''),
  errorInfo: z.object({ clientUserIds: z.array(z.string()).optional() }).optional(),
});

/** `USER_MANAGEMENT`: the result of a users/create|update|retire event. */
export const userManagementSchema = z.object({
  eventId: z.string().optional(),
  result: z.enum(['SUCCESS', 'FAILURE']).optional(),
  type: z.string().optional(),
  users: z.array(appleUserSchema).default([]),
  error: errorSchema.optional(),
  failures: z.array(failureSchema).default([]),
});

/** `USER_ASSOCIATED`: users who accepted their invitation. */
export const userAssociatedSchema = z.object({
  associatedUsers: z.array(appleUserSchema).default([]),
});

export interface NotificationAnswer {
  status: number;
  /** what happened, for the log and tests */
  outcome: 'test' | 'applied' | 'duplicate' | 'ignored';
}

/**
 * `POST /apple/vpp/notifications/{locationId}`: Apple's notifications. The bearer must be the
 * location's notification token (else `401`, nothing applied). `TEST_NOTIFICATION` is answered at once
 * with no write (Apple sends it while the server's own `POST client/config` is open). Others are applied
 * idempotently: the notification id and the changes commit in one transaction.
 */
export class NotificationService {
  constructor(
    private readonly deps: {
      store: VppStore;
      locations: LocationService;
      jobs: JobQueue;
      events: EventBus;
      log: Logger;
      now?: () => Date;
    },
  ) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  /**
   * The location a request is for, when its bearer is that location's notification token (a read only).
   * An unknown location has no token a caller could hold: `401` as for a wrong one (api.md), which also
   * tells strangers nothing about which location ids exist.
   */
  async authenticate(locationId: string, bearer: string | null): Promise<Location & LocationSecrets> {
    const loc = await this.deps.store.getLocation(locationId);
    if (!loc) throw new UnauthorizedError('missing or invalid bearer token for this location');
    if (!this.deps.locations.checkNotificationToken(loc, bearer)) throw new UnauthorizedError();
    return loc;
  }

  async handle(locationId: string, bearer: string | null, body: Buffer): Promise<NotificationAnswer> {
    return this.apply(await this.authenticate(locationId, bearer), body);
  }

  /** Applies the body of an authenticated notification. */
  async apply(loc: Location & LocationSecrets, body: Buffer): Promise<NotificationAnswer> {
    const locationId = loc.id;
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      throw new AppError(400, 'invalid_json', 'body is not valid JSON');
    }
    const envelope = notificationSchema.safeParse(json);
    if (!envelope.success) throw invalid(envelope.error);
    const n = envelope.data;
    if (n.uId !== undefined && loc.appleUid !== null && n.uId !== loc.appleUid) {
      throw new BadRequestError(
        'the notification is for another Apple location',
        { uId: 'not this location' },
        'uid_mismatch',
      );
    }
    const log = this.deps.log.child({
      locationId,
      notificationId: n.notificationId,
      type: n.notificationType,
    });
    if (n.notificationType === 'TEST_NOTIFICATION') {
      log.debug('test notification');
      return { status: 200, outcome: 'test' };
    }

    let users: AppleUser[] = [];
    let failures: UserFailure[] = [];
    if (n.notificationType === 'USER_MANAGEMENT') {
      const parsed = userManagementSchema.safeParse(n.notification ?? {});
      if (!parsed.success) throw invalid(parsed.error);
      const m = parsed.data;
      failures = flattenFailures(m.failures);
      if (m.error) {
        const ids = new Set(m.error.errorInfo?.clientUserIds ?? []);
        if (m.result === 'FAILURE') for (const u of m.users) ids.add(u.clientUserId);
        const listed = new Set(failures.map((f) => f.clientUserId));
        for (const clientUserId of ids) {
          if (!listed.has(clientUserId)) {
            failures.push({
              clientUserId,
              errorNumber: m.error.errorNumber,
              errorMessage: m.error.errorMessage,
            });
          }
        }
      }
      // The users of a FAILURE are the failed ones (clientUserId only), not results.
      users = m.result === 'FAILURE' ? [] : m.users;
    } else if (n.notificationType === 'USER_ASSOCIATED') {
      const parsed = userAssociatedSchema.safeParse(n.notification ?? {});
      if (!parsed.success) throw invalid(parsed.error);
      users = parsed.data.associatedUsers.map((u) => ({ ...u, status: u.status ?? 'Associated' }));
    } else {
      const fresh = await this.deps.store.recordNotification(
        locationId,
        n.notificationId,
        n.notificationType,
        this.now(),
      );
      log.debug('notification type not used: recorded and ignored');
      return { status: 200, outcome: fresh ? 'ignored' : 'duplicate' };
    }

    const applied = await this.deps.store.applyAppleUsers(locationId, users, this.now(), {
      notification: { id: n.notificationId, type: n.notificationType },
      failures,
    });
    if (applied.duplicate) {
      log.debug('duplicate notification ignored');
      return { status: 200, outcome: 'duplicate' };
    }
    emitApplied(this.deps.events, locationId, applied);
    if (applied.lookups > 0) {
      // Users to read from Apple (9716, or Registered without an invite code): the location's work job.
      await this.deps.jobs.enqueue(VPP_WORK, { locationId }, { key: workKey(locationId) });
    }
    log.debug(
      {
        registered: applied.registered.length,
        associated: applied.associated.length,
        retired: applied.retired.length,
        failed: applied.failed.length,
        lookups: applied.lookups,
        unknown: applied.unknown,
      },
      'notification applied',
    );
    return { status: 200, outcome: 'applied' };
  }
}

function invalid(error: z.ZodError): BadRequestError {
  const details: Record<string, string> = {};
  for (const issue of error.issues) {
    const key = issue.path.length > 0 ? issue.path.map(String).join('.') : 'body';
    details[key] ??= issue.message;
  }
  return new BadRequestError('invalid notification', details, 'invalid_notification');
}
