import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/** Keys whose values are never logged, wherever they appear in a log object. */
export const REDACTED_PATHS = [
  'pushMagic',
  'PushMagic',
  '*.pushMagic',
  '*.PushMagic',
  'token',
  '*.token',
  'Token',
  '*.Token',
  'UnlockToken',
  '*.UnlockToken',
  'password',
  '*.password',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers["mdm-signature"]',
  'serviceToken',
  '*.serviceToken',
  'privateKeyPem',
  '*.privateKeyPem',
  'keyPem',
  '*.keyPem',
];

export function createLogger(
  level: LoggerOptions['level'] = 'info',
  destination?: pino.DestinationStream,
): Logger {
  const options: LoggerOptions = {
    level,
    base: { service: 'vpp-mdm' },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}
