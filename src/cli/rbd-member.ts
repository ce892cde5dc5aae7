/**
 * rbd-member: `xvd format rbd:POOL/IMAGE [--size SIZE]`, an RBD image as a pool member. With
 * --size a missing image is created thin (rbd_create2); an existing one is adopted as it is
 * (its own size; --size is then ignored, as for an existing image file); without --size the
 * image must exist. It is cut into extents like any member and kept in the catalog as a device
 * whose identity is its path.
 *
 * Images xvd creates have the layering feature only, no exclusive-lock (nor object-map and
 * fast-diff, which need it): one image holds the extents of many VDs, which hosts serve at the
 * same time, and an exclusive lock would move between those hosts on every write. Fencing is
 * xvd's: a VD is written by one host at a time, and a host that lost its lease is blocklisted
 * (src/ceph/client.ts). An adopted image keeps its features; with exclusive-lock it works, at
 * the cost of those lock moves when several hosts write it.
 * A format that fails after creating the image leaves the image, empty; the same command run
 * again adopts it.
 */
import { parseRbdPath, openRbdBacking } from '../backing/rbd-backing';
import { connectCeph } from '../ceph/client';
import { IoError, UsageError } from '../errors';
import * as sys from '../sys/index';
import type { Context } from './context';
import type { MemberRecord } from './port';

/** librbd's RBD_FEATURE_LAYERING: the one feature of images xvd creates (see the header) */
export const RBD_FEATURES_CREATED = 1;

function memberError(target: string, error: unknown): never {
  if (error instanceof IoError && error.errno === 'ENOENT') {
    throw new UsageError('ERR_CLI_MEMBER_MISSING',
      `format: ${target}: no such image or pool (pass --size to create the image)`);
  }
  throw error;
}

/** Creates when missing (--size) or adopts `target`, and adds it to the pool. */
export async function formatRbdMember(context: Context, target: string, extentSizeBytes: number,
  createSizeBytes: number | null): Promise<MemberRecord> {
  const { pool, image } = parseRbdPath(target);
  const path = `rbd:${pool}/${image}`;
  const catalog = context.catalog();
  if (catalog.members().some((member) => member.path === path)) {
    throw new UsageError('ERR_CLI_MEMBER_OVERLAP', `format: ${path}: already in the pool`);
  }
  await connectCeph();
  if (createSizeBytes !== null) {
    try {
      await sys.rbdCreate(pool, image, createSizeBytes, RBD_FEATURES_CREATED);
    } catch (error) {
      if (!(error instanceof IoError && error.errno === 'EEXIST')) memberError(path, error);
    }
  }
  let sizeBytes: number;
  try {
    const backing = await openRbdBacking(path, 'r');
    sizeBytes = backing.sizeBytes;
    await backing.close();
  } catch (error) {
    memberError(path, error);
  }
  if (sizeBytes < extentSizeBytes) {
    throw new UsageError('ERR_CLI_MEMBER_TOO_SMALL', `format: ${path}: ` +
      `${sizeBytes} bytes is smaller than one extent (${extentSizeBytes} bytes)`);
  }
  return catalog.format({
    path, kind: 'rbd', sizeBytes, extentSizeBytes, majMin: null,
    identity: { files: [], disk: null },
  });
}
