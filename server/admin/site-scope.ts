import { Router, type Request, type Response } from 'express';
import type { DeviceStore } from '../checkin/store.ts';
import { presentSite } from '../directory/presenters.ts';
import type { SiteStore, UserStore } from '../directory/store.ts';
import { ForbiddenError } from '../errors.ts';
import type { InvitationStore } from '../invitations/store.ts';
import type { VppStore } from '../vpp/store.ts';
import { siteLimitOf } from './auth.ts';
import { listQuery, parse } from './validate.ts';

/** What the site rules look up: the site of each kind of object. */
export interface SiteScopeDeps {
  sites: Pick<SiteStore, 'get'>;
  users: Pick<UserStore, 'get'>;
  locations: Pick<VppStore, 'getLocation'>;
  invitations: Pick<InvitationStore, 'getInvitation'>;
  devices: Pick<DeviceStore, 'getDevice'>;
}

/** An object that exists but belongs to another site (or to none). */
export class OutsideSiteError extends ForbiddenError {
  constructor(what: string) {
    super(`${what} is outside this API token's site`, 'outside_site');
  }
}

/** Something every site shares (push certificate, groups, sites, API tokens): not for a site's token. */
export class SiteTokenNotAllowedError extends ForbiddenError {
  constructor(what: string) {
    super(`${what}: not allowed with an API token limited to a site`, 'site_token_not_allowed');
  }
}

const bodyOf = (req: Request): Record<string, unknown> =>
  typeof req.body === 'object' && req.body !== null && !Array.isArray(req.body)
    ? (req.body as Record<string, unknown>)
    : {};

/** The body to add a default to: none becomes `{}`; a body that is not an object stays for the route's 400. */
function mutableBody(req: Request): Record<string, unknown> {
  if (req.body === undefined || req.body === null) req.body = {};
  return bodyOf(req);
}

/**
 * The rules for API tokens limited to one site, ahead of the admin routes (unrestricted callers pass
 * straight through). Objects of the site are reachable; an existing object of another site is `403
 * outside_site`; an unknown id goes on to the route, which answers `404` (or `400` for ids in a body)
 * as for anyone. Creating defaults to the token's site; naming another site is `403`. Lists are
 * filtered by the routes themselves (`siteLimitOf`). Shared things (push certificate upload, user
 * groups' changes, sites' creation and deletion, API tokens) are `403 site_token_not_allowed`.
 * docs/api-notes.md lists the rules.
 */
