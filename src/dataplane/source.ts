/**
 * dataplane/source: an export's data plane (engine/export.ts DataPlaneSource), found once per
 * connection at the start of transmission. Export.dataPlane when the export offers it; until
 * every export does, an export that still has the three methods of its own (planRead,
 * datapathMap, onMapReplaced: ExtentExport) serves as its own source. The memory export of the
 * tests has neither: its connections stay on the JS path.
 */
import type { DataPlaneSource, Export } from '../engine/export';

type MaybeSource = Partial<DataPlaneSource> & Export;

/** `exp`'s data plane, or undefined when it has none (see the header). */
export function dataPlaneOf(exp: Export): DataPlaneSource | undefined {
  if (exp.dataPlane !== undefined) return exp.dataPlane;
  const candidate = exp as MaybeSource;
  if (typeof candidate.planRead !== 'function' || typeof candidate.datapathMap !== 'function' ||
    typeof candidate.onMapReplaced !== 'function') {
    return undefined;
  }
  return candidate as DataPlaneSource;
}
