export type CommandStatus =
  'queued' | 'sent' | 'acknowledged' | 'error' | 'command_format_error' | 'not_now' | 'withdrawn';

/** A command as listed for admins: queued ones come from the hot queue, answered ones from the results table. */
export interface CommandRecord {
  commandUuid: string;
  enrollmentId: string;
  udid: string;
  requestType: string;
  status: CommandStatus;
  queuedAt: Date;
  answeredAt: Date | null;
  /** The device's report as plist XML (answered commands only). */
  resultXml: string | null;
}

export interface QueuedCommand {
  commandUuid: string;
  requestType: string;
  /** The whole `{CommandUUID, Command}` plist body, exactly as served to the device. */
  bodyXml: string;
}

export interface WithdrawnCommand {
  enrollmentId: string;
  commandUuid: string;
}

export interface ResultInput {
  enrollmentId: string;
  commandUuid: string;
  status: 'acknowledged' | 'error' | 'command_format_error';
  resultXml: string;
}

export interface CommandStore {
  enqueue(
    commands: {
      enrollmentId: string;
      udid: string;
      commandUuid: string;
      requestType: string;
      bodyXml: string;
    }[],
    now: Date,
  ): Promise<void>;
  /**
   * The next command for an enrollment, oldest first, and marks it `sent`.
   * `includeNotNow`: true when the device said Idle (a NotNow command is offered again), false while it keeps reporting results.
   */
  next(enrollmentId: string, includeNotNow: boolean, now: Date): Promise<QueuedCommand | null>;
  /** NotNow: the command stays queued, marked `not_now`. Unknown (enrollment, uuid): no change. */
  markNotNow(enrollmentId: string, commandUuid: string, now: Date): Promise<void>;
  /**
   * A final result: moves the command from the queue to the results table, in one transaction.
   * Idempotent: a second result for the same (enrollment, uuid) changes nothing and returns false.
   * A result for a command that was never queued for this enrollment is ignored (returns false).
   */
  complete(result: ResultInput, now: Date): Promise<boolean>;
  /** Clears the queue of these enrollments (Authenticate of a device not yet enrolled). */
  clearQueue(enrollmentIds: string[]): Promise<void>;
  /**
   * Withdraws these commands wherever they are still queued (any enrollment, any queue status): they are
   * never served again and move to the results as `withdrawn`. Commands already answered (or unknown)
   * are left as they are. Answers the (enrollment, command) pairs withdrawn by this call.
   */
  withdraw(commandUuids: readonly string[], now: Date): Promise<WithdrawnCommand[]>;
  listForDevice(
    udid: string,
    opts: { limit: number; cursor: string | null },
  ): Promise<{ items: CommandRecord[]; nextCursor: string | null }>;
  /** Where these commands are still in a queue: each (enrollment, command) and its queue status. */
  queueStatuses(commandUuids: readonly string[]): Promise<QueueStatus[]>;
}

export interface QueueStatus {
  enrollmentId: string;
  commandUuid: string;
  status: 'queued' | 'sent' | 'not_now';
}
