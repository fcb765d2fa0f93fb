import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { UnknownIdsError } from '../directory/errors.ts';
import type { SiteStore } from '../directory/store.ts';
import { NotFoundError } from '../errors.ts';
import type { EventBus } from '../events.ts';
import type { JobQueue } from '../jobs/job-runner.ts';
import type { Logger } from '../log.ts';
import {
  AppleError,
  decodeServiceToken,
  parseAppleDate,
  type AppleTokenProblem,
  type AppsAndBooks,
  type ClientConfig,
} from './apple-client.ts';
import {
  appleFailed,
  InvalidServiceTokenError,
  LocationExistsError,
  ServiceTokenInUseError,
  ServiceTokenMismatchError,
} from './errors.ts';
import type { Location, LocationSecrets, Page, VppStore } from './store.ts';

/** Seals secrets at rest (`SecretBox`). */
export interface Sealer {
  seal(plaintext: string, associatedData: string): string;
  open(sealed: string, associatedData: string): string;
}

/** The job kinds and keys of a location's background work (see `vpp-worker.ts`). */
export const VPP_WORK = 'vpp.work';
export const VPP_SYNC = 'vpp.sync';
/** `users/retire` of registrations whose user was deleted here (payload: location and clientUserIds). */
export const VPP_RETIRE = 'vpp.retire';
export const workKey = (locationId: string) => `vpp:${locationId}:work`;
export const syncKey = (locationId: string) => `vpp:${locationId}:sync`;
export const locationKeyPrefix = (locationId: string) => `vpp:${locationId}:`;

/** The notification types the server subscribes to. */
export const SUBSCRIBED_NOTIFICATIONS = ['USER_MANAGEMENT', 'USER_ASSOCIATED'];

export interface CreateLocationInput {
  name: string;
  serviceToken: string;
  siteId?: string | null;
  autoRegisterManagedUsers?: boolean;
}

export interface UpdateLocationInput {
  name?: string;
  siteId?: string | null;
  autoRegisterManagedUsers?: boolean;
  serviceToken?: string;
}

export interface LocationServiceDeps {
  store: VppStore;
  apple: AppsAndBooks;
  sealer: Sealer;
  sites: Pick<SiteStore, 'missing'>;
  jobs: JobQueue;
  events: EventBus;
  log: Logger;
  /** the server's public base URL (notifications come to `<publicUrl>/apple/vpp/notifications/<id>`) */
  publicUrl: string;
  /** this server's `mdmInfo` at Apple: the same for every instance (derived from the shared secret key) */
  mdmInfo: { id: string; name: string };
  now?: () => Date;
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

/** Locations: one per service token (Apple location), created and renewed with Apple's `client/config`. */
export class LocationService {
  constructor(private readonly deps: LocationServiceDeps) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  notificationUrl(locationId: string): string {
    return `${this.deps.publicUrl.replace(/\/+$/, '')}/apple/vpp/notifications/${encodeURIComponent(locationId)}`;
  }

