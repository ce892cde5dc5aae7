/**
 * output: what commands print on stdout. Tables for people (sizes human-readable, columns padded),
 * JSON for scripts (exact bytes, `null` for "never"). Nothing in src/ uses console.*.
 */
import assert from 'node:assert';

/** Writes `value` as pretty JSON and a newline. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Writes one line. */
export function printLine(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Pads columns to their widest cell; numeric-looking columns are right-aligned. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[],
): string {
  for (const row of rows) assert.equal(row.length, headers.length);
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const isRight = headers.map((_, column) =>
    rows.length > 0 && rows.every((row) => /^[\d.]+( [KMGTPE]?i?B)?$/.test(row[column] ?? '')));
  const render = (cells: readonly string[]): string =>
    cells.map((cell, column) => {
      const width = widths[column] ?? 0;
      return isRight[column] === true ? cell.padStart(width) : cell.padEnd(width);
    }).join('  ').trimEnd();
  return [render(headers), ...rows.map(render)].join('\n');
}

/** Writes a table (a header line and one line per row). */
export function printTable(headers: readonly string[], rows: readonly (readonly string[])[]): void {
  printLine(formatTable(headers, rows));
}

/** Seconds since the epoch → ISO 8601 UTC without milliseconds; null → `never`. */
export function formatTime(epochSeconds: number | null): string {
  if (epochSeconds === null) return 'never';
  return new Date(epochSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
