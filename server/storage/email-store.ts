import type { Sequelize } from 'sequelize';
import type {
  EmailMessage,
  EmailMessageKind,
  EmailMessageStatus,
  EmailStore,
  NewEmailMessage,
} from '../mail/email-store.ts';
import { chunked } from './command-store.ts';
import type { Database } from './database.ts';
import { toDate, toDateOrNull, toInt } from './models.ts';
import { dbId, dbIds, execCount, idString, select } from './sql-kit.ts';

const IN_CHUNK = 500;
const MAX_TEXT = 500;

const clip = (s: string) => s.slice(0, MAX_TEXT);

interface EmailRow {
  id: unknown;
  usage_id: unknown;
  invitation_id: unknown;
  seq: unknown;
  kind: string;
  invite_code: string;
  to_address: string;
  to_name: string | null;
  registration_url: string;
  message_id: string;
  status: string;
  attempts: unknown;
  last_error: string | null;
  smtp_response: string | null;
  sent_at: unknown;
  created_at: unknown;
}

const COLUMNS = `id, usage_id, invitation_id, seq, kind, invite_code, to_address, to_name, registration_url,
  message_id, status, attempts, last_error, smtp_response, sent_at, created_at`;

const STATUSES: readonly EmailMessageStatus[] = ['queued', 'sending', 'sent', 'failed', 'cancelled'];

function toMessage(r: EmailRow): EmailMessage {
  const status = STATUSES.find((s) => s === r.status) ?? 'failed';
  const kind: EmailMessageKind = r.kind === 'resend' ? 'resend' : 'invite';
  return {
    id: idString(r.id),
    usageId: idString(r.usage_id),
    invitationId: idString(r.invitation_id),
    seq: toInt(r.seq),
    kind,
    inviteCode: r.invite_code,
    toAddress: r.to_address,
    toName: r.to_name,
    registrationUrl: r.registration_url,
    messageId: r.message_id,
    status,
    attempts: toInt(r.attempts),
    lastError: r.last_error,
    smtpResponse: r.smtp_response,
    sentAt: toDateOrNull(r.sent_at),
    createdAt: toDate(r.created_at),
  };
}

/** `EmailStore` over `invitation_emails` (migration `0007_email`), with plain SQL for every dialect. */
export class SqlEmailStore implements EmailStore {
  private readonly sequelize: Sequelize;

  constructor(private readonly db: Database) {
    this.sequelize = db.sequelize;
  }

  async latest(usageIds: readonly string[]): Promise<Map<string, EmailMessage>> {
    const out = new Map<string, EmailMessage>();
    for (const ids of chunked(dbIds(usageIds), IN_CHUNK)) {
      const rows = await select<EmailRow>(
        this.sequelize,
        `SELECT ${COLUMNS} FROM invitation_emails e
          WHERE e.usage_id IN (:ids)
            AND e.seq = (SELECT MAX(x.seq) FROM invitation_emails x WHERE x.usage_id = e.usage_id)`,
        { ids },
      );
      for (const r of rows) {
        const m = toMessage(r);
        out.set(m.usageId, m);
      }
    }
    return out;
  }