  /**
   * Validates the token with Apple, stores the location (token sealed), then registers the notification
   * URL with Apple (which sends a TEST_NOTIFICATION while that call is open: the location and its
   * notification token are committed before it). Apple refusing the URL removes the location again.
   */
  async create(input: CreateLocationInput, opts: { force: boolean }): Promise<Location> {
    const sToken = input.serviceToken.trim();
    const content = decodeServiceToken(sToken);
    if (!content) {
      throw new InvalidServiceTokenError(
        'not an Apple service token (base64 of JSON with token, expDate and orgName)',
      );
    }
    const siteId = input.siteId ?? null;
    await this.checkSite(siteId);
    const config = await this.validate(sToken);
    if (config.mdmInfo && config.mdmInfo.id !== this.deps.mdmInfo.id && !opts.force) {
      throw new ServiceTokenInUseError(config.mdmInfo.name ?? null);
    }
    const existing = await this.deps.store.findLocationByAppleUid(config.uId);
    if (existing) throw new LocationExistsError(existing.id);
    let invitationTemplate: string | null = null;
    try {
      invitationTemplate = (await this.deps.apple.serviceConfig()).urls.invitationEmail;
    } catch (err) {
      this.deps.log.warn({ err }, 'service/config unavailable; the next sync reads it');
    }
    const notificationToken = randomBytes(32).toString('base64url');
    const created = await this.deps.store.createLocation(
      {
        name: input.name,
        organizationName: content.orgName,
        locationName: config.locationName ?? null,
        countryCode: config.countryISO2ACode ?? null,
        tokenExpiration: parseAppleDate(content.expDate) ?? parseAppleDate(config.tokenExpirationDate),
        appleUid: config.uId,
        siteId,
        autoRegisterManagedUsers: input.autoRegisterManagedUsers ?? false,
        invitationTemplate,
        notificationTokenHash: sha256(notificationToken),
      },
      (id) => this.deps.sealer.seal(sToken, `location:${id}`),
      this.now(),
    );
    const log = this.deps.log.child({ locationId: created.id });
    try {
      await this.deps.apple.setClientConfig(sToken, {
        mdmInfo: {
          id: this.deps.mdmInfo.id,
          name: this.deps.mdmInfo.name,
          metadata: `location:${created.id}`,
        },
        notificationUrl: this.notificationUrl(created.id),
        notificationAuthToken: notificationToken,
        notificationTypes: SUBSCRIBED_NOTIFICATIONS,
      });
    } catch (err) {
      await this.deps.store.deleteLocation(created.id);
      log.warn({ err }, 'Apple refused the notification settings: location removed');
      if (err instanceof AppleError) {
        if (err.tokenProblem) throw new InvalidServiceTokenError(err.message, err.errorNumber);
        throw appleFailed(err);
      }
      throw err;
    }
    const active = await this.deps.store.updateLocation(
      created.id,
      { status: 'active', statusMessage: null },
      this.now(),
    );
    if (!active) throw new NotFoundError('location');
    log.info({ appleUid: config.uId }, 'location added');
    await this.deps.jobs.enqueue(VPP_SYNC, { locationId: created.id }, { key: syncKey(created.id) });
    return active;
  }

  async get(id: string): Promise<Location> {
    const loc = await this.deps.store.getLocation(id);
    if (!loc) throw new NotFoundError('location');
    return withoutSecrets(loc);
  }

  list(opts: {
    limit: number;
    cursor: string | null;
    q: string | null;
    siteId?: string | null;
  }): Promise<Page<Location>> {
    return this.deps.store.listLocations(opts);
  }

  /** Name, site, auto-registration, and token renewal (a token of the same Apple location). */
  async update(id: string, input: UpdateLocationInput): Promise<Location> {
    const loc = await this.deps.store.getLocation(id);
    if (!loc) throw new NotFoundError('location');
    if (input.siteId !== undefined) await this.checkSite(input.siteId);
    let renewal: Parameters<VppStore['updateLocation']>[1]['renewal'];
    if (input.serviceToken !== undefined) {
      const sToken = input.serviceToken.trim();
      const content = decodeServiceToken(sToken);
      if (!content)
        throw new InvalidServiceTokenError(
          'not an Apple service token (base64 of JSON with token, expDate and orgName)',
        );
      const config = await this.validate(sToken);
      if (loc.appleUid !== null && config.uId !== loc.appleUid) throw new ServiceTokenMismatchError();
      renewal = {
        seal: (lid) => this.deps.sealer.seal(sToken, `location:${lid}`),
        organizationName: content.orgName,
        locationName: config.locationName ?? loc.locationName,
        countryCode: config.countryISO2ACode ?? loc.countryCode,
        tokenExpiration: parseAppleDate(content.expDate) ?? parseAppleDate(config.tokenExpirationDate),
      };
    }
    const updated = await this.deps.store.updateLocation(
      id,
      {
        ...(input.name !== undefined ? { name: input.name } : {}),
        ...(input.siteId !== undefined ? { siteId: input.siteId } : {}),
        ...(input.autoRegisterManagedUsers !== undefined
          ? { autoRegisterManagedUsers: input.autoRegisterManagedUsers }
          : {}),
        ...(renewal ? { renewal, status: 'active' as const, statusMessage: null } : {}),
      },
      this.now(),
    );
    if (!updated) throw new NotFoundError('location');
    if (input.siteId !== undefined && (input.siteId ?? null) !== loc.siteId) {
      this.deps.events.emit('location.site_changed', {
        locationId: id,
        previousSiteId: loc.siteId,
        siteId: updated.siteId,
      });
    }
    if (renewal) {
      this.deps.log.info({ locationId: id, previousStatus: loc.status }, 'service token renewed');
      // Work that waited for a working token goes now.
      await this.deps.jobs.wakeKeys(locationKeyPrefix(id));
      await this.deps.jobs.enqueue(VPP_SYNC, { locationId: id }, { key: syncKey(id) });
      await this.deps.jobs.enqueue(VPP_WORK, { locationId: id }, { key: workKey(id) });
    }
    return updated;
  }

