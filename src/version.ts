/**
 * version: xvd's version, read once from the package.json beside src/ and dist/ (both sit one
 * level below the package root, so the same relative path serves the built CLI and the sources
 * tap runs). One source of truth: `xvd --version`, serve's start-up log line and `xvd status`
 * all print what this returns, so bumping package.json is all a release needs.
 */
import assert from 'node:assert';
import fs from 'node:fs';
import path from 'node:path';

let cached: string | undefined;

/** The package's version (`0.1.0`), as package.json states it. */
export function version(): string {
  if (cached === undefined) {
    const file = path.join(__dirname, '..', 'package.json');
    const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as
      { name?: unknown; version?: unknown };
    assert(parsed.name === 'xvd', `${file} is not xvd's package.json`);
    assert(typeof parsed.version === 'string' && parsed.version !== '');
    cached = parsed.version;
  }
  return cached;
}
