/**
 * `GET /invite?inviteCode=…&mt=8` shows the sign-in page; `POST` (an HTML form: `appleId`, `action`
 * accept|decline) accepts or declines.
 */
import express from 'express';
import type { Request, Response } from 'express';
import { z } from 'zod';
import {
  invitationAccepted,
  invitationAlreadyAccepted,
  invitationDeclined,
  invitationForm,
  invitationGone,
  invitationNotFound,
} from './invite-page.ts';
import type { AcceptResult, DeclineResult, InvitationInfo } from './vpp-state.ts';

export interface InviteDeps {
  invitation: (inviteCode: string) => InvitationInfo | null;
  accept: (inviteCode: string, appleId: string) => AcceptResult;
  decline: (inviteCode: string) => DeclineResult;
}

export const INVITE_PATH = '/invite';

const inviteQuery = z.object({ inviteCode: z.string().min(1).max(200).optional() });
const inviteForm = z.object({
  inviteCode: z.string().min(1).max(200).optional(),
  appleId: z.string().trim().max(254).optional(),
  action: z.enum(['accept', 'decline']).optional(),
});

function html(res: Response, status: number, body: string): void {
  res.status(status).type('text/html; charset=utf-8').set('Cache-Control', 'no-store').send(body);
}

function codeOf(req: Request): string | null {
  const q = inviteQuery.safeParse(req.query);
  return q.success && q.data.inviteCode !== undefined ? q.data.inviteCode : null;
}

export function inviteRouter(deps: InviteDeps): express.Router {
  const router = express.Router();

  router.get(INVITE_PATH, (req, res) => {
    const code = codeOf(req);
    const info = code === null ? null : deps.invitation(code);
    if (!info || code === null) return html(res, 404, invitationNotFound());
    if (info.status === 'Retired') return html(res, 410, invitationGone());
    return html(
      res,
      200,
      invitationForm({ orgName: info.orgName, locationName: info.locationName, action: req.originalUrl }),
    );
  });

  router.post(INVITE_PATH, express.urlencoded({ extended: false, limit: '16kb' }), (req, res) => {
    const form = inviteForm.safeParse(req.body ?? {});
    const code = codeOf(req) ?? (form.success ? (form.data.inviteCode ?? null) : null);
    const info = code === null ? null : deps.invitation(code);
    if (!info || code === null) return html(res, 404, invitationNotFound());
    if (info.status === 'Retired') return html(res, 410, invitationGone());
    const formPage = (error: string, appleId?: string) =>
      invitationForm({
        orgName: info.orgName,
        locationName: info.locationName,
        action: req.originalUrl,
        error,
        ...(appleId !== undefined ? { appleId } : {}),
      });
    if (!form.success) return html(res, 400, formPage('The form was not valid. Try again.'));
    if (form.data.action === 'decline') {
      deps.decline(code);
      return html(res, 200, invitationDeclined({ orgName: info.orgName }));
    }
    const appleId = form.data.appleId ?? '';
    if (appleId === '') return html(res, 400, formPage('Enter your Apple ID.'));
    const outcome = deps.accept(code, appleId);
    switch (outcome.result) {
      case 'associated':
      case 'already_associated':
        return html(res, 200, invitationAccepted({ orgName: info.orgName, appleId }));
      case 'kept_first_apple_id':
        return html(res, 409, invitationAlreadyAccepted({ orgName: info.orgName }));
      case 'retired':
        return html(res, 410, invitationGone());
      case 'not_found':
        return html(res, 404, invitationNotFound());
    }
  });

  return router;
}
