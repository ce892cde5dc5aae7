/**
 * args: parsers for the arguments commands take besides sizes (src/size.ts): VD ids, expiry
 * seconds, domains, modes, expert levels, device names. Each throws UsageError (exit 2) naming
 * the argument and the text it got.
 */
import { UsageError } from '../errors';
import { LIMITS } from '../limits';

function usage(message: string): UsageError {
  return new UsageError('ERR_USAGE', message);
}

function parseWhole(text: string, what: string, minimum: number): number {
  const trimmed = text.trim();
  if (!/^\d{1,16}$/.test(trimmed)) {
    const hint = trimmed.startsWith('-') ? 'must not be negative' : 'not a whole number';
    throw usage(`${what} '${text}': ${hint}`);
  }
  const value = Number(trimmed);
  if (!Number.isSafeInteger(value)) throw usage(`${what} '${text}': too large`);
  if (value < minimum) throw usage(`${what} '${text}': must be at least ${minimum}`);
  return value;
}

/** A VD id: a positive integer (ids start at 1 and are never reused). `vd:5` is accepted too. */
export function parseId(text: string): number {
  return parseWhole(text.startsWith('vd:') ? text.slice(3) : text, 'id', 1);
}

/** Expiry in seconds from now; 0 means never. Negative is refused (the seed's born-expired bug). */
export function parseSeconds(text: string, what = 'expiry'): number {
  return parseWhole(text, what, 0);
}

/** A domain number (a client identity, as in Xen). */
export function parseDomain(text: string): number {
  return parseWhole(text, '--domain', 0);
}

/** The sharing-safety level of `vbd add`: 0, 1 or 2 (createlinuxdom.py's vbd_expert). */
export function parseExpert(text: string): 0 | 1 | 2 {
  const value = parseWhole(text, '--expert', 0);
  if (value !== 0 && value !== 1 && value !== 2) {
    throw usage(`--expert '${text}': must be 0, 1 or 2`);
  }
  return value;
}

/** `r` or `w` (`ro`, `rw` accepted as spelled by the seed tools). */
export function parseMode(text: string): 'r' | 'w' {
  const lowered = text.trim().toLowerCase();
  if (lowered === 'r' || lowered === 'ro') return 'r';
  if (lowered === 'w' || lowered === 'rw') return 'w';
  throw usage(`--mode '${text}': must be r or w`);
}

/** A VBD device name such as `xvda`: it becomes part of the NBD export name `DOMAIN/DEVICE`. */
export function parseDeviceName(text: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+-]*$/.test(text) || text.length > LIMITS.deviceNameLengthMax) {
    throw usage(`device '${text}': use letters, digits and _.+- (at most ` +
      `${LIMITS.deviceNameLengthMax} characters)`);
  }
  return text;
}

/** A VD name: printable, no newline, bounded. */
export function parseName(text: string): string {
  if (text.length === 0 || text.length > LIMITS.vdNameLengthMax || /[\p{Cc}]/u.test(text)) {
    throw usage(`--name '${text.slice(0, 40)}': must be 1..${LIMITS.vdNameLengthMax} ` +
      'printable characters');
  }
  return text;
}
