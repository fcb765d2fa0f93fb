import { literal, Op, type Model } from 'sequelize';
import type { EnrollmentToken, EnrollmentTokenStore } from '../enrollment/store.ts';
import type { Database } from './database.ts';
import { modelsOf, toDate, toDateOrNull, toInt, toIntOrNull, type Models, type TokenRow } from './models.ts';

export class SqlEnrollmentTokenStore implements EnrollmentTokenStore {
  private readonly m: Models;

  constructor(private readonly db: Database) {
    this.m = modelsOf(db.sequelize);
  }

  async create(token: {
    token: string;
    expiresAt: Date | null;
    maxUses: number | null;
    siteId: string | null;
  }): Promise<EnrollmentToken> {
    const row: TokenRow = { ...token, uses: 0, createdAt: new Date() };
    await this.db.write((t) => this.m.Token.create(row, { transaction: t }));
    return { ...row };
  }

  async get(token: string): Promise<EnrollmentToken | null> {
    const row = await this.m.Token.findByPk(token);
    return row ? toToken(row) : null;
  }

  async consume(token: string, now: Date): Promise<EnrollmentToken | null> {
    return this.db.write(async (t) => {
      // One conditional UPDATE: the database decides, so concurrent consumers cannot overshoot maxUses.
      const [changed] = await this.m.Token.update(
        { uses: literal('uses + 1') },
        {
          where: {
            token,
            [Op.and]: [
              literal('(max_uses IS NULL OR uses < max_uses)'),
              { [Op.or]: [{ expiresAt: null }, { expiresAt: { [Op.gt]: now } }] },
            ],
          },
          transaction: t,
        },
      );
      if (changed !== 1) return null;
      const row = await this.m.Token.findByPk(token, { transaction: t });
      return row ? toToken(row) : null;
    });
  }
}

function toToken(row: Model<TokenRow>): EnrollmentToken {
  const r = row.get({ plain: true });
  return {
    token: r.token,
    expiresAt: toDateOrNull(r.expiresAt),
    maxUses: toIntOrNull(r.maxUses),
    uses: toInt(r.uses),
    siteId: r.siteId,
    createdAt: toDate(r.createdAt),
  };
}
