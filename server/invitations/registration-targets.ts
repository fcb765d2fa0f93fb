import type { RegistrationTarget, RegistrationTargets } from '../registration/targets.ts';
import type { InvitationStore } from './store.ts';

/**
 * The registration page's view of a code (`GET /register/{code}`), over the usage rows: the invited
 * user, the invitation, the user's Apple invitation URL and whether the user is registered at the
 * invitation's location. A code of a deleted invitation (or of a user who left the scope) is unknown.
 */
export class InvitationRegistrationTargets implements RegistrationTargets {
  constructor(
    private readonly deps: { store: Pick<InvitationStore, 'findByCode' | 'recordOpened'>; now?: () => Date },
  ) {}

  async resolve(code: string): Promise<RegistrationTarget | null> {
    const t = await this.deps.store.findByCode(code);
    if (!t) return null;
    return {
      userId: t.userId,
      username: t.username,
      invitationName: t.invitationName,
      orgName: t.orgName,
      requireLogin: t.requireLogin,
      appleInvitationUrl: t.invitationUrl,
      alreadyRegistered:
        t.registrationState === 'associated' || t.status === 'registered' || t.status === 'auto_registered',
    };
  }

  async recordOpened(code: string): Promise<void> {
    await this.deps.store.recordOpened(code, 'Opened the registration link', this.deps.now?.() ?? new Date());
  }
}
