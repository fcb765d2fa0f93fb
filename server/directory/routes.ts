import { Router } from 'express';
import { siteLimitOf } from '../admin/auth.ts';
import { OutsideSiteError } from '../admin/site-scope.ts';
import { listQuery, parse } from '../admin/validate.ts';
import { NotFoundError } from '../errors.ts';
import { UnknownIdsError } from './errors.ts';
import { presentGroup, presentPage, presentSite, presentUser } from './presenters.ts';
import {
  groupCreate,
  groupPatch,
  passwordBody,
  siteCreate,
  sitePatch,
  userCreate,
  userListQuery,
  userPatch,
} from './schemas.ts';
import { collectIds, type GroupStore, type SiteStore, type UserGroup, type UserStore } from './store.ts';
import type { UserService } from './user-service.ts';

export interface DirectoryDeps {
  sites: SiteStore;
  users: UserStore;
  groups: GroupStore;
  userService: UserService;
  now?: () => Date;
}

/** `/api/v1` routes of the directory: sites, users (with local accounts) and user groups. */
export function directoryRoutes(deps: DirectoryDeps): Router {
  const r = Router();
  const now = () => deps.now?.() ?? new Date();
  const list = (query: unknown) => {
    const q = parse(listQuery, query, 'query');
    return { limit: q.limit, cursor: q.cursor ?? null, q: q.q ?? null };
  };
  /** Every member; for a site-limited caller, the members of its site only. */
  const groupWithMembers = async (group: UserGroup, siteLimit: string | null = null) => {
    const ids = await collectIds(deps.groups.listMemberIds([group.id]));
    if (siteLimit === null) return presentGroup(group, ids);
    const inSite = new Set(await collectIds(deps.users.listUserIdsInSite(siteLimit)));
    const members = ids.filter((id) => inSite.has(id));
    return { ...presentGroup(group, members), userCount: members.length };
  };

  // ---- sites ----
  r.post('/sites', async (req, res) => {
    const body = parse(siteCreate, req.body ?? {});
    res.status(201).json(presentSite(await deps.sites.create(body.name, now())));
  });

  r.get('/sites', async (req, res) => {
    res.json(presentPage(await deps.sites.list(list(req.query)), presentSite));
  });

  r.get('/sites/:id', async (req, res) => {
    const site = await deps.sites.get(req.params.id);
    if (!site) throw new NotFoundError('site');
    res.json(presentSite(site));
  });

  r.patch('/sites/:id', async (req, res) => {
    const body = parse(sitePatch, req.body ?? {});
    const site =
      body.name === undefined
        ? await deps.sites.get(req.params.id)
        : await deps.sites.rename(req.params.id, body.name, now());
    if (!site) throw new NotFoundError('site');
    res.json(presentSite(site));
  });

  r.delete('/sites/:id', async (req, res) => {
    if (!(await deps.sites.delete(req.params.id))) throw new NotFoundError('site');
    res.status(204).end();
  });

  // ---- users ----
  r.post('/users', async (req, res) => {
    const body = parse(userCreate, req.body ?? {});
    res.status(201).json(presentUser(await deps.userService.create(body)));
  });

  r.get('/users', async (req, res) => {
    const q = parse(userListQuery, req.query, 'query');
    const limit = siteLimitOf(res);
    if (limit !== null && q.siteId !== undefined && q.siteId !== limit)
      throw new OutsideSiteError(`site ${q.siteId}`);
    if (limit !== null) q.siteId = limit;
    if (q.siteId !== undefined && (await deps.sites.missing([q.siteId])).length > 0) {
      throw new UnknownIdsError({ siteId: [q.siteId] });
    }
    if (q.groupId !== undefined && (await deps.groups.missing([q.groupId])).length > 0) {
      throw new UnknownIdsError({ groupId: [q.groupId] });
    }
    const page = await deps.users.list({
      limit: q.limit,
      cursor: q.cursor ?? null,
      q: q.q ?? null,
      siteId: q.siteId ?? null,
      groupId: q.groupId ?? null,
    });
    res.json(presentPage(page, presentUser));
  });

  r.get('/users/:id', async (req, res) => {
    const user = await deps.users.get(req.params.id);
    if (!user) throw new NotFoundError('user');
    res.json(presentUser(user));
  });

  r.patch('/users/:id', async (req, res) => {
    const body = parse(userPatch, req.body ?? {});
    res.json(presentUser(await deps.userService.update(req.params.id, body)));
  });

  r.put('/users/:id/password', async (req, res) => {
    const body = parse(passwordBody, req.body ?? {});
    await deps.userService.setPassword(req.params.id, body.password);
    res.status(204).end();
  });

  r.delete('/users/:id', async (req, res) => {
    await deps.userService.delete(req.params.id);
    res.status(204).end();
  });

  // ---- user groups ----
  r.post('/user-groups', async (req, res) => {
    const body = parse(groupCreate, req.body ?? {});
    const group = await deps.groups.create(body, now());
    res.status(201).json(await groupWithMembers(group));
  });

  r.get('/user-groups', async (req, res) => {
    const page = await deps.groups.list(list(req.query));
    const siteLimit = siteLimitOf(res);
    if (siteLimit === null) {
      res.json(presentPage(page, (g) => presentGroup(g)));
      return;
    }
    // A site-limited caller counts the members of its site only (groups are shared by every site).
    const inSite = new Set(await collectIds(deps.users.listUserIdsInSite(siteLimit)));
    const items = [];
    for (const g of page.items) {
      const members = await collectIds(deps.groups.listMemberIds([g.id]));
      items.push({ ...presentGroup(g), userCount: members.filter((id) => inSite.has(id)).length });
    }
    res.json({ items, ...(page.nextCursor !== null ? { nextCursor: page.nextCursor } : {}) });
  });

  r.get('/user-groups/:id', async (req, res) => {
    const group = await deps.groups.get(req.params.id);
    if (!group) throw new NotFoundError('user group');
    res.json(await groupWithMembers(group, siteLimitOf(res)));
  });

  r.get('/user-groups/:id/users', async (req, res) => {
    const q = parse(listQuery, req.query, 'query');
    if (!(await deps.groups.get(req.params.id))) throw new NotFoundError('user group');
    const page = await deps.users.list({
      limit: q.limit,
      cursor: q.cursor ?? null,
      q: q.q ?? null,
      siteId: siteLimitOf(res),
      groupId: req.params.id,
    });
    res.json(presentPage(page, presentUser));
  });

  r.patch('/user-groups/:id', async (req, res) => {
    const body = parse(groupPatch, req.body ?? {});
    const group = await deps.groups.update(req.params.id, body, now());
    if (!group) throw new NotFoundError('user group');
    res.json(await groupWithMembers(group));
  });

  r.delete('/user-groups/:id', async (req, res) => {
    if (!(await deps.groups.delete(req.params.id))) throw new NotFoundError('user group');
    res.status(204).end();
  });

  return r;
}
