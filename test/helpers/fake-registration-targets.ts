import type { RegistrationTarget, RegistrationTargets } from '../../server/registration/targets.ts';

/** In-memory `RegistrationTargets` for tests: codes map to targets; opened links are recorded. */
export class FakeRegistrationTargets implements RegistrationTargets {
  readonly targets = new Map<string, RegistrationTarget>();
  readonly opened: string[] = [];
  /** When set, `resolve` throws it (a failing store). */
  failWith: Error | null = null;

  add(code: string, target: Partial<RegistrationTarget> = {}): RegistrationTarget {
    const full: RegistrationTarget = {
      userId: '1',
      username: 'alice',
      invitationName: 'Staff apps',
      orgName: 'Example Corp',
      requireLogin: false,
      appleInvitationUrl: 'https://apple.example.test/invite/ABC',
      alreadyRegistered: false,
      ...target,
    };
    this.targets.set(code, full);
    return full;
  }

  async resolve(code: string): Promise<RegistrationTarget | null> {
    if (this.failWith) throw this.failWith;
    return this.targets.get(code) ?? null;
  }

  async recordOpened(code: string): Promise<void> {
    this.opened.push(code);
  }
}
