/**
 * The logger of a controller run in the foreground (`drover up`): pino's records formatted by
 * pino-pretty for a person at a terminal, on stderr.
 *
 * Formatted in the controller's thread and written at once. A pino transport would start a
 * thread of its own and load pino-pretty there (a tenth of a second or more of CPU) while the
 * controller and its store start on the same cores; here both are in the controller's bundle,
 * loaded with its code cache.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export function consoleLogger(level: string): Logger {
  return pino({ level }, pretty({ destination: 2, sync: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss' }));
}
