import { QueryTypes } from 'sequelize';
import type {
  DeliveryChannel,
  DeliveryOutcome,
  InvitationForDelivery,
  UsageForDelivery,
  UsageRef,
  WithdrawReason,
} from '../../../server/invitations/channels.ts';
import type { ChannelMethod } from '../../../server/invitations/model.ts';
import type { Database } from '../../../server/storage/database.ts';
import { toInt } from '../../../server/storage/models.ts';
import type { TestServer } from '../../helpers/test-server.ts';

/** A delivery channel for tests: records every call and answers `sent` (or what `outcome` says). */
export class RecordingChannel implements DeliveryChannel {
  readonly delivered: { invitationId: string; item: UsageForDelivery }[] = [];
  readonly resent: { invitationId: string; item: UsageForDelivery }[] = [];
  readonly withdrawn: { invitationId: string; ref: UsageRef; reason: WithdrawReason }[] = [];
  outcome: (item: UsageForDelivery) => Omit<DeliveryOutcome, 'usageId'> = () => ({ status: 'sent' });

  constructor(readonly method: ChannelMethod) {}

  async deliver(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    for (const item of items) this.delivered.push({ invitationId: inv.id, item });
    return items.map((item) => ({ usageId: item.usageId, ...this.outcome(item) }));
  }

  async resend(inv: InvitationForDelivery, items: readonly UsageForDelivery[]): Promise<DeliveryOutcome[]> {
    for (const item of items) this.resent.push({ invitationId: inv.id, item });
    return items.map((item) => ({ usageId: item.usageId, ...this.outcome(item) }));
  }

  async withdraw(
    inv: InvitationForDelivery,
    refs: readonly UsageRef[],
    reason: WithdrawReason,
  ): Promise<void> {
    for (const ref of refs) this.withdrawn.push({ invitationId: inv.id, ref, reason });
  }

  deliveredTo(invitationId: string): Set<string> {
    return new Set(this.delivered.filter((d) => d.invitationId === invitationId).map((d) => d.item.userId));
  }
}

/** Many directory users at once (one multi-row insert per 1,000; the API makes one per request). */
export async function bulkUsers(
  db: Database,
  count: number,
  prefix: string,
  extra: (i: number) => Record<string, unknown> = () => ({}),
): Promise<string[]> {
  const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
  const now = new Date();
  for (let i = 0; i < names.length; i += 1000) {
    const part = names.slice(i, i + 1000);
    await db.write((t) =>
      db.sequelize.getQueryInterface().bulkInsert(
        'users',
        part.map((name, j) => ({
          username: name,
          username_key: name.toLowerCase(),
          created_at: now,
          updated_at: now,
          ...extra(i + j),
        })),
        { transaction: t },
      ),
    );
  }
  const ids: string[] = [];
  for (let i = 0; i < names.length; i += 500) {
    const rows = await db.sequelize.query<{ id: unknown }>(
      'SELECT id FROM users WHERE username_key IN (:names) ORDER BY id',
      {
        type: QueryTypes.SELECT,
        replacements: { names: names.slice(i, i + 500).map((n) => n.toLowerCase()) },
      },
    );
    ids.push(...rows.map((r) => String(toInt(r.id))));
  }
  return ids;
}

export interface InvitationJson {
  id: string;
  name: string;
  locationId: string;
  siteId: string | null;
  distributionMethod: string;
  autoRegisterManagedUsers: boolean;
  requireLogin: boolean;
  email: Record<string, string> | null;
  scope: {
    allUsers: boolean;
    userIds: string[];
    groupIds: string[];
    exclusions: { userIds: string[]; groupIds: string[] };
  };
  counts: Record<string, number>;
  fanout: {
    state: string;
    processed: number;
    total: number;
    waitingForChannel: number;
    error: string | null;
  };
  createdAt: string;
  updatedAt: string;
}

export interface UsageJson {
  id: string;
  userId: string;
  username: string;
  email: string | null;
  status: string;
  lastAction: string | null;
  lastActionAt: string | null;
  sentAt: string | null;
  reason: string | null;
  devices: { udid: string; enrollmentId: string; commandStatus: string | null }[];
  invitationUrl: string | null;
  registrationUrl: string | null;
}

export async function getInvitation(ts: TestServer, id: string): Promise<InvitationJson> {
  const res = await ts.api('GET', `/vpp-invitations/${id}`);
  if (res.status !== 200) throw new Error(`GET invitation: ${res.status} ${res.text}`);
  return res.json<InvitationJson>();
}

/** The whole usage of an invitation (every page). */
export async function usageOf(ts: TestServer, id: string, query = ''): Promise<UsageJson[]> {
  const out: UsageJson[] = [];
  let cursor: string | undefined;
  for (;;) {
    const qs = new URLSearchParams(query);
    qs.set('limit', '1000');
    if (cursor) qs.set('cursor', cursor);
    const res = await ts.api('GET', `/vpp-invitations/${id}/usage?${qs.toString()}`);
    if (res.status !== 200) throw new Error(`GET usage: ${res.status} ${res.text}`);
    const page = res.json<{ items: UsageJson[]; nextCursor?: string }>();
    out.push(...page.items);
    if (!page.nextCursor) return out;
    cursor = page.nextCursor;
  }
}

export async function createInvitation(
  ts: TestServer,
  body: Record<string, unknown>,
): Promise<InvitationJson> {
  const res = await ts.api('POST', '/vpp-invitations', body);
  if (res.status !== 201) throw new Error(`POST invitation: ${res.status} ${res.text}`);
  return res.json<InvitationJson>();
}
