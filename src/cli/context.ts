/**
 * context: per-invocation state of the CLI: which catalog (--catalog, then XVD_CATALOG, then
 * ~/.local/share/xvd/catalog.sqlite: the catalog module's defaultCatalogPath), the catalog opened
 * lazily (a command that fails on its arguments never opens it), and the exit code a command
 * chose.
 */
import path from 'node:path';
import { defaultCatalogPath } from '../catalog';
import { isCephCatalog } from '../catalog/location';
import { catalogPathOf } from './env';
import { openCatalogPort } from './adapter';
import type { CatalogPort } from './port';

export class Context {
  exitCode = 0;
  private catalogPathValue: string = defaultCatalogPath(catalogPathOf(process.env));
  private opened: CatalogPort | null = null;

  setCatalogPath(catalogPath: string): void {
    this.catalogPathValue = catalogPath;
  }

  /** The catalog file in use. */
  get catalogPath(): string {
    return this.catalogPathValue;
  }

  /** The directory next to the catalog, where quickstart keeps its pool image (for a catalog in
   * RADOS, the default catalog's directory). */
  get dataDir(): string {
    if (isCephCatalog(this.catalogPathValue)) return path.dirname(defaultCatalogPath());
    return path.dirname(path.resolve(this.catalogPathValue));
  }

  /**
   * Opens the catalog on first use (creating it and its directory if missing), freeing what a
   * killed `xvd import` left unless `isRecovering` is false (`xvd check` reports it instead).
   */
  catalog(options: { isRecovering?: boolean } = {}): CatalogPort {
    this.opened ??= openCatalogPort(this.catalogPathValue, options.isRecovering !== false);
    return this.opened;
  }

  /** Runs a command body; a number it returns becomes the exit code. */
  async run(body: () => Promise<number | void>): Promise<void> {
    const code = await body();
    if (typeof code === 'number') this.exitCode = code;
  }

  close(): void {
    this.opened?.close();
    this.opened = null;
  }
}
