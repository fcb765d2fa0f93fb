/** An uploaded push certificate as stored: the private key stays sealed (SecretBox) until used. */
export interface PushCertificateRecord {
  /** database id; a new upload (renewal or replacement) gets a new one, so it is the version too */
  id: string;
  topic: string;
  certPem: string;
  keySealed: string;
  notAfter: Date;
  uploadedAt: Date;
}

export interface PushCertificateStore {
  /** The id of the active certificate (a cheap query: instances poll it to notice a renewal). */
  activeId(): Promise<string | null>;
  getActive(): Promise<PushCertificateRecord | null>;
  /**
   * Makes a new certificate the active one, in one transaction. `check` runs inside it with the certificate
   * active until now and may throw (a topic change without `force`): then nothing is stored.
   */
  replace(
    input: Omit<PushCertificateRecord, 'id'>,
    check: (current: PushCertificateRecord | null) => void,
  ): Promise<PushCertificateRecord>;
}

/** A push request claimed by one worker, with what the push needs from its enrollment. */
export interface ClaimedPush {
  enrollmentId: string;
  /** failed attempts so far */
  attempts: number;
  /** null when the enrollment no longer exists */
  pushToken: string | null;
  pushMagic: string | null;
  enabled: boolean;
  pushTokenDead: boolean;
  lastPushedAt: Date | null;
}

/** How a claimed batch ended. Rows not named here keep their lease until it runs out. */
export interface PushSettlement {
  /** APNs accepted: the row goes (or, when requested again meanwhile, comes back at `followUpAt`) */
  sent: string[];
  followUpAt: Date;
  /** APNs said the token is gone: the enrollment's token is marked dead when it is still this one */
  dead: { enrollmentId: string; pushToken: string }[];
  /** nothing to push (enrollment gone, disabled, without token, token dead, too many attempts) */
  dropped: string[];
  /** not yet: pushed too recently (the coalescing window); no attempt counted */
  deferred: { enrollmentId: string; dueAt: Date }[];
  /** failed and kept for a retry */
  failed: { enrollmentId: string; attempts: number; dueAt: Date; error: string }[];
}

export interface PushQueueStats {
  /** rows in the queue */
  pending: number;
  /** rows due now (not leased) */
  due: number;
  /** rows that failed at least once */
  retrying: number;
  /** the oldest due time of an unleased row (how far behind the queue is) */
  oldestDueAt: Date | null;
}

/** The durable push queue: one row per enrollment that needs a push. */
export interface PushQueueStore {
  /** Asks for a push to each enrollment: a new row due now, or one more request on an existing row. */
  request(enrollmentIds: readonly string[], now: Date): Promise<void>;
  /**
   * Claims up to `limit` due rows for `owner` until `now + leaseMs` (a conditional UPDATE: a row is
   * claimed by one owner at a time, across instances) and returns them with their enrollments.
   */
  claim(owner: string, now: Date, limit: number, leaseMs: number): Promise<ClaimedPush[]>;
  /** Applies the outcome of a claimed batch, in one transaction (rows still leased by `owner` only). */
  settle(owner: string, settlement: PushSettlement, now: Date): Promise<void>;
  /** Records pushes made outside the queue (the admin's push now). */
  recordPushed(enrollmentIds: readonly string[], at: Date): Promise<void>;
  /** Marks tokens dead (410 / BadDeviceToken) when the enrollment still has that token. */
  markTokensDead(items: readonly { enrollmentId: string; pushToken: string }[], now: Date): Promise<void>;
  /**
   * Enabled enrollments with a live token that have a command unanswered since before `olderThan`, were
   * not pushed since `pushedBefore`, and have no push request: what the slow sweep pushes again.
   */
  sweepCandidates(olderThan: Date, pushedBefore: Date, limit: number): Promise<string[]>;
  /** Those of these enrollments that have an unanswered command (queued, sent or NotNow). */
  withUnanswered(enrollmentIds: readonly string[]): Promise<string[]>;
  stats(now: Date): Promise<PushQueueStats>;
}
