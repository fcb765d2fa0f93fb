import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.ts';
import type { ClaimedJob, JobStore, NewJob } from './job-store.ts';

/** What a handler decides about its job. */
export type JobResult =
  /** finished: the job goes */
  | { kind: 'done' }
  /**
   * Run again after `afterMs`, without counting an attempt (polling, a recurring job, waiting for
   * something). `wakeable` (default true): a new request for the same key runs it sooner; false for
   * waits that must be kept (rate limits). `note` is kept as `last_error` for whoever looks.
   */
  | { kind: 'later'; afterMs: number; note?: string; wakeable?: boolean }
  /** failed this time: counts an attempt; back-off (or `afterMs`); permanent after `maxAttempts` */
  | { kind: 'retry'; error: string; afterMs?: number }
  /** failed for good */
  | { kind: 'fail'; error: string };

export const done = (): JobResult => ({ kind: 'done' });
export const later = (afterMs: number, note?: string, wakeable = true): JobResult => ({
  kind: 'later',
  afterMs,
  wakeable,
  ...(note !== undefined ? { note } : {}),
});
export const retry = (error: string, afterMs?: number): JobResult => ({
  kind: 'retry',
  error,
  ...(afterMs !== undefined ? { afterMs } : {}),
});
export const fail = (error: string): JobResult => ({ kind: 'fail', error });

export interface JobContext {
  id: string;
  kind: string;
  key: string | null;
  /** parsed JSON; handlers validate it */
  payload: unknown;
  /** failed attempts before this one */
  attempts: number;
  /** set when the runner stops: a long handler should finish its step and return `later(0)` */
  readonly stopping: boolean;
}

export type JobHandler = (job: JobContext) => Promise<JobResult>;

export interface JobKindOptions {
  /** attempts (`retry` or a throw) before the job fails for good; default the runner's */
  maxAttempts?: number;
}

export interface JobRunnerOptions {
  /** jobs run at once by this runner */
  concurrency: number;
  /** how often the table is looked at for jobs of other instances, retries and leftovers */
  pollMs: number;
  /** how long a claim holds; renewed every third of it while the handler runs */
  leaseMs: number;
  retryBaseMs: number;
  retryCapMs: number;
  maxAttempts: number;
}

export const DEFAULT_JOB_OPTIONS: Readonly<JobRunnerOptions> = Object.freeze({
  concurrency: 8,
  pollMs: 1000,
  leaseMs: 60_000,
  retryBaseMs: 1000,
  retryCapMs: 10 * 60_000,
  maxAttempts: 25,
});

export interface EnqueueOptions {
  /** dedupe key (see `NewJob.key`) */
  key?: string;
  runAt?: Date;
  /** alternative to `runAt`: from now */
  delayMs?: number;
}

/** Exponential back-off with jitter: base·2^(attempts−1), capped, then scaled by [0.5, 1). */
export function backoffMs(
  attempts: number,
  opts: Pick<JobRunnerOptions, 'retryBaseMs' | 'retryCapMs'>,
  random: () => number = Math.random,
): number {
  const exp = Math.min(opts.retryCapMs, opts.retryBaseMs * 2 ** Math.min(30, Math.max(0, attempts - 1)));
  return Math.round(exp * (0.5 + random() * 0.5));
}

const MAX_ERROR = 500;

/** Where jobs go: the runner, or anything that stores jobs the same way (domain code depends on this). */
export interface JobQueue {
  enqueue(kind: string, payload: unknown, opts?: EnqueueOptions): Promise<void>;
  /** Makes pending jobs whose key starts with `prefix` due now (e.g. after a token renewal). */
  wakeKeys(prefix: string): Promise<void>;
}

/**
 * Runs durable jobs: handlers are registered per kind; a worker claims due jobs (a lease, so several
 * instances share one table and a dead instance's jobs are taken over when the lease runs out), runs up
 * to `concurrency` at once and settles each (done, later, retry with back-off, or failed for good).
 * `enqueue` wakes the worker in-process; otherwise it polls.
 */
