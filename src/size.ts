/**
 * size: parse sizes typed by users and print sizes for people.
 *
 * Input follows the seed tools and LVM: a bare number is MiB (Xen's vd_create.py took MB), and a
 * suffix picks another unit, always a power of 1024 whatever its case: `B` bytes, `S` 512-byte
 * sectors, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`…, `T`…. A decimal fraction is allowed when the
 * result is a whole number of bytes (`1.5M` = 1572864, `0.5K` = 512, `1.3B` is refused).
 * Arithmetic is done in bigint so that a fraction is exact and an overflow is caught, not rounded.
 * Refused: empty, zero, negative, no digits, unknown suffix, more than Number.MAX_SAFE_INTEGER.
 *
 * Output: `formatSize` gives three significant decimals in the largest binary unit that keeps the
 * number >= 1 (`1.00 GiB`, `512 B`); JSON output always carries exact bytes instead.
 */
import assert from 'node:assert';
import { UsageError } from './errors';

const KIB = 1024n;

/** Unit multipliers by lower-cased suffix; the empty suffix is the seed tools' MiB. */
const UNIT_BYTES: ReadonlyMap<string, bigint> = new Map([
  ['', KIB * KIB],
  ['b', 1n],
  ['s', 512n],
  ['k', KIB],
  ['kb', KIB],
  ['kib', KIB],
  ['m', KIB ** 2n],
  ['mb', KIB ** 2n],
  ['mib', KIB ** 2n],
  ['g', KIB ** 3n],
  ['gb', KIB ** 3n],
  ['gib', KIB ** 3n],
  ['t', KIB ** 4n],
  ['tb', KIB ** 4n],
  ['tib', KIB ** 4n],
]);

const SIZE_PATTERN = /^(\d{1,20})(?:\.(\d{1,20}))?\s*([a-z]*)$/i;

/** Longest text accepted as a size; anything longer is refused before matching. */
const SIZE_TEXT_LENGTH_MAX = 64;

function sizeError(what: string, text: string, detail: string): UsageError {
  return new UsageError('ERR_SIZE_INVALID', `${what} '${text}': ${detail}`);
}

/**
 * Parses `text` as a size in bytes. `what` names the argument in the error message
 * (`size`, `--extent-size`). Throws UsageError ERR_SIZE_INVALID (CLI exit 2).
 */
export function parseSize(text: string, what = 'size'): number {
  const trimmed = text.trim();
  if (trimmed.length === 0) throw sizeError(what, text, 'empty');
  if (trimmed.length > SIZE_TEXT_LENGTH_MAX) throw sizeError(what, text.slice(0, 20), 'too long');
  if (trimmed.startsWith('-')) throw sizeError(what, text, 'must be positive');
  const match = SIZE_PATTERN.exec(trimmed);
  if (match === null) {
    throw sizeError(what, text, 'not a number with an optional B/S/K/M/G/T suffix');
  }
  const [, whole = '', fraction = '', suffix = ''] = match;
  const unitBytes = UNIT_BYTES.get(suffix.toLowerCase());
  if (unitBytes === undefined) {
    throw sizeError(what, text, `unknown unit '${suffix}' (use B, S, K, M, G or T)`);
  }
  const scale = 10n ** BigInt(fraction.length);
  const numerator = (BigInt(whole) * scale + BigInt(fraction === '' ? '0' : fraction)) * unitBytes;
  if (numerator % scale !== 0n) throw sizeError(what, text, 'not a whole number of bytes');
  const bytes = numerator / scale;
  if (bytes === 0n) throw sizeError(what, text, 'must be positive');
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw sizeError(what, text, 'too large (more than 2^53 bytes)');
  }
  const result = Number(bytes);
  assert(Number.isSafeInteger(result) && result > 0);
  return result;
}

const UNIT_NAMES = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/** `1073741824` → `1.00 GiB`; bytes below 1 KiB print exactly (`512 B`). */
export function formatSize(bytes: number): string {
  assert(Number.isSafeInteger(bytes) && bytes >= 0);
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes;
  let unitIndex = 0;
  while (value >= 1024 && unitIndex < UNIT_NAMES.length - 1) {
    value /= 1024;
    unitIndex += 1;
  }
  const digits = value >= 100 ? 1 : 2;
  return `${value.toFixed(digits)} ${UNIT_NAMES[unitIndex] ?? 'B'}`;
}
