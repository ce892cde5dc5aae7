/**
 * The Linux kernel's NBD client (test/helpers/testhost.ts) against `xvd serve` with a VD that
 * lives on RBD: two RBD pool members on a real single-node cluster, each smaller than the VD,
 * so the VD spans both. The round-trip scenario (mkfs.ext4, files written, detach, reattach,
 * e2fsck, checksums; the host then exports the VD through librbd and checks the file system
 * too) runs over TCP.
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import path from 'node:path';
import { runXvd, spawnXvd } from '../helpers/cli';
import { startCeph, type CephCluster } from '../helpers/ceph';
import { freePort, stopChild } from '../helpers/process';
import { kernelScenarios, testhostSkipReason, type StartServer } from '../helpers/testhost';

const MIB = 1024 * 1024;
const READY_TIMEOUT_MS = 30_000;
let cluster: CephCluster | null = null;

async function xvd(catalog: string, args: string[]): Promise<string> {
  const result = await runXvd(args, { catalog, env: { CEPH_CONF: cluster!.conf } });
  if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${result.stderr}`);
  return result.stdout.trim();
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

if (testhostSkipReason() === null) {
  t.before(async () => {
    cluster = await startCeph(t);
  });
}

let run = 0;
const startXvdOnRbd: StartServer = async (t: Test, spec) => {
  const catalog = path.join(spec.dir, 'catalog.sqlite');
  const memberMiB = spec.sizeBytes / MIB / 2 + 8;
  for (const name of ['ka', 'kb']) {
    await xvd(catalog, ['format', `rbd:${cluster!.pool}/${name}-${run}`, '--size', `${memberMiB}M`,
      '--extent-size', '1M']);
  }
  run++;
  const id = spec.imagePath === undefined
    ? await xvd(catalog, ['create', `${spec.sizeBytes}B`, '--name', 'kernel'])
    : await xvd(catalog, ['import', spec.imagePath, '--name', 'kernel']);
  const shown = JSON.parse(await xvd(catalog, ['show', id, '--json'])) as
    { extents: { path: string }[] };
  t.equal(new Set(shown.extents.map((extent) => extent.path)).size, 2,
    'the VD spans two RBD members');
  await xvd(catalog, ['vbd', 'add', `vd:${id}`, 'xvda', '--domain', '1', '--mode',
    spec.isReadOnly ? 'r' : 'w']);
  const port = await freePort();
  const child = spawnXvd(['serve', '--listen', `127.0.0.1:${port}`],
    { catalog, env: { CEPH_CONF: cluster!.conf } });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  for (let waited = 0; !(await canConnect(port)); waited += 50) {
    if (child.exitCode !== null || waited > READY_TIMEOUT_MS) {
      throw new Error(`xvd serve did not start: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    nbdPort: port,
    exportName: '1/xvda',
    stop: async () => {
      await stopChild(child);
      t.equal(child.exitCode, 0, `xvd serve exits 0 on SIGTERM (${stderr.slice(-500)})`);
    },
    snapshot: async () => {
      const file = path.join(spec.dir, 'exported.img');
      await xvd(catalog, ['export', id, file]);
      return file;
    },
  };
};

kernelScenarios(t, startXvdOnRbd, { only: ['round-trip'] });
