/** Wakes devices so that they connect. The APNs implementation lives in `server/push/`. */
export interface Pusher {
  /** Asks for a push to each of these enrollments (coalesced; durable where the implementation is). */
  pushEnrollments(enrollmentIds: string[]): Promise<void>;
}
