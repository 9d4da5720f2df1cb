/**
 * The log the agent's loops write to: the API's pino logger in the agent, fields first, then the
 * message. A module of its own, so the loops that share it need not import each other for it.
 */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
