/**
 * nbd/provider: how the NBD server finds exports. The server knows names and Exports; the provider
 * (src/serve, backed by the catalog; or a fixed map in tests) knows VBDs, domains and fencing.
 *
 * Fencing (ARCHITECTURE invariant 2): when a VBD is removed, deleted, expired or changed, src/serve
 * first stops returning it from open(), then calls the server's `fenceExport(name)`. The server
 * refuses new requests on every connection bound to that export (NBD_ESHUTDOWN), lets requests in
 * flight finish, and resolves once none is in flight; only then may src/serve let the catalog reuse
 * the VBD's extents. A fenced connection never becomes usable again; a client must reconnect.
 */
import type { Export } from '../engine/export';

export interface ExportListing {
  name: string;
  description: string;
}

/** Who is asking: a domain number when the server authenticates (TLS), null when it does not. */
export type Domain = number | null;

export interface ExportHandle {
  readonly export: Export;
  /** Called by the server when the last connection bound to this handle goes away. */
  release(): void;
}

/**
 * Thrown by open() when an export exists but may not be opened now, for a reason the client
 * should read (a VD leased by another host): NBD_OPT_GO and NBD_OPT_INFO answer
 * NBD_REP_ERR_POLICY with this message, and the `export-refused` line carries it as its reason.
 */
export class ExportRefusal extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExportRefusal';
  }
}

export interface ExportProvider {
  /** Exports this domain may see (NBD_OPT_LIST). */
  list(domain: Domain): ExportListing[];
  /** The default export for an empty name, or null when there is none. */
  defaultName(domain: Domain): string | null;
  /**
   * Opens (or shares) the export for NBD_OPT_GO/EXPORT_NAME; null when unknown or not allowed;
   * throws ExportRefusal when it exists but may not be opened now, saying why.
   */
  open(name: string, domain: Domain): Promise<ExportHandle | null>;
}
