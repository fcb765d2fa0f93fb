/** `npm run db:migrate`: applies pending migrations to `MDM_DATABASE_URL` (default `sqlite:./data/mdm.sqlite`). */
import { z } from 'zod';
import { createLogger } from '../log.ts';
import { openDatabase } from './database.ts';
import { migrate } from './migrate.ts';

const envSchema = z.object({
  MDM_DATABASE_URL: z
    .string()
    .regex(/^(sqlite:|postgres:\/\/|postgresql:\/\/|mariadb:\/\/|mysql:\/\/)/, {
      message: 'must start with sqlite:, postgres://, postgresql://, mariadb:// or mysql://',
    })
    .default('sqlite:./data/mdm.sqlite'),
  MDM_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('warn'),
});

async function main(): Promise<number> {
  const parsed = envSchema.safeParse(process.env);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) console.error(`${issue.path.join('.')}: ${issue.message}`);
    return 2;
  }
  const logger = createLogger(parsed.data.MDM_LOG_LEVEL);
  const db = await openDatabase(parsed.data.MDM_DATABASE_URL, { logger: logger.child({ component: 'db' }) });
  try {
    const applied = await migrate(db, logger.child({ component: 'migrate' }));
    if (applied.length === 0) console.log(`${db.dialect}: schema up to date`);
    for (const id of applied) console.log(`${db.dialect}: applied ${id}`);
    return 0;
  } finally {
    await db.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error('migration failed:', err);
    process.exitCode = 1;
  },
);
