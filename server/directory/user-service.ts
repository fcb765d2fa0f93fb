import { NotFoundError } from '../errors.ts';
import { LocalPasswordChecker } from './local-password-checker.ts';
import { hashPassword } from './password.ts';
import type { NewUser, User, UserPatch, UserStore } from './store.ts';

export interface UserInput {
  username: string;
  fullName?: string | null;
  email?: string | null;
  managedAppleId?: string | null;
  siteIds?: string[];
  /** A local account (for the registration page's login). */
  password?: string;
}

export interface UserChanges {
  username?: string;
  fullName?: string | null;
  email?: string | null;
  managedAppleId?: string | null;
  siteIds?: string[];
  /** A new password; `null` removes the local account. */
  password?: string | null;
}

/** What must happen elsewhere when a user is deleted: read before the delete, carried out after it. */
export interface UserDeletionHook<T> {
  before(userId: string): Promise<T>;
  after(userId: string, before: T): Promise<void>;
}

/** Users of the directory, with their optional local account (scrypt password hash). */
export class UserService {
  private deletionHooks: UserDeletionHook<unknown>[] = [];

  constructor(private readonly deps: { users: UserStore; now?: () => Date }) {}

  /** Adds work around deleting a user (e.g. retiring the user's registrations at Apple). */
  onDelete<T>(hook: UserDeletionHook<T>): void {
    this.deletionHooks.push(hook as UserDeletionHook<unknown>);
  }

  /**
   * Deletes the user (its sites, groups, registrations and usage go with it; its devices become
   * unassigned), then runs the deletion hooks with what they read before.
   */
  async delete(id: string): Promise<void> {
    const before = await Promise.all(this.deletionHooks.map((h) => h.before(id)));
    if (!(await this.deps.users.delete(id, this.now()))) throw new NotFoundError('user');
    for (const [i, hook] of this.deletionHooks.entries()) await hook.after(id, before[i]);
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  async create(input: UserInput): Promise<User> {
    const user: NewUser = {
      username: input.username,
      fullName: input.fullName ?? null,
      email: input.email ?? null,
      managedAppleId: input.managedAppleId ?? null,
      siteIds: input.siteIds ?? [],
      // Hashed before the write: the write transaction may be retried and must stay side-effect free.
      passwordHash: input.password === undefined ? null : await hashPassword(input.password),
    };
    return this.deps.users.create(user, this.now());
  }

  async update(id: string, changes: UserChanges): Promise<User> {
    const { password, ...rest } = changes;
    const patch: UserPatch = { ...rest };
    if (password !== undefined) patch.passwordHash = password === null ? null : await hashPassword(password);
    const user = await this.deps.users.update(id, patch, this.now());
    if (!user) throw new NotFoundError('user');
    return user;
  }

  async setPassword(id: string, password: string): Promise<void> {
    const hash = await hashPassword(password);
    if (!(await this.deps.users.setPasswordHash(id, hash, this.now()))) throw new NotFoundError('user');
  }

  /**
   * True when the user has a local account and this is its password. Takes about as long for an
   * unknown user or one without a local account, so the answer's timing reveals neither.
   */
  async verifyLocalPassword(userId: string, password: string): Promise<boolean> {
    return new LocalPasswordChecker(this.deps.users).verifyUserPassword(userId, password);
  }
}