export function siteScope(deps: SiteScopeDeps): Router {
  const r = Router();
  const site = (res: Response) => siteLimitOf(res) as string;

  r.use((_req, res, next) => {
    next(siteLimitOf(res) === null ? 'router' : undefined);
  });

  const userInSite = async (id: string, s: string): Promise<boolean | null> => {
    const user = await deps.users.get(id);
    return user ? user.siteIds.includes(s) : null;
  };
  const checkUser = async (id: string, s: string) => {
    if ((await userInSite(id, s)) === false) throw new OutsideSiteError(`user ${id}`);
  };
  const checkLocation = async (id: string, s: string) => {
    const loc = await deps.locations.getLocation(id);
    if (loc && loc.siteId !== s) throw new OutsideSiteError(`location ${id}`);
  };
  const checkDevice = async (udid: string, s: string) => {
    const device = await deps.devices.getDevice(udid);
    if (!device) return;
    if (device.userId === null || (await userInSite(device.userId, s)) !== true) {
      throw new OutsideSiteError(`device ${udid}`);
    }
  };
  /** A `siteId` in a body: absent means the token's site; anything else but it is refused. */
  const ownSiteField = (req: Request, s: string, field: string) => {
    const body = mutableBody(req);
    if (!(field in body)) {
      body[field] = s;
    } else if (body[field] !== s) {
      throw new OutsideSiteError(`${field} ${JSON.stringify(body[field])}`);
    }
  };

  // ---- shared things ----
  const shared: ['all' | 'put' | 'post' | 'patch' | 'delete', string | string[], string][] = [
    ['all', ['/api-tokens', '/api-tokens/*rest'], 'API tokens'],
    ['put', '/push-certificate', 'uploading the push certificate'],
    ['post', '/sites', 'creating sites'],
    ['delete', '/sites/:id', 'deleting sites'],
    ['post', '/user-groups', 'creating user groups'],
    ['patch', '/user-groups/:id', 'changing user groups'],
    ['delete', '/user-groups/:id', 'deleting user groups'],
  ];
  for (const [method, path, what] of shared) {
    r[method](path, () => {
      throw new SiteTokenNotAllowedError(what);
    });
  }

  // ---- sites: the token's own ----
  r.get('/sites', async (req, res) => {
    const query = parse(listQuery, req.query, 'query'); // the same 400s as the full list
    const own = await deps.sites.get(site(res));
    const q = query.q?.trim().toLowerCase() ?? '';
    // One site at most: a single page, so any cursor is past its end.
    const match = own && query.cursor === undefined && (q === '' || own.name.toLowerCase().includes(q));
    res.json({ items: match ? [presentSite(own)] : [] });
  });
  r.all('/sites/:id', async (req, res, next) => {
    if (req.params.id !== site(res) && (await deps.sites.get(req.params.id))) {
      throw new OutsideSiteError(`site ${req.params.id}`);
    }
    next();
  });

  // ---- locations ----
  r.post('/locations', (req, res, next) => {
    ownSiteField(req, site(res), 'siteId');
    next();
  });
  r.all(['/locations/:id', '/locations/:id/*rest'], async (req, res, next) => {
    await checkLocation(req.params.id as string, site(res));
    if (req.method === 'PATCH' && 'siteId' in bodyOf(req) && bodyOf(req).siteId !== site(res)) {
      throw new OutsideSiteError(`siteId ${JSON.stringify(bodyOf(req).siteId)}`);
    }
    next();
  });

  // ---- users ----
  // A user of this site only is the token's to change; one that also belongs to another site is shared:
  // readable, registrations at this site's locations, but no changes that reach the other site.
  const sameSites = (siteIds: unknown, s: string) =>
    Array.isArray(siteIds) && siteIds.length > 0 && siteIds.every((id) => id === s);
  r.post('/users', (req, res, next) => {
    const s = site(res);
    const body = mutableBody(req);
    if (!('siteIds' in body)) body.siteIds = [s];
    else if (!sameSites(body.siteIds, s))
      throw new OutsideSiteError(`siteIds other than [${JSON.stringify(s)}]`);
    next();
  });
  r.all(['/users/:id', '/users/:id/*rest'], async (req, res, next) => {
    const s = site(res);
    const id = req.params.id as string;
    const user = await deps.users.get(id);
    if (user && !user.siteIds.includes(s)) throw new OutsideSiteError(`user ${id}`);
    next();
  });
  const ownUserOnly = async (req: Request, res: Response, next: (err?: unknown) => void) => {
    const s = site(res);
    const id = req.params.id as string;
    const user = await deps.users.get(id);
    if (user && !sameSites(user.siteIds, s)) {
      throw new OutsideSiteError(`user ${id} also belongs to another site: changing it`);
    }
    const body = bodyOf(req);
    if ('siteIds' in body && !sameSites(body.siteIds, s)) {
      throw new OutsideSiteError(`siteIds other than [${JSON.stringify(s)}]`);
    }
    next();
  };
  r.patch('/users/:id', ownUserOnly);
  r.delete('/users/:id', ownUserOnly);
  r.put('/users/:id/password', ownUserOnly);
  r.all(
    ['/users/:id/registrations/:locationId', '/users/:id/registrations/:locationId/*rest'],
    async (req, res, next) => {
      await checkLocation(req.params.locationId as string, site(res));
      next();
    },
  );

  // ---- enrollment tokens and devices ----
  r.post('/enrollment-tokens', (req, res, next) => {
    ownSiteField(req, site(res), 'siteId');
    next();
  });
  r.all(['/devices/:udid', '/devices/:udid/*rest'], async (req, res, next) => {
    await checkDevice(req.params.udid as string, site(res));
    next();
  });
  // Matched like the route itself (express: any case, optional trailing slash), never by `req.path`.
  r.put('/devices/:udid/user', async (req, res, next) => {
    const userId = bodyOf(req).userId;
    if (typeof userId === 'string') await checkUser(userId, site(res));
    next();
  });

  // ---- invitations ----
  r.post('/vpp-invitations', async (req, res, next) => {
    const locationId = bodyOf(req).locationId;
    if (typeof locationId === 'string') await checkLocation(locationId, site(res));
    next();
  });
  r.all(['/vpp-invitations/:id', '/vpp-invitations/:id/*rest'], async (req, res, next) => {
    const inv = await deps.invitations.getInvitation(req.params.id as string);
    if (inv && inv.deletedAt === null) {
      // The location's site now (an invitation's own `siteId` follows a site change a moment later).
      const loc = await deps.locations.getLocation(inv.locationId);
      if ((loc?.siteId ?? inv.siteId) !== site(res))
        throw new OutsideSiteError(`invitation ${req.params.id}`);
    }
    next();
  });

  return r;
}
