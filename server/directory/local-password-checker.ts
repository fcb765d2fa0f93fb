import { burnVerification, verifyPassword } from './password.ts';
import type { UserStore } from './store.ts';

/**
 * Local accounts: the scrypt hash set through the admin API (`PUT /users/{id}/password`). A user
 * without a local account (or an unknown id) costs as long as a wrong password, so timing tells nothing.
 */
export class LocalPasswordChecker {
  constructor(private readonly users: Pick<UserStore, 'getPasswordHash'>) {}

  async verifyUserPassword(userId: string, password: string): Promise<boolean> {
    const hash = await this.users.getPasswordHash(userId);
    if (hash === null || password === '') {
      await burnVerification(password);
      return false;
    }
    return verifyPassword(password, hash);
  }

  async hasLocalAccount(userId: string): Promise<boolean> {
    return (await this.users.getPasswordHash(userId)) !== null;
  }
}
