/**
 * Storage of durable jobs (implemented by `server/storage/job-store.ts`). Times come from the caller.
 * Every settling call names the claim's owner and does nothing when the lease was lost meanwhile (it ran
 * out and another instance took the job): it then answers false.
 */

export interface NewJob {
  kind: string;
  /** JSON text */
  payload: string;
  /**
   * Dedupe key: while a job with this key exists (pending or running), enqueueing it again adds no row.
   * The existing job keeps its payload (a keyed job's payload must follow from its key), runs no later
   * than the new `runAt`, and, when it is running, runs once more after it finishes.
   */
  key: string | null;
  runAt: Date;
}

export interface ClaimedJob {
  id: string;
  kind: string;
  key: string | null;
  payload: string;
  /** failed attempts so far (retries); `later` does not count */
  attempts: number;
  lastError: string | null;
  createdAt: Date;
}

export interface JobInfo {
  id: string;
  kind: string;
  key: string | null;
  status: 'pending' | 'failed';
  runAt: Date;
  attempts: number;
  lastError: string | null;
  leaseOwner: string | null;
  leaseUntil: Date | null;
}

export interface RescheduleOptions {
  runAt: Date;
  attempts: number;
  error: string | null;
  /** a request that arrived while the job ran moves `runAt` to now (else it waits for `runAt`) */
  wakeable: boolean;
}

export interface JobStore {
  enqueue(jobs: readonly NewJob[], now: Date): Promise<void>;
  /**
   * Leases up to `limit` due pending jobs of these kinds to `owner` until `now + leaseMs`, with one
   * conditional UPDATE (a job is leased by one owner at a time, across instances).
   */
  claim(
    owner: string,
    kinds: readonly string[],
    now: Date,
    limit: number,
    leaseMs: number,
  ): Promise<ClaimedJob[]>;
  extendLease(owner: string, id: string, leaseUntil: Date): Promise<boolean>;
  /** Done: the job goes, unless it was requested again while it ran: then it is due now. */
  complete(owner: string, id: string, now: Date): Promise<boolean>;
  reschedule(owner: string, id: string, opts: RescheduleOptions, now: Date): Promise<boolean>;
  /** Failed for good: kept with status `failed` and its key cleared (so the key can be enqueued again). */
  fail(owner: string, id: string, error: string, attempts: number, now: Date): Promise<boolean>;
  /** Makes the pending, unleased jobs whose key starts with `prefix` due now. Returns how many. */
  wakeKeys(prefix: string, now: Date): Promise<number>;
  /** The earliest `run_at` of pending jobs of these kinds (for a precise wake-up), or null. */
  nextRunAt(kinds: readonly string[]): Promise<Date | null>;
  /** The job with this key, if any (tests and admin). */
  getByKey(key: string): Promise<JobInfo | null>;
  /** Jobs of a kind (tests and admin), oldest first. */
  list(kind: string, limit: number): Promise<JobInfo[]>;
}