export class JobRunner implements JobQueue {
  private readonly opts: JobRunnerOptions;
  private readonly handlers = new Map<string, { handler: JobHandler; options: JobKindOptions }>();
  /** unique per process: claims are `<owner>.<n>` */
  readonly owner = randomBytes(8).toString('hex');
  private claims = 0;
  private started = false;
  private stopped = false;
  private claiming = false;
  /** the claim in flight: stop() waits for it, so a job it claims runs (and settles) before stop returns */
  private claimDone: Promise<void> = Promise.resolve();
  private again = false;
  private readonly running = new Map<string, Promise<void>>();
  private pollTimer: NodeJS.Timeout | null = null;
  private wakeTimer: { at: number; timer: NodeJS.Timeout } | null = null;

  constructor(
    private readonly deps: {
      store: JobStore;
      log: Logger;
      options?: Partial<JobRunnerOptions>;
      now?: () => Date;
      random?: () => number;
    },
  ) {
    this.opts = { ...DEFAULT_JOB_OPTIONS, ...deps.options };
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  /** Registers the handler of a kind (before `start`). */
  register(kind: string, handler: JobHandler, options: JobKindOptions = {}): void {
    if (this.handlers.has(kind)) throw new Error(`job kind ${kind} already registered`);
    this.handlers.set(kind, { handler, options });
  }

  async enqueue(kind: string, payload: unknown, opts: EnqueueOptions = {}): Promise<void> {
    await this.enqueueMany([{ kind, payload, ...opts }]);
  }

  async enqueueMany(jobs: readonly (EnqueueOptions & { kind: string; payload: unknown })[]): Promise<void> {
    if (jobs.length === 0) return;
    const now = this.now();
    const rows: NewJob[] = jobs.map((j) => ({
      kind: j.kind,
      payload: JSON.stringify(j.payload ?? null),
      key: j.key ?? null,
      runAt: j.runAt ?? new Date(now.getTime() + (j.delayMs ?? 0)),
    }));
    await this.deps.store.enqueue(rows, now);
    const earliest = Math.min(...rows.map((r) => r.runAt.getTime()));
    if (earliest <= now.getTime()) this.wake();
    else this.wakeAt(new Date(earliest));
  }

  async wakeKeys(prefix: string): Promise<void> {
    if ((await this.deps.store.wakeKeys(prefix, this.now())) > 0) this.wake();
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.pollTimer = setInterval(() => this.wake(), this.opts.pollMs);
    this.pollTimer.unref();
    this.wake();
  }

  /** Stops claiming and waits for the jobs in flight to settle. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.wakeTimer) clearTimeout(this.wakeTimer.timer);
    this.pollTimer = null;
    this.wakeTimer = null;
    await this.claimDone;
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  get stopping(): boolean {
    return this.stopped;
  }

  /** Claims due jobs now (or right after the claim in progress). */
  wake(): void {
    if (!this.started || this.stopped) return;
    if (this.claiming) {
      this.again = true;
      return;
    }
    this.claiming = true;
    this.claimDone = this.claimLoop().finally(() => {
      this.claiming = false;
      // A wake that came after the loop's last check (e.g. while it read nextRunAt) must not be lost.
      if (this.again) {
        this.again = false;
        this.wake();
      }
    });
  }

  private wakeAt(at: Date): void {
    if (!this.started || this.stopped) return;
    const ms = at.getTime() - Date.now();
    if (ms >= this.opts.pollMs) return; // the poll comes first
    if (this.wakeTimer && this.wakeTimer.at <= at.getTime()) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer.timer);
    const timer = setTimeout(
      () => {
        this.wakeTimer = null;
        this.wake();
      },
      Math.max(0, ms),
    );
    timer.unref();
    this.wakeTimer = { at: at.getTime(), timer };
  }

