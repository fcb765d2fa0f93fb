/** Enrollment tokens: reusable until they expire or reach their maximum number of uses. */
export interface EnrollmentToken {
  token: string;
  expiresAt: Date | null;
  maxUses: number | null;
  uses: number;
  siteId: string | null;
  createdAt: Date;
}

export interface EnrollmentTokenStore {
  create(token: {
    token: string;
    expiresAt: Date | null;
    maxUses: number | null;
    siteId: string | null;
  }): Promise<EnrollmentToken>;
  get(token: string): Promise<EnrollmentToken | null>;
  /**
   * Atomically counts one use of a token that is still valid at `now` (not expired, uses < maxUses).
   * Returns the token after the use, or null when it is unknown, expired or used up.
   */
  consume(token: string, now: Date): Promise<EnrollmentToken | null>;
}
