/**
 * The Linux kernel's NBD client (test/helpers/testhost.ts) against `xvd serve`: every export is
 * a VBD of a VD that spans two pool members (each member is smaller than the VD), writable over
 * TCP; the read-only case imports the scenario's ext4 image into a VD and attaches it `r`, over
 * a Unix socket.
 */
import t, { type Test } from 'tap';
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { makeImage, runXvd, spawnXvd } from '../helpers/cli';
import {
  kernelScenarios,
  type ServerSpec,
  type ServerUnderTest,
  type StartServer,
} from '../helpers/testhost';
import { freePort, shortTempDir, stopChild } from '../helpers/process';

const MIB = 1024 * 1024;
const MEMBER_SLACK_BYTES = 8 * MIB;
const EXTENT_SIZE = '1M';
const READY_TIMEOUT_MS = 30_000;
const READY_POLL_MS = 50;
const DOMAIN = '1';
const DEVICE = 'xvda';

async function xvd(t: Test, catalog: string, args: string[]): Promise<string> {
  const result = await runXvd(args, { catalog });
  if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${result.stderr}`);
  return result.stdout.trim();
}

/** Two members, each a little more than half the VD, so that the VD must span both. */
async function makePool(t: Test, dir: string, catalog: string, sizeBytes: number):
  Promise<void> {
  const memberBytes = sizeBytes / 2 + MEMBER_SLACK_BYTES;
  for (const name of ['member-a.img', 'member-b.img']) {
    const image = makeImage(path.join(dir, name), memberBytes);
    await xvd(t, catalog, ['format', image, '--extent-size', EXTENT_SIZE]);
  }
}

async function assertSpansTwoMembers(t: Test, catalog: string, id: string): Promise<void> {
  const shown = JSON.parse(await xvd(t, catalog, ['show', id, '--json'])) as
    { extents: { path: string }[] };
  const members = new Set(shown.extents.map((extent) => extent.path));
  t.equal(members.size, 2, 'the VD spans two pool members');
}

function canConnect(options: net.NetConnectOpts): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(options, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function waitListening(child: ChildProcess, target: net.NetConnectOpts): Promise<void> {
  for (let waitedMs = 0; waitedMs < READY_TIMEOUT_MS; waitedMs += READY_POLL_MS) {
    if (child.exitCode !== null) throw new Error(`xvd serve exited ${child.exitCode}`);
    if (await canConnect(target)) return;
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  throw new Error('xvd serve did not start listening');
}

const startXvd: StartServer = async (t: Test, spec: ServerSpec) => {
  const dir = spec.dir;
  const catalog = path.join(dir, 'catalog.sqlite');
  await makePool(t, dir, catalog, spec.sizeBytes);
  const id = spec.imagePath === undefined
    ? await xvd(t, catalog, ['create', `${spec.sizeBytes}B`, '--name', 'kernel'])
    : await xvd(t, catalog, ['import', spec.imagePath, '--name', 'kernel']);
  await assertSpansTwoMembers(t, catalog, id);
  await xvd(t, catalog, ['vbd', 'add', `vd:${id}`, DEVICE, '--domain', DOMAIN, '--mode',
    spec.isReadOnly ? 'r' : 'w']);

  // a short socket path: t.testdir() paths can pass the 108-byte sun_path limit
  const socketDir = shortTempDir(t, 'xvd-kernel-');
  let listen: Pick<ServerUnderTest, 'nbdPort' | 'nbdSocket'>;
  let target: net.NetConnectOpts;
  let args: string[];
  if (spec.isReadOnly) {
    const socket = path.join(socketDir, 'nbd.sock');
    listen = { nbdSocket: socket };
    target = { path: socket };
    args = ['serve', '--socket', socket];
  } else {
    const port = await freePort();
    listen = { nbdPort: port };
    target = { host: '127.0.0.1', port };
    args = ['serve', '--listen', `127.0.0.1:${port}`];
  }
  const child = spawnXvd(args, { catalog });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  try {
    await waitListening(child, target);
  } catch (error) {
    await stopChild(child);
    throw new Error(`${(error as Error).message}: ${stderr}`);
  }
  return {
    ...listen,
    exportName: `${DOMAIN}/${DEVICE}`,
    stop: async () => {
      await stopChild(child);
      t.equal(child.exitCode, 0, `xvd serve exits 0 on SIGTERM (${stderr.slice(-500)})`);
    },
    snapshot: async () => {
      const file = path.join(dir, 'exported.img');
      await xvd(t, catalog, ['export', id, file]);
      return file;
    },
  };
};

kernelScenarios(t, startXvd);
