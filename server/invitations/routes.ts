import { once } from 'node:events';
import { Router } from 'express';
import { siteLimitOf } from '../admin/auth.ts';
import { parse } from '../admin/validate.ts';
import type { Logger } from '../log.ts';
import type { InvitationService } from './invitation-service.ts';
import {
  presentInvitation,
  presentUsage,
  USAGE_CSV_COLUMNS,
  csvRecord,
  usageCsvRecord,
} from './presenters.ts';
import { invitationCreate, invitationListQuery, invitationPatch, resendBody, usageQuery } from './schemas.ts';

export interface InvitationRouteDeps {
  invitations: InvitationService;
  /** the server's public base URL (for the users' `/register/{code}` links) */
  publicUrl: string;
  log: Logger;
}

/** `/api/v1/vpp-invitations`: invitations, their usage (JSON or CSV) and resend. */
export function invitationRoutes(deps: InvitationRouteDeps): Router {
  const r = Router();
  const svc = deps.invitations;

  r.post('/vpp-invitations', async (req, res) => {
    const body = parse(invitationCreate, req.body ?? {});
    const view = await svc.create(body);
    res.status(201).json(presentInvitation(view.invitation, view.counts));
  });

  r.get('/vpp-invitations', async (req, res) => {
    const q = parse(invitationListQuery, req.query, 'query');
    const page = await svc.list({
      limit: q.limit,
      cursor: q.cursor ?? null,
      q: q.q ?? null,
      locationId: q.locationId ?? null,
      siteId: siteLimitOf(res),
    });
    res.json({
      items: page.items.map((v) => presentInvitation(v.invitation, v.counts)),
      ...(page.nextCursor !== null ? { nextCursor: page.nextCursor } : {}),
    });
  });

  r.get('/vpp-invitations/:id', async (req, res) => {
    const view = await svc.get(req.params.id);
    res.json(presentInvitation(view.invitation, view.counts));
  });

  r.patch('/vpp-invitations/:id', async (req, res) => {
    const body = parse(invitationPatch, req.body ?? {});
    const view = await svc.update(req.params.id, body);
    res.json(presentInvitation(view.invitation, view.counts));
  });

  r.delete('/vpp-invitations/:id', async (req, res) => {
    await svc.delete(req.params.id);
    res.status(204).end();
  });

  r.get('/vpp-invitations/:id/usage', async (req, res) => {
    const q = parse(usageQuery, req.query, 'query');
    if (q.format === 'csv') {
      const invitation = await svc.live(req.params.id);
      res.status(200);
      res.setHeader('Content-Type', 'text/csv; charset=utf-8');
      res.setHeader('Content-Disposition', `attachment; filename="invitation-${invitation.id}-usage.csv"`);
      res.setHeader('Cache-Control', 'no-store');
      let closed = false;
      res.on('close', () => {
        closed = true;
      });
      const write = async (chunk: string) => {
        if (!res.write(chunk)) await once(res, 'drain');
      };
      try {
        await write(csvRecord(USAGE_CSV_COLUMNS));
        for await (const items of svc.usageAll(invitation.id, { status: q.status ?? null, q: q.q ?? null })) {
          if (closed) return;
          await write(items.map(usageCsvRecord).join(''));
        }
        res.end();
      } catch (err) {
        // The header is out: the client sees a cut answer instead of a complete-looking file.
        deps.log.error({ err, invitationId: invitation.id }, 'usage export failed');
        res.destroy();
      }
      return;
    }
    const { invitation, page } = await svc.usage(req.params.id, {
      limit: q.limit,
      cursor: q.cursor ?? null,
      status: q.status ?? null,
      q: q.q ?? null,
    });
    res.json({
      items: page.items.map((item) => presentUsage(item, invitation, deps.publicUrl)),
      ...(page.nextCursor !== null ? { nextCursor: page.nextCursor } : {}),
    });
  });

  r.post('/vpp-invitations/:id/resend', async (req, res) => {
    const body = parse(resendBody, req.body ?? {});
    const resent = await svc.resend(req.params.id, body);
    res.json({ resent });
  });

  return r;
}
