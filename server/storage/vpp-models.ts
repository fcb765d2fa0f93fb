import { DataTypes, type Model, type ModelStatic, type Optional, type Sequelize } from 'sequelize';

/** Sequelize models over the Apps and Books tables of migration `0004_vpp` (never `sync`ed). */
export interface LocationRow {
  id: number;
  name: string;
  sTokenSealed: string;
  organizationName: string;
  locationName: string | null;
  countryCode: string | null;
  tokenExpiration: Date | null;
  appleUid: string | null;
  siteId: number | null;
  autoRegisterManagedUsers: boolean;
  status: string;
  statusMessage: string | null;
  notificationTokenHash: string | null;
  invitationTemplate: string | null;
  versionId: string | null;
  lastSyncedAt: Date | null;
  lastSyncError: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface RegistrationRow {
  id: number;
  locationId: number;
  userId: number;
  clientUserId: string;
  state: string;
  managed: boolean;
  inviteCode: string | null;
  invitationUrl: string | null;
  idHash: string | null;
  eventId: string | null;
  errorNumber: number | null;
  errorMessage: string | null;
  requestedAt: Date;
  sentAt: Date | null;
  registeredAt: Date | null;
  associatedAt: Date | null;
  retiredAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface NotificationRow {
  notificationId: string;
  locationId: number;
  notificationType: string;
  receivedAt: Date;
}

export type LocationModel = Model<LocationRow, Optional<LocationRow, 'id'>>;
export type RegistrationModel = Model<RegistrationRow, Optional<RegistrationRow, 'id'>>;

export interface VppModels {
  Location: ModelStatic<LocationModel>;
  Registration: ModelStatic<RegistrationModel>;
  Notification: ModelStatic<Model<NotificationRow, NotificationRow>>;
}

const cache = new WeakMap<Sequelize, VppModels>();

export function vppModelsOf(sequelize: Sequelize): VppModels {
  const existing = cache.get(sequelize);
  if (existing) return existing;
  const longText = sequelize.getDialect() === 'mariadb' ? DataTypes.TEXT('long') : DataTypes.TEXT;
  const options = { underscored: true, timestamps: false, freezeTableName: true };
  const str = (allowNull = true) => ({ type: DataTypes.STRING, allowNull });
  const date = (allowNull = true) => ({ type: DataTypes.DATE(3), allowNull });
  const bool = () => ({ type: DataTypes.BOOLEAN, allowNull: false });
  const bigint = (allowNull: boolean) => ({ type: DataTypes.BIGINT, allowNull });
  const models: VppModels = {
    Location: sequelize.define<LocationModel>(
      'VppLocation',
      {
        id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
        name: str(false),
        sTokenSealed: { type: longText, allowNull: false },
        organizationName: str(false),
        locationName: str(),
        countryCode: str(),
        tokenExpiration: date(),
        appleUid: str(),
        siteId: bigint(true),
        autoRegisterManagedUsers: bool(),
        status: str(false),
        statusMessage: str(),
        notificationTokenHash: str(),
        invitationTemplate: str(),
        versionId: str(),
        lastSyncedAt: date(),
        lastSyncError: str(),
        createdAt: date(false),
        updatedAt: date(false),
      },
      { ...options, tableName: 'vpp_locations' },
    ),
    Registration: sequelize.define<RegistrationModel>(
      'VppRegistration',
      {
        id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
        locationId: bigint(false),
        userId: bigint(false),
        clientUserId: str(false),
        state: str(false),
        managed: bool(),
        inviteCode: str(),
        invitationUrl: str(),
        idHash: str(),
        eventId: str(),
        errorNumber: { type: DataTypes.INTEGER, allowNull: true },
        errorMessage: str(),
        requestedAt: date(false),
        sentAt: date(),
        registeredAt: date(),
        associatedAt: date(),
        retiredAt: date(),
        createdAt: date(false),
        updatedAt: date(false),
      },
      { ...options, tableName: 'vpp_registrations' },
    ),
    Notification: sequelize.define<Model<NotificationRow, NotificationRow>>(
      'VppNotification',
      {
        notificationId: { type: DataTypes.STRING, primaryKey: true },
        locationId: bigint(false),
        notificationType: str(false),
        receivedAt: date(false),
      },
      { ...options, tableName: 'vpp_notifications' },
    ),
  };
  cache.set(sequelize, models);
  return models;
}