  /** Removes the location and its registrations here; Apple stops sending notifications (best effort). */
  async delete(id: string): Promise<void> {
    const loc = await this.deps.store.getLocation(id);
    if (!loc) throw new NotFoundError('location');
    if (loc.status === 'active') {
      try {
        await this.deps.apple.setClientConfig(this.tokenOf(loc), {
          notificationUrl: '',
          notificationAuthToken: '',
        });
      } catch (err) {
        this.deps.log.warn({ err, locationId: id }, 'could not remove the notification URL at Apple');
      }
    }
    if (!(await this.deps.store.deleteLocation(id))) throw new NotFoundError('location');
    this.deps.log.info({ locationId: id }, 'location removed');
    this.deps.events.emit('location.deleted', { locationId: id });
  }

  /** The location's sToken (opened from its sealed form). */
  tokenOf(loc: Pick<Location, 'id'> & LocationSecrets): string {
    return this.deps.sealer.open(loc.sTokenSealed, `location:${loc.id}`);
  }

  /** True when `bearer` is the location's notification token (constant time). */
  checkNotificationToken(loc: LocationSecrets, bearer: string | null): boolean {
    if (bearer === null || loc.notificationTokenHash === null) return false;
    const expected = Buffer.from(loc.notificationTokenHash, 'hex');
    const given = Buffer.from(sha256(bearer), 'hex');
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  /**
   * Marks a location whose token Apple refused (expired, revoked, invalid): its work stops with this
   * message until a renewal. Returns the problem, or null when the error is not about the token.
   */
  async onAppleError(
    loc: Pick<Location, 'id'> & LocationSecrets,
    err: unknown,
  ): Promise<AppleTokenProblem | null> {
    if (!(err instanceof AppleError) || !err.tokenProblem) return null;
    await this.deps.store.markLocationToken(
      loc.id,
      loc.sTokenSealed,
      err.tokenProblem,
      err.message,
      this.now(),
    );
    this.deps.log.warn(
      { locationId: loc.id, problem: err.tokenProblem, errorNumber: err.errorNumber },
      'the location service token no longer works: its work waits for a renewal',
    );
    return err.tokenProblem;
  }

  /** Asks for a `users` sync of the location now. */
  async syncNow(id: string): Promise<void> {
    const loc = await this.deps.store.getLocation(id);
    if (!loc) throw new NotFoundError('location');
    await this.deps.jobs.enqueue(VPP_SYNC, { locationId: id }, { key: syncKey(id) });
  }

  private async checkSite(siteId: string | null): Promise<void> {
    if (siteId === null) return;
    if ((await this.deps.sites.missing([siteId])).length > 0) throw new UnknownIdsError({ siteId: [siteId] });
  }

  /** Apple's `client/config` for a token; Apple refusing the token is a 400 with Apple's reason. */
  private async validate(sToken: string): Promise<ClientConfig> {
    try {
      return await this.deps.apple.clientConfig(sToken);
    } catch (err) {
      if (err instanceof AppleError) {
        if (err.tokenProblem || (err.errorNumber !== null && !err.transient)) {
          throw new InvalidServiceTokenError(err.message, err.errorNumber);
        }
        throw appleFailed(err);
      }
      throw err;
    }
  }
}

function withoutSecrets(l: Location & LocationSecrets): Location {
  const { sTokenSealed: _s, notificationTokenHash: _n, ...rest } = l;
  return rest;
}
