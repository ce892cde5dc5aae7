/**
 * adapter: the catalog module (src/catalog) seen through the CLI's port (src/cli/port.ts).
 * Placeholder until src/catalog/index.ts lands: opening refuses with ERR_CATALOG_OPEN.
 */
import { EmuError } from '../errors';
import type { CatalogPort } from './port';

export function openCatalogPort(catalogPath: string): CatalogPort {
  throw new EmuError('ERR_CATALOG_OPEN', `catalog: ${catalogPath}: the catalog module is not built yet`);
}
