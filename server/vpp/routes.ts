import express, { Router, type Request } from 'express';
import { siteLimitOf } from '../admin/auth.ts';
import { parse } from '../admin/validate.ts';
import type { UserStore } from '../directory/store.ts';
import { NotFoundError } from '../errors.ts';
import type { LocationService } from './location-service.ts';
import type { NotificationService } from './notification-service.ts';
import { presentLocation, presentRegistration } from './presenters.ts';
import type { Location, LocationSecrets } from './store.ts';
import type { RegistrationService } from './registration-service.ts';
import { forceQuery, locationCreate, locationListQuery, locationPatch, registerBody } from './schemas.ts';

export interface VppDeps {
  locations: LocationService;
  registrations: RegistrationService;
  notifications: NotificationService;
  users: Pick<UserStore, 'get'>;
}

/** `/api/v1` routes: locations, and users' registrations. */
export function vppRoutes(deps: VppDeps): Router {
  const r = Router();

  // ---- locations ----
  r.post('/locations', async (req, res) => {
    const body = parse(locationCreate, req.body ?? {});
    const { force } = parse(forceQuery, req.query, 'query');
    const loc = await deps.locations.create(body, { force: force === true });
    res.status(201).json(presentLocation(loc));
  });

  r.get('/locations', async (req, res) => {
    const q = parse(locationListQuery, req.query, 'query');
    const page = await deps.locations.list({
      limit: q.limit,
      cursor: q.cursor ?? null,
      q: q.q ?? null,
      siteId: siteLimitOf(res),
    });
    res.json({
      items: page.items.map(presentLocation),
      ...(page.nextCursor !== null ? { nextCursor: page.nextCursor } : {}),
    });
  });

  r.get('/locations/:id', async (req, res) => {
    res.json(presentLocation(await deps.locations.get(req.params.id)));
  });

  r.patch('/locations/:id', async (req, res) => {
    const body = parse(locationPatch, req.body ?? {});
    res.json(presentLocation(await deps.locations.update(req.params.id, body)));
  });

  r.delete('/locations/:id', async (req, res) => {
    await deps.locations.delete(req.params.id);
    res.status(204).end();
  });

  /** Asks for a `users` sync of the location now (it runs in the background). */
  r.post('/locations/:id/sync', async (req, res) => {
    await deps.locations.syncNow(req.params.id);
    res.status(202).json({ status: 'queued' });
  });

  // ---- registrations ----
  r.get('/users/:id/registrations', async (req, res) => {
    if (!(await deps.users.get(req.params.id))) throw new NotFoundError('user');
    let items = await deps.registrations.registrationsOfUser(req.params.id);
    const siteLimit = siteLimitOf(res);
    if (siteLimit !== null) {
      // A user shared with other sites: only the registrations at this site's locations.
      const sites = new Map<string, string | null>();
      for (const id of new Set(items.map((r) => r.locationId))) {
        sites.set(id, (await deps.locations.get(id).catch(() => null))?.siteId ?? null);
      }
      items = items.filter((r) => sites.get(r.locationId) === siteLimit);
    }
    res.json({ items: items.map(presentRegistration) });
  });

  /** Registers the user at the location now (created: 201; already registered or on its way: 200). */
  r.post('/users/:id/registrations/:locationId', async (req, res) => {
    const body = parse(registerBody, req.body ?? {});
    const { registration, created } = await deps.registrations.registerNow(
      req.params.id,
      req.params.locationId,
      {
        managed: body.managed === true,
      },
    );
    res.status(created ? 201 : 200).json(presentRegistration(registration));
  });

  r.post('/users/:id/registrations/:locationId/retire', async (req, res) => {
    if (!(await deps.users.get(req.params.id))) throw new NotFoundError('user');
    const retired = await deps.registrations.retire(req.params.id, req.params.locationId);
    res.json(presentRegistration(retired));
  });

  return r;
}

/** `POST /apple/vpp/notifications/{locationId}` (outside `/api/v1`: Apple authenticates with the location's token). */
export function vppNotificationRoutes(deps: Pick<VppDeps, 'notifications'>): Router {
  const r = Router();
  const located = new WeakMap<Request, Location & LocationSecrets>();
  r.post(
    '/apple/vpp/notifications/:locationId',
    // Authenticated before the body is read: strangers cannot make the server read their bodies.
    async (req, _res, next) => {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
      located.set(req, await deps.notifications.authenticate(req.params.locationId, m?.[1] ?? null));
      next();
    },
    express.raw({ type: () => true, limit: '2mb' }),
    async (req, res) => {
      const loc = located.get(req);
      if (!loc) throw new NotFoundError('location');
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const answer = await deps.notifications.apply(loc, body);
      res.status(answer.status).json({ ok: true });
    },
  );
  return r;
}