  async add(
    messages: readonly NewEmailMessage[],
    messageId: (m: NewEmailMessage, seq: number) => string,
    now: Date,
  ): Promise<EmailMessage[]> {
    const valid = messages.filter((m) => dbId(m.usageId) !== null && dbId(m.invitationId) !== null);
    if (valid.length === 0) return [];
    const out: EmailMessage[] = [];
    // One usage appears once per call (the channel makes one message per usage at a time).
    for (const part of chunked(valid, IN_CHUNK)) {
      const made = await this.db.write(
        async (t) => {
          const ids = dbIds(part.map((m) => m.usageId));
          const maxRows = await select<{ usage_id: unknown; seq: unknown }>(
            this.sequelize,
            'SELECT usage_id, MAX(seq) AS seq FROM invitation_emails WHERE usage_id IN (:ids) GROUP BY usage_id',
            { ids },
            t,
          );
          const next = new Map<string, number>();
          for (const r of maxRows) next.set(idString(r.usage_id), toInt(r.seq ?? 0));
          const rows = part.map((m) => {
            const seq = (next.get(m.usageId) ?? 0) + 1;
            next.set(m.usageId, seq);
            return {
              usage_id: dbId(m.usageId),
              invitation_id: dbId(m.invitationId),
              seq,
              kind: m.kind,
              invite_code: m.inviteCode.slice(0, 255),
              to_address: m.toAddress.slice(0, 320),
              to_name: m.toName === null ? null : m.toName.slice(0, 255),
              registration_url: m.registrationUrl.slice(0, 1024),
              message_id: messageId(m, seq).slice(0, 255),
              status: 'queued',
              attempts: 0,
              last_error: null,
              smtp_response: null,
              sending_at: null,
              sent_at: null,
              created_at: now,
              updated_at: now,
            };
          });
          await this.sequelize.getQueryInterface().bulkInsert('invitation_emails', rows, { transaction: t });
          const back = await select<EmailRow>(
            this.sequelize,
            `SELECT ${COLUMNS} FROM invitation_emails WHERE usage_id IN (:ids) AND seq >= :minSeq`,
            { ids, minSeq: Math.min(...rows.map((r) => r.seq)) },
            t,
          );
          const byKey = new Map(back.map((r) => [`${idString(r.usage_id)}:${toInt(r.seq)}`, toMessage(r)]));
          return rows.map((r) => {
            const m = byKey.get(`${String(r.usage_id)}:${r.seq}`);
            if (!m) throw new Error('an inserted email message was not found');
            return m;
          });
        },
        { retryOnConflict: true },
      );
      out.push(...made);
    }
    return out;
  }

  async get(id: string): Promise<EmailMessage | null> {
    const key = dbId(id);
    if (key === null) return null;
    const rows = await select<EmailRow>(
      this.sequelize,
      `SELECT ${COLUMNS} FROM invitation_emails WHERE id = :key`,
      {
        key,
      },
    );
    const r = rows[0];
    return r ? toMessage(r) : null;
  }

  async markSending(id: string, now: Date): Promise<boolean> {
    return (
      (await this.update(
        id,
        `status = 'sending', attempts = attempts + 1, sending_at = :now, updated_at = :now`,
        ['queued', 'sending'],
        { now },
      )) > 0
    );
  }

  async markSent(id: string, smtpResponse: string, now: Date): Promise<void> {
    await this.update(
      id,
      `status = 'sent', sent_at = :now, smtp_response = :response, last_error = NULL, updated_at = :now`,
      ['queued', 'sending'],
      { now, response: clip(smtpResponse) },
    );
  }

  async markRetrying(id: string, error: string, now: Date): Promise<void> {
    await this.update(
      id,
      `status = 'queued', last_error = :error, updated_at = :now`,
      ['queued', 'sending'],
      {
        now,
        error: clip(error),
      },
    );
  }

  async markFailed(id: string, reason: string, now: Date): Promise<void> {
    await this.update(
      id,
      `status = 'failed', last_error = :error, updated_at = :now`,
      ['queued', 'sending'],
      {
        now,
        error: clip(reason),
      },
    );
  }

  async cancelQueued(usageIds: readonly string[], now: Date): Promise<number> {
    let n = 0;
    for (const ids of chunked(dbIds(usageIds), IN_CHUNK)) {
      n += await this.db.write((t) =>
        execCount(
          this.sequelize,
          t,
          `UPDATE invitation_emails SET status = 'cancelled', updated_at = :now
            WHERE usage_id IN (:ids) AND status = 'queued'`,
          { ids, now },
        ),
      );
    }
    return n;
  }

  private async update(
    id: string,
    set: string,
    from: readonly EmailMessageStatus[],
    replacements: Record<string, unknown>,
  ): Promise<number> {
    const key = dbId(id);
    if (key === null) return 0;
    return this.db.write((t) =>
      execCount(
        this.sequelize,
        t,
        `UPDATE invitation_emails SET ${set} WHERE id = :key AND status IN (:from)`,
        {
          ...replacements,
          key,
          from,
        },
      ),
    );
  }
}
