import {
  DataTypes,
  ForeignKeyConstraintError,
  Op,
  QueryTypes,
  type Model,
  type ModelStatic,
  type Optional,
  type Sequelize,
  type WhereOptions,
} from 'sequelize';
import type { ApiToken, ApiTokenPage, ApiTokenStore } from '../admin/api-tokens.ts';
import { UnknownIdsError } from '../directory/errors.ts';
import { decodeStringCursor, invalidCursor } from './cursor.ts';
import type { Database } from './database.ts';
import { toDate } from './models.ts';
import { clampLimit, dbId, idString, keysetPage, likeAny } from './sql-kit.ts';

interface ApiTokenRow {
  id: number;
  name: string;
  tokenHash: string;
  siteId: number | null;
  expiresAt: Date | null;
  createdAt: Date;
}

type ApiTokenModel = Model<ApiTokenRow, Optional<ApiTokenRow, 'id'>>;

const cache = new WeakMap<Sequelize, ModelStatic<ApiTokenModel>>();

function modelOf(sequelize: Sequelize): ModelStatic<ApiTokenModel> {
  const existing = cache.get(sequelize);
  if (existing) return existing;
  const model = sequelize.define<ApiTokenModel>(
    'ApiToken',
    {
      id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
      name: { type: DataTypes.STRING, allowNull: false },
      tokenHash: { type: DataTypes.STRING(64), allowNull: false },
      siteId: { type: DataTypes.BIGINT, allowNull: true },
      expiresAt: { type: DataTypes.DATE(3), allowNull: true },
      createdAt: { type: DataTypes.DATE(3), allowNull: false },
    },
    { underscored: true, timestamps: false, freezeTableName: true, tableName: 'api_tokens' },
  );
  cache.set(sequelize, model);
  return model;
}

function toApiToken(row: ApiTokenModel): ApiToken {
  const siteId = row.get('siteId');
  const expiresAt = row.get('expiresAt');
  return {
    id: idString(row.get('id')),
    name: String(row.get('name')),
    siteId: siteId === null || siteId === undefined ? null : idString(siteId),
    expiresAt: expiresAt === null || expiresAt === undefined ? null : toDate(expiresAt),
    createdAt: toDate(row.get('createdAt')),
  };
}

/** `api_tokens` (migration `0008_api_tokens`) on SQLite, PostgreSQL or MariaDB. */
export class SqlApiTokenStore implements ApiTokenStore {
  private readonly m: ModelStatic<ApiTokenModel>;

  constructor(private readonly db: Database) {
    this.m = modelOf(db.sequelize);
  }

  async create(
    input: { name: string; siteId: string | null; expiresAt: Date | null; tokenHash: string },
    now: Date,
  ): Promise<ApiToken> {
    const siteId = input.siteId === null ? null : dbId(input.siteId);
    if (input.siteId !== null && siteId === null) throw new UnknownIdsError({ siteId: [input.siteId] });
    try {
      return await this.db.write(async (t) => {
        if (siteId !== null) {
          const [site] = await this.db.sequelize.query<{ id: unknown }>(
            'SELECT id FROM sites WHERE id = :id',
            {
              replacements: { id: siteId },
              type: QueryTypes.SELECT,
              transaction: t,
            },
          );
          if (!site) throw new UnknownIdsError({ siteId: [String(siteId)] });
        }
        const row = await this.m.create(
          {
            name: input.name,
            tokenHash: input.tokenHash,
            siteId,
            expiresAt: input.expiresAt,
            createdAt: now,
          },
          { transaction: t },
        );
        return toApiToken(row);
      });
    } catch (err) {
      // The site was deleted between the check and the insert.
      if (err instanceof ForeignKeyConstraintError && input.siteId !== null) {
        throw new UnknownIdsError({ siteId: [input.siteId] });
      }
      throw err;
    }
  }

  async get(id: string): Promise<ApiToken | null> {
    const n = dbId(id);
    const row = n === null ? null : await this.m.findByPk(n);
    return row ? toApiToken(row) : null;
  }

  async findByHash(tokenHash: string): Promise<ApiToken | null> {
    const row = await this.m.findOne({ where: { tokenHash } });
    return row ? toApiToken(row) : null;
  }

  async list(opts: { limit: number; cursor: string | null; q: string | null }): Promise<ApiTokenPage> {
    const limit = clampLimit(opts.limit);
    const conditions: WhereOptions<ApiTokenRow>[] = [];
    if (opts.cursor !== null) {
      const after = dbId(decodeStringCursor(opts.cursor));
      if (after === null) throw invalidCursor();
      conditions.push({ id: { [Op.gt]: after } });
    }
    const q = opts.q?.trim() ?? '';
    if (q !== '') {
      conditions.push(likeAny(this.db.sequelize, q, ['name']));
    }
    const rows = await this.m.findAll({
      where: { [Op.and]: conditions },
      order: [['id', 'ASC']],
      limit: limit + 1,
    });
    const page = keysetPage(rows, limit, (row) => idString(row.get('id')));
    return { items: page.items.map(toApiToken), nextCursor: page.nextCursor };
  }

  async delete(id: string): Promise<boolean> {
    const n = dbId(id);
    if (n === null) return false;
    return this.db.write(async (t) => (await this.m.destroy({ where: { id: n }, transaction: t })) > 0);
  }
}
