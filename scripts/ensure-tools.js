#!/usr/bin/env node
// Installs the external tools the tests use (real NBD clients, qemu, the test-host parts) from
// Debian when they are missing and we are root. Prints what it does on stderr; never fails the
// test run by itself: a test whose tool is still missing skips visibly.
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');

const PACKAGES = {
  nbdinfo: 'libnbd-bin',
  nbdsh: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdfuse: 'nbdfuse',
  nbdkit: 'nbdkit',
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  'qemu-nbd': 'qemu-utils',
  'qemu-system-x86_64': 'qemu-system-x86',
  'nbd-client': 'nbd-client',
  'nbd-server': 'nbd-server',
  busybox: 'busybox-static',
  socat: 'socat',
  'mkfs.ext4': 'e2fsprogs',
  fio: 'fio',
  depmod: 'kmod',
  cpio: 'cpio',
  fusermount3: 'fuse3',
  certtool: 'gnutls-bin',
  psktool: 'gnutls-bin',
  clang: 'clang', // builds the libFuzzer harness (test/fuzz/native-request-fuzz.test.ts)
  tmux: 'tmux', // a real terminal for xvd status --watch (test/integration/status-watch.test.ts)
  promtool: 'prometheus', // checks serve --metrics (test/integration/serve-metrics.test.ts)
  // contrib/systemd's units: verify, security, socket activation (systemd-units.test.ts)
  'systemd-analyze': 'systemd',
  'systemd-socket-activate': 'systemd',
  setpriv: 'util-linux',
  // a real single-node Ceph cluster (scripts/ceph/up.sh) and its CLI (rbd pool members)
  'ceph-mon': 'ceph-mon',
  'ceph-mgr': 'ceph-mgr',
  'ceph-osd': 'ceph-osd',
  ceph: 'ceph-common',
  rbd: 'ceph-common',
};
const EXTRA = ['python3-libnbd'];
// packages of libraries rather than commands: librbd and librados (the addon loads them at
// run time), libcephsqlite (a catalog in RADOS), qemu's rbd: driver (the benchmark's peer)
const LIBRARIES = ['librbd-dev', 'librados-dev', 'libsqlite3-mod-ceph', 'qemu-block-extra'];

function has(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

const missing = new Set();
for (const [command, pkg] of Object.entries(PACKAGES)) if (!has(command)) missing.add(pkg);
// nbdsh imports the nbd module of the system python3
if (spawnSync('/usr/bin/python3', ['-c', 'import nbd'], { stdio: 'ignore' }).status !== 0) {
  missing.add(EXTRA[0]);
}

for (const pkg of LIBRARIES) if (!isInstalled(pkg)) missing.add(pkg);

function isInstalled(pkg) {
  const query = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return query.status === 0 && query.stdout.includes('install ok installed');
}

// clang's libFuzzer and sanitizer runtimes (-fsanitize=fuzzer) come in their own package
if (!has('clang') || !hasFuzzerRuntime()) missing.add('libclang-rt-dev');

function hasFuzzerRuntime() {
  const dir = spawnSync('clang', ['-print-resource-dir'], { encoding: 'utf8' });
  if (dir.status !== 0) return false;
  const runtime = `${dir.stdout.trim()}/lib/linux/libclang_rt.fuzzer-x86_64.a`;
  return spawnSync('test', ['-f', runtime]).status === 0;
}

if (missing.size === 0) process.exit(0);
if (process.getuid === undefined || process.getuid() !== 0) {
  process.stderr.write(`ensure-tools: missing ${[...missing].join(' ')} (not root: not installing)\n`);
  process.exit(0);
}
process.stderr.write(`ensure-tools: installing ${[...missing].join(' ')}\n`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
try {
  execFileSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'], env });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env,
  });
} catch (error) {
  process.stderr.write(`ensure-tools: apt-get failed: ${error.message}\n`);
}