  private async claimLoop(): Promise<void> {
    const kinds = [...this.handlers.keys()];
    if (kinds.length === 0) return;
    try {
      do {
        this.again = false;
        for (;;) {
          const free = this.opts.concurrency - this.running.size;
          if (free <= 0 || this.stopped) break;
          const owner = `${this.owner}.${++this.claims}`;
          const claimed = await this.deps.store.claim(owner, kinds, this.now(), free, this.opts.leaseMs);
          for (const job of claimed) this.launch(owner, job);
          if (claimed.length < free) break;
        }
      } while (this.again && !this.stopped);
      if (!this.stopped && this.running.size < this.opts.concurrency) {
        const next = await this.deps.store.nextRunAt(kinds);
        if (next) this.wakeAt(next);
      }
    } catch (err) {
      this.deps.log.error({ err }, 'job worker failed; trying again at the next poll');
    }
  }

  private launch(owner: string, job: ClaimedJob): void {
    const p = this.run(owner, job).finally(() => {
      this.running.delete(job.id);
      this.wake();
    });
    this.running.set(job.id, p);
  }

  private async run(owner: string, job: ClaimedJob): Promise<void> {
    const log = this.deps.log.child({ jobId: job.id, kind: job.kind });
    const entry = this.handlers.get(job.kind);
    const maxAttempts = entry?.options.maxAttempts ?? this.opts.maxAttempts;
    const heartbeat = setInterval(
      () => {
        const until = new Date(this.now().getTime() + this.opts.leaseMs);
        this.deps.store.extendLease(owner, job.id, until).then(
          (kept) => {
            if (!kept) log.warn('job lease lost while running');
          },
          (err: unknown) => log.warn({ err }, 'could not extend a job lease'),
        );
      },
      Math.max(50, Math.floor(this.opts.leaseMs / 3)),
    );
    heartbeat.unref();
    let result: JobResult;
    try {
      if (!entry) throw new Error(`no handler for job kind ${job.kind}`);
      let payload: unknown;
      try {
        payload = JSON.parse(job.payload);
      } catch {
        throw new Error('job payload is not JSON');
      }
      const isStopping = () => this.stopped;
      result = await entry.handler({
        id: job.id,
        kind: job.kind,
        key: job.key,
        payload,
        attempts: job.attempts,
        get stopping() {
          return isStopping();
        },
      });
    } catch (err) {
      log.warn({ err }, 'job threw');
      result = { kind: 'retry', error: err instanceof Error ? err.message : String(err) };
    } finally {
      clearInterval(heartbeat);
    }
    try {
      await this.settle(owner, job, result, maxAttempts, log);
    } catch (err) {
      log.error({ err }, 'could not settle a job; its lease will run out and it runs again');
    }
  }

  private async settle(
    owner: string,
    job: ClaimedJob,
    result: JobResult,
    maxAttempts: number,
    log: Logger,
  ): Promise<void> {
    const now = this.now();
    let kept: boolean;
    switch (result.kind) {
      case 'done':
        kept = await this.deps.store.complete(owner, job.id, now);
        break;
      case 'later': {
        const runAt = new Date(now.getTime() + Math.max(0, result.afterMs));
        kept = await this.deps.store.reschedule(
          owner,
          job.id,
          {
            runAt,
            attempts: job.attempts,
            error: result.note?.slice(0, MAX_ERROR) ?? null,
            wakeable: result.wakeable !== false,
          },
          now,
        );
        this.wakeAt(runAt);
        break;
      }
      case 'retry': {
        const attempts = job.attempts + 1;
        const error = result.error.slice(0, MAX_ERROR);
        if (attempts >= maxAttempts) {
          log.error({ attempts, error }, 'job failed for good after its last attempt');
          kept = await this.deps.store.fail(owner, job.id, error, attempts, now);
          break;
        }
        const delay = result.afterMs ?? backoffMs(attempts, this.opts, this.deps.random ?? Math.random);
        const runAt = new Date(now.getTime() + delay);
        log.info({ attempts, delayMs: delay, error }, 'job will be retried');
        kept = await this.deps.store.reschedule(
          owner,
          job.id,
          { runAt, attempts, error, wakeable: false },
          now,
        );
        this.wakeAt(runAt);
        break;
      }
      case 'fail':
        log.error({ error: result.error }, 'job failed for good');
        kept = await this.deps.store.fail(owner, job.id, result.error.slice(0, MAX_ERROR), job.attempts, now);
        break;
    }
    if (!kept) log.warn('job lease was lost before settling: another instance has it now');
  }
}
