/** Store values are JSON text; parsing failures are store corruption, reported with the key. */
import { IpferryError } from './errors.js';

export function parseStored<T>(key: string, value: string): T {
  try {
    return JSON.parse(value) as T;
  } catch {
    throw new IpferryError('IPF_E_STORE', { reason: `value at ${key} is not valid JSON` });
  }
}

export function stringifyStored(value: unknown): string {
  return JSON.stringify(value);
}
