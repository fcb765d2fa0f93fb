/**
 * Storage of the email channel's messages (implemented in `server/storage/email-store.ts`): one row per
 * message to send (the first invitation of a usage, then one per resend), so that a message is sent
 * once whatever restarts, and its fate is known. Times come from the caller.
 */

/**
 * - `queued`: waiting for its job (first try, or a retry after a temporary failure);
 * - `sending`: handed to SMTP, no answer recorded yet (a crash leaves it so: see `EmailChannel`);
 * - `sent`: accepted by the SMTP server; `failed`: refused for good; `cancelled`: withdrawn unsent.
 */
export type EmailMessageStatus = 'queued' | 'sending' | 'sent' | 'failed' | 'cancelled';

/** `invite`: the invitation's first message to the user; `resend`: an admin's resend. */
export type EmailMessageKind = 'invite' | 'resend';

export interface EmailMessage {
  id: string;
  usageId: string;
  invitationId: string;
  /** 1 for the usage's first message, then one more per message */
  seq: number;
  kind: EmailMessageKind;
  /** Apple's invite code when the message was made (a new code makes a new message) */
  inviteCode: string;
  toAddress: string;
  toName: string | null;
  registrationUrl: string;
  /** the Message-ID header, with angle brackets (the same for every try of this message) */
  messageId: string;
  status: EmailMessageStatus;
  /** tries handed to SMTP */
  attempts: number;
  lastError: string | null;
  smtpResponse: string | null;
  sentAt: Date | null;
  createdAt: Date;
}

export interface NewEmailMessage {
  usageId: string;
  invitationId: string;
  kind: EmailMessageKind;
  inviteCode: string;
  toAddress: string;
  toName: string | null;
  registrationUrl: string;
}

export interface EmailStore {
  /** The newest message of each of these usages (usages without one are not in the map). */
  latest(usageIds: readonly string[]): Promise<Map<string, EmailMessage>>;
  /**
   * Adds messages (`queued`), each with the next `seq` of its usage and the Message-ID `messageId`
   * makes from it. Answers them in the order given.
   */
  add(
    messages: readonly NewEmailMessage[],
    messageId: (m: NewEmailMessage, seq: number) => string,
    now: Date,
  ): Promise<EmailMessage[]>;
  get(id: string): Promise<EmailMessage | null>;
  /**
   * Records a try before it is handed to SMTP: `queued` or `sending` → `sending`, attempts + 1.
   * False when the message is in another state (cancelled, sent or failed meanwhile).
   */
  markSending(id: string, now: Date): Promise<boolean>;
  markSent(id: string, smtpResponse: string, now: Date): Promise<void>;
  /** A temporary failure: back to `queued` with the error. */
  markRetrying(id: string, error: string, now: Date): Promise<void>;
  markFailed(id: string, reason: string, now: Date): Promise<void>;
  /** Cancels the `queued` messages of these usages; answers how many. */
  cancelQueued(usageIds: readonly string[], now: Date): Promise<number>;
}
