/**
 * testhost helper: runs shell scripts inside a real Linux guest (Debian's cloud kernel under
 * qemu TCG, see scripts/testhost/) whose only network path leads to an NBD server on this host,
 * and the kernel scenarios that prove a server against the kernel's own NBD client.
 *
 * Path of one guest connection: guest nbd-client → 10.0.2.100:10809 (qemu guestfwd) → one
 * socat per connection → a counting proxy in this process (127.0.0.1, ephemeral port) → the
 * server under test (TCP port or Unix socket). The proxy lets a test assert how many
 * connections the kernel really opened (attach, reattach, `-C 4`).
 *
 * The guest's /init runs the script with `sh -e` after sourcing nothing; a script may
 * `. /lib/xvd-test.sh` for `step NAME`, `fail REASON` and `value KEY VALUE` (read back in
 * GuestResult.values). The verdict is the `XVD-TEST-RESULT:` line on the console.
 *
 * Switching the kernel test to another server: write a StartServer (serve `spec.sizeBytes`
 * bytes, writable, or `spec.imagePath`'s bytes read-only, under `exportName`) and call
 * `kernelScenarios(t, startServer)`; see test/integration/kernel-nbd.test.ts.
 */
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';

const ROOT = path.resolve(__dirname, '..', '..');
export const BUILD_SH = path.join(ROOT, 'scripts', 'testhost', 'build.sh');
export const RUN_SH = path.join(ROOT, 'scripts', 'testhost', 'run.sh');

/** Guest runs get this long unless told otherwise (TCG on a busy 2-core machine). */
export const GUEST_TIMEOUT_MS_DEFAULT = 180_000;
/** First build downloads a ~30 MB kernel package; later calls return from the cache. */
const BUILD_TIMEOUT_MS = 600_000;
/** Grace beyond the guest timeout before this process kills run.sh's process group. */
const KILL_GRACE_MS = 30_000;
const RESULT_MARKER = 'XVD-TEST-RESULT: ';
const VALUE_MARKER = 'XVD-VALUE: ';
const MIB = 1024 * 1024;

export interface TesthostAssets {
  kernel: string;
  initramfs: string;
}

export interface RunGuestOptions {
  /** Shell script text run by the guest's /init with `sh -e`. */
  script: string;
  /** The NBD server under test listens on 127.0.0.1:nbdPort ... */
  nbdPort?: number;
  /** ... or on this Unix socket. With neither, guest connections are refused. */
  nbdSocket?: string;
  timeoutMs?: number;
}

export interface GuestResult {
  /** The guest printed `XVD-TEST-RESULT: PASS`. */
  ok: boolean;
  verdict: 'PASS' | 'FAIL' | 'NONE';
  /** Text after FAIL, or why there was no verdict. */
  reason: string;
  /** Everything qemu and run.sh printed (kernel messages, script output, markers). */
  console: string;
  /** `value KEY VALUE` lines from the script. */
  values: Map<string, string>;
  /** Connections the guest opened to the NBD server. */
  connectionCount: number;
  elapsedMs: number;
}

/** Tools the test host needs (scripts/ensure-tools.js installs them when run as root). */
const TESTHOST_TOOLS = ['qemu-system-x86_64', 'socat', 'cpio', 'gzip', 'timeout'];

function isRoot(): boolean {
  return process.getuid !== undefined && process.getuid() === 0;
}

/**
 * Why this machine cannot run the test host at all, or null. Only what no test run can change
 * is a reason: not Linux on x86-64, or not root while a tool is missing or the host is not
 * built (only root installs and builds). As root, a missing tool or a failed build is a broken
 * precondition that fails the tests (testhostBroken), never a skip.
 */
export function testhostSkipReason(): string | null {
  if (process.platform !== 'linux' || os.arch() !== 'x64') return 'needs Linux on x86-64';
  if (isRoot()) return null;
  const missing = TESTHOST_TOOLS.filter((command) => !hasCommand(command));
  if (missing.length > 0) return `not root and missing ${missing.join(', ')}`;
  if (!isCached()) return 'test host not built and not root (run build.sh as root)';
  return null;
}

/** Why the test host cannot run although the machine can run it (a tool that should have been
 * installed is missing, or the build failed), or null once it is built. */
export async function testhostBroken(): Promise<string | null> {
  const missing = TESTHOST_TOOLS.filter((command) => !hasCommand(command));
  if (missing.length > 0) return `missing ${missing.join(', ')} (ensure-tools installs them)`;
  try {
    await prepareTesthost();
  } catch (error) {
    return `test host could not be built: ${(error as Error).message}`;
  }
  return null;
}

/**
 * Whether `commands` are all present. Where one is missing, skips `t` visibly when this process
 * is not root (it could not install them), and fails it when root (npm test runs
 * scripts/ensure-tools.js first, so a missing tool there is a broken precondition).
 */
export function requireTools(t: Test, commands: readonly string[]): boolean {
  const missing = commands.filter((command) => !hasCommand(command));
  if (missing.length === 0) return true;
  if (isRoot()) t.fail(`missing ${missing.join(', ')} although root (ensure-tools installs them)`);
  else t.skip(`missing ${missing.join(', ')} (not root: cannot install them)`, () => undefined);
  return false;
}

function hasCommand(command: string): boolean {
  const found = spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
  return found.status === 0;
}

function cacheDir(): string {
  const base = process.env.XVD_CACHE ?? path.join(os.homedir(), '.cache', 'xvd');
  return path.join(base, 'testhost');
}

function isCached(): boolean {
  return fs.existsSync(path.join(cacheDir(), 'current', 'initramfs.gz'));
}

let assetsPromise: Promise<TesthostAssets> | undefined;

/** Builds (or finds cached) kernel and initramfs once per process; build.sh locks across them. */
export function prepareTesthost(): Promise<TesthostAssets> {
  assetsPromise ??= runBuild();
  return assetsPromise;
}

function runBuild(): Promise<TesthostAssets> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [BUILD_SH], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), BUILD_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const kernel = /^KERNEL=(.+)$/m.exec(stdout)?.[1];
      const initramfs = /^INITRAMFS=(.+)$/m.exec(stdout)?.[1];
      if (code === 0 && kernel !== undefined && initramfs !== undefined) {
        resolve({ kernel, initramfs });
      } else {
        reject(new Error(`build.sh exited ${code}: ${stderr.slice(-2000)}`));
      }
    });
  });
}

interface CountingProxy {
  port: number;
  connectionCount(): number;
  close(): Promise<void>;
}

/** TCP proxy on 127.0.0.1 that forwards each connection to the target and counts them. */
async function startCountingProxy(target: net.NetConnectOpts | null): Promise<CountingProxy> {
  const sockets = new Set<net.Socket>();
  let count = 0;
  const server = net.createServer((downstream) => {
    count++;
    sockets.add(downstream);
    downstream.on('close', () => sockets.delete(downstream));
    if (target === null) {
      downstream.destroy();
      return;
    }
    const upstream = net.connect(target);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.setNoDelay(true);
    downstream.setNoDelay(true);
    downstream.pipe(upstream).on('error', () => downstream.destroy());
    upstream.pipe(downstream).on('error', () => upstream.destroy());
    downstream.on('error', () => upstream.destroy());
    upstream.on('error', () => downstream.destroy());
    downstream.on('close', () => upstream.destroy());
    upstream.on('close', () => downstream.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('proxy has no port');
  return {
    port: address.port,
    connectionCount: () => count,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

function proxyTarget(options: RunGuestOptions): net.NetConnectOpts | null {
  if (options.nbdPort !== undefined) return { host: '127.0.0.1', port: options.nbdPort };
  if (options.nbdSocket !== undefined) return { path: options.nbdSocket };
  return null;
}

/** Boots the guest once with `script`; resolves with its verdict and console (never rejects
 * for a guest failure, only when qemu cannot be started at all). */
export async function runGuest(options: RunGuestOptions): Promise<GuestResult> {
  await prepareTesthost();
  const timeoutMs = options.timeoutMs ?? GUEST_TIMEOUT_MS_DEFAULT;
  const startMs = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-guest-'));
  const scriptPath = path.join(dir, 'test.sh');
  fs.writeFileSync(scriptPath, options.script, { mode: 0o755 });
  const proxy = await startCountingProxy(proxyTarget(options));
  try {
    const timeoutS = Math.max(1, Math.ceil(timeoutMs / 1000));
    const args = [RUN_SH, '--script', scriptPath, '--port', String(proxy.port)];
    const { console, exitCode } = await runGrouped('bash',
      args.concat('--timeout', String(timeoutS)), timeoutMs + KILL_GRACE_MS);
    return parseGuest(console, exitCode, proxy.connectionCount(), Date.now() - startMs);
  } finally {
    await proxy.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** What a command run by runGrouped printed (`console`: both streams as they came). */
export interface GroupedRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  console: string;
}

/** Runs a command in its own process group; kills the whole group after `killAfterMs`. */
export function runGrouped(command: string, args: string[], killAfterMs: number):
  Promise<GroupedRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const both: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => { out.push(chunk); both.push(chunk); });
    child.stderr.on('data', (chunk: Buffer) => { err.push(chunk); both.push(chunk); });
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    }, killAfterMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ exitCode: code, stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        console: Buffer.concat(both).toString('utf8') });
    });
  });
}

function parseGuest(console: string, exitCode: number | null, connectionCount: number,
  elapsedMs: number): GuestResult {
  const lines = console.split(/\r?\n/);
  const values = new Map<string, string>();
  let verdictLine: string | undefined;
  for (const line of lines) {
    const valueAt = line.indexOf(VALUE_MARKER);
    if (valueAt >= 0) {
      const pair = line.slice(valueAt + VALUE_MARKER.length);
      const equals = pair.indexOf('=');
      if (equals > 0) values.set(pair.slice(0, equals), pair.slice(equals + 1).trim());
    }
    const resultAt = line.indexOf(RESULT_MARKER); // a kernel message may precede it
    if (resultAt >= 0) verdictLine = line.slice(resultAt + RESULT_MARKER.length).trim();
  }
  const base = { console, values, connectionCount, elapsedMs };
  if (verdictLine === 'PASS') return { ...base, ok: true, verdict: 'PASS', reason: '' };
  if (verdictLine !== undefined && verdictLine.startsWith('FAIL')) {
    return { ...base, ok: false, verdict: 'FAIL', reason: verdictLine.slice(4).trim() };
  }
  const reason = `no verdict from the guest (run.sh exit ${exitCode})`;
  return { ...base, ok: false, verdict: 'NONE', reason };
}

// ---------------------------------------------------------------------------------------------
// Kernel scenarios, parameterised by the server under test.

export interface ServerSpec {
  /** Export size in bytes (a multiple of 1 MiB). */
  sizeBytes: number;
  /** Serve read-only (the server must advertise NBD_FLAG_READ_ONLY). */
  isReadOnly: boolean;
  /** Initial content: serve these bytes (file of sizeBytes). Absent: content is free. */
  imagePath?: string;
  /** An empty directory for the server's files (the scenario's t.testdir(); calling
   * t.testdir() again would wipe it and the image in it). */
  dir: string;
}

export interface ServerUnderTest {
  /** Where the server listens: a TCP port on 127.0.0.1, or a Unix socket path. */
  nbdPort?: number;
  nbdSocket?: string;
  /** The export name the guest passes with `nbd-client -N`. */
  exportName: string;
  /** Stops the server; called once at the end of the scenario. */
  stop(): Promise<void>;
  /** Optional, called after stop() when the guest passed: a file holding the export's bytes.
   * The host then checks the filesystem the guest left there (e2fsck, file checksums). */
  snapshot?(): Promise<string>;
}

export type StartServer = (t: Test, spec: ServerSpec) => Promise<ServerUnderTest>;

/** Sizes of the scenarios' exports. */
export const WRITABLE_SIZE_BYTES = 256 * MIB;
export const READ_ONLY_SIZE_BYTES = 64 * MIB;

const GUEST_ADDRESS = '10.0.2.100';
const FILE_SHA256_KEY = 'file_sha256:';
const GUEST_PORT = 10809;

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

function attachLine(exportName: string, device: string, extra: string): string {
  const name = shellQuote(exportName);
  return `nbd-client ${GUEST_ADDRESS} ${GUEST_PORT} ${device} -N ${name} ${extra}`.trim();
}

/** Shell: waits (bounded, 10 s) until /dev/nbd0 reports size 0 after `nbd-client -d`. */
const WAIT_DETACHED = `
i=0
while [ "$(cat /sys/block/nbd0/size)" != 0 ]; do
  i=$((i + 1)); [ $i -le 100 ] || fail "nbd0 still has a size after nbd-client -d"; sleep 0.1
done`;

const PROLOGUE = `. /lib/xvd-test.sh
step "load nbd"
modprobe nbd nbds_max=4 || fail "modprobe nbd failed"
`;

function checkSize(sizeBytes: number): string {
  return `size=$(( $(cat /sys/block/nbd0/size) * 512 ))
value size_bytes $size
[ "$size" = ${sizeBytes} ] || fail "device size $size, expected ${sizeBytes}"`;
}

/** Script: ext4 round trip with detach and reattach (single connection each time). */
export function roundTripScript(exportName: string, sizeBytes: number): string {
  return `${PROLOGUE}
step attach
${attachLine(exportName, '/dev/nbd0', '')} || fail "nbd-client could not attach"
${checkSize(sizeBytes)}
[ "$(cat /sys/block/nbd0/ro)" = 0 ] || fail "writable export attached read-only"
step mkfs
mkfs.ext4 -q -F /dev/nbd0 || fail "mkfs.ext4 failed"
mount -t ext4 /dev/nbd0 /mnt || fail "mount failed"
step write
mkdir /mnt/d
dd if=/dev/urandom of=/mnt/big bs=1M count=16 2>/dev/null || fail "writing big failed"
dd if=/dev/urandom of=/mnt/d/mid bs=64k count=64 2>/dev/null || fail "writing mid failed"
i=0
while [ $i -lt 32 ]; do head -c $((i * 997 + 1)) /dev/urandom > /mnt/d/small$i; i=$((i + 1)); done
(cd /mnt && find . -type f ! -path './lost+found/*' | sort | xargs sha256sum) > /tmp/sums
value files $(wc -l < /tmp/sums)
value file_sha256:big "$(sha256sum /mnt/big | cut -d' ' -f1)"
umount /mnt || fail "umount failed"
step detach
nbd-client -d /dev/nbd0 || fail "nbd-client -d failed"
${WAIT_DETACHED}
echo 3 > /proc/sys/vm/drop_caches
step reattach
${attachLine(exportName, '/dev/nbd0', '')} || fail "nbd-client could not reattach"
mount -t ext4 /dev/nbd0 /mnt || fail "mount after reattach failed"
step verify
(cd /mnt && sha256sum -c -s /tmp/sums) || fail "checksums differ after reattach"
umount /mnt || fail "umount after verify failed"
step fsck
e2fsck -fn /dev/nbd0 || fail "e2fsck -fn reported problems"
nbd-client -d /dev/nbd0 || fail "final nbd-client -d failed"
`;
}

/** Script: read-only export; the kernel sees it read-only, writes fail, reads match. */
export function readOnlyScript(exportName: string, sizeBytes: number, sums: string): string {
  return `${PROLOGUE}
step attach
${attachLine(exportName, '/dev/nbd0', '')} || fail "nbd-client could not attach"
${checkSize(sizeBytes)}
value ro $(cat /sys/block/nbd0/ro)
[ "$(cat /sys/block/nbd0/ro)" = 1 ] || fail "kernel did not mark the device read-only"
step "raw write"
if dd if=/dev/zero of=/dev/nbd0 bs=4096 count=1 conv=fsync 2>/tmp/dd.err; then
  fail "a raw write to the read-only device succeeded"
fi
value raw_write_error "$(tr '\\n' ' ' < /tmp/dd.err)"
step "read device"
value device_sha256 $(sha256sum /dev/nbd0 | cut -d' ' -f1)
step mount
mount -t ext4 -o ro /dev/nbd0 /mnt || fail "read-only mount failed"
cat > /tmp/sums <<'SUMS'
${sums}SUMS
(cd /mnt && sha256sum -c -s /tmp/sums) || fail "file checksums differ from the image's"
if touch /mnt/new 2>/dev/null; then fail "creating a file on the read-only mount worked"; fi
umount /mnt || fail "umount failed"
step detach
nbd-client -d /dev/nbd0 || fail "nbd-client -d failed"
`;
}

/** Script: four connections (`-C 4`) carry parallel writes; one connection reads them back. */
export function multiConnScript(exportName: string, sizeBytes: number): string {
  return `${PROLOGUE}
step "attach -C 4"
${attachLine(exportName, '/dev/nbd0', '-C 4')} || fail "nbd-client -C 4 could not attach"
${checkSize(sizeBytes)}
step mkfs
mkfs.ext4 -q -F /dev/nbd0 || fail "mkfs.ext4 failed"
mount -t ext4 /dev/nbd0 /mnt || fail "mount failed"
step "parallel writes"
pids=""
for n in 0 1 2 3; do
  dd if=/dev/urandom of=/mnt/part$n bs=256k count=16 conv=fsync 2>/dev/null &
  pids="$pids $!"
done
for pid in $pids; do wait $pid || fail "a parallel writer failed"; done
sync
(cd /mnt && sha256sum part0 part1 part2 part3) > /tmp/sums
[ "$(wc -l < /tmp/sums)" = 4 ] || fail "not all four files were written"
for n in 0 1 2 3; do value "file_sha256:part$n" "$(sha256sum /mnt/part$n | cut -d' ' -f1)"; done
umount /mnt || fail "umount failed"
step detach
nbd-client -d /dev/nbd0 || fail "nbd-client -d failed"
${WAIT_DETACHED}
echo 3 > /proc/sys/vm/drop_caches
step "reattach single"
${attachLine(exportName, '/dev/nbd0', '')} || fail "nbd-client could not reattach"
mount -t ext4 /dev/nbd0 /mnt || fail "mount after reattach failed"
(cd /mnt && sha256sum -c -s /tmp/sums) || fail "checksums differ when read over one connection"
umount /mnt || fail "umount after verify failed"
step fsck
e2fsck -fn /dev/nbd0 || fail "e2fsck -fn reported problems"
nbd-client -d /dev/nbd0 || fail "final nbd-client -d failed"
`;
}

export interface ReadOnlyImage {
  imagePath: string;
  /** sha256 of the whole image (what the guest must read from the device). */
  imageSha256: string;
  /** `sha256sum` lines for the files inside, relative to the filesystem root. */
  sums: string;
}

/** Builds an ext4 image of `sizeBytes` holding a few files with random content, on the host. */
export function makeReadOnlyImage(dir: string, sizeBytes: number): ReadOnlyImage {
  const content = path.join(dir, 'ro-content');
  fs.mkdirSync(path.join(content, 'd'), { recursive: true });
  const files: Array<[string, number]> = [['big', 4 * MIB], ['d/mid', 256 * 1024], ['d/one', 1]];
  let sums = '';
  for (const [name, lengthBytes] of files) {
    const data = crypto.randomBytes(lengthBytes);
    fs.writeFileSync(path.join(content, name), data);
    sums += `${crypto.createHash('sha256').update(data).digest('hex')}  ${name}\n`;
  }
  const imagePath = path.join(dir, 'ro.img');
  fs.writeFileSync(imagePath, '');
  fs.truncateSync(imagePath, sizeBytes);
  const mkfs = spawnSync('mkfs.ext4', ['-q', '-F', '-E', 'root_owner=0:0', '-d', content,
    imagePath], { encoding: 'utf8' });
  if (mkfs.status !== 0) throw new Error(`mkfs.ext4 -d failed: ${mkfs.stderr}`);
  const imageSha256 = crypto.createHash('sha256').update(fs.readFileSync(imagePath))
    .digest('hex');
  return { imagePath, imageSha256, sums };
}

function guestTarget(server: ServerUnderTest): Pick<RunGuestOptions, 'nbdPort' | 'nbdSocket'> {
  if (server.nbdPort !== undefined) return { nbdPort: server.nbdPort };
  if (server.nbdSocket !== undefined) return { nbdSocket: server.nbdSocket };
  throw new Error('startServer returned neither nbdPort nor nbdSocket');
}

function reportGuest(t: Test, result: GuestResult): void {
  t.comment(`guest ${result.verdict} in ${result.elapsedMs} ms, ` +
    `${result.connectionCount} connection(s)`);
  if (!result.ok) t.comment(result.console.split('\n').slice(-80).join('\n'));
}

/** Host-side proof that the guest's ext4 landed on the server: e2fsck and file checksums
 * (`value file_sha256:<name> HASH` from the guest, for files in the filesystem root). */
function checkSnapshot(t: Test, imagePath: string, result: GuestResult): void {
  const fsck = spawnSync('e2fsck', ['-fn', imagePath], { encoding: 'utf8' });
  const detail = fsck.status === 0 ? '' : `: ${fsck.stdout}${fsck.stderr}`;
  t.equal(fsck.status, 0, `e2fsck -fn on the server's bytes is clean${detail}`);
  for (const [key, expected] of result.values) {
    if (!key.startsWith(FILE_SHA256_KEY)) continue;
    const name = key.slice(FILE_SHA256_KEY.length);
    const cat = spawnSync('debugfs', ['-R', `cat /${name}`, imagePath],
      { maxBuffer: 256 * MIB });
    const actual = crypto.createHash('sha256').update(cat.stdout).digest('hex');
    t.equal(actual, expected, `/${name} on the server's bytes has the guest's checksum`);
  }
}

async function withServer(t: Test, startServer: StartServer, spec: ServerSpec,
  body: (server: ServerUnderTest) => Promise<GuestResult>): Promise<void> {
  const server = await startServer(t, spec);
  let result: GuestResult;
  try {
    result = await body(server);
  } finally {
    await server.stop();
  }
  if (result.ok && server.snapshot !== undefined) {
    checkSnapshot(t, await server.snapshot(), result);
  }
}

export type KernelScenarioName = 'round-trip' | 'read-only' | 'multi-conn';

export interface KernelScenarioOptions {
  /** Run only these (default: all three). */
  only?: readonly KernelScenarioName[];
}

/**
 * Registers the kernel NBD scenarios on `t` against servers from `startServer`: an ext4 round
 * trip with reattach, a read-only export, and multi-connection (`-C 4`). Each boots its own
 * guest and starts its own server. Skips visibly only when this machine cannot run the test
 * host (testhostSkipReason); fails when it can and the host does not build.
 */
export function kernelScenarios(t: Test, startServer: StartServer,
  options: KernelScenarioOptions = {}): void {
  const skip = testhostSkipReason();
  if (skip !== null) {
    t.skip(`kernel NBD scenarios: ${skip}`, () => {});
    return;
  }
  let broken: string | null = null;
  t.before(async () => {
    broken = await testhostBroken();
  });
  const scenario = (key: KernelScenarioName, name: string,
    body: (t: Test) => Promise<void>): void => {
    if (options.only !== undefined && !options.only.includes(key)) return;
    t.test(name, async (t) => {
      // the machine can run the test host: a broken precondition is a failure, not a skip
      if (broken !== null) {
        t.fail(broken);
        return;
      }
      await body(t);
    });
  };

  scenario('round-trip',
    'ext4 written through the kernel client survives detach, reattach and e2fsck',
    async (t) => {
      const spec = { sizeBytes: WRITABLE_SIZE_BYTES, isReadOnly: false, dir: t.testdir() };
      await withServer(t, startServer, spec, async (server) => {
        const result = await runGuest({ script: roundTripScript(server.exportName,
          spec.sizeBytes), ...guestTarget(server) });
        reportGuest(t, result);
        t.equal(result.verdict, 'PASS', `guest verdict (${result.reason})`);
        t.equal(result.values.get('size_bytes'), String(spec.sizeBytes), 'device size');
        t.equal(result.values.get('files'), '34', 'all written files were checksummed');
        t.equal(result.connectionCount, 2, 'one connection to attach, one to reattach');
        return result;
      });
    });

  scenario('read-only',
    'a read-only export is read-only in the kernel, refuses writes, and reads exactly',
    async (t) => {
      const dir = t.testdir();
      const image = makeReadOnlyImage(dir, READ_ONLY_SIZE_BYTES);
      const spec = { sizeBytes: READ_ONLY_SIZE_BYTES, isReadOnly: true,
        imagePath: image.imagePath, dir };
      await withServer(t, startServer, spec, async (server) => {
        const result = await runGuest({ script: readOnlyScript(server.exportName,
          spec.sizeBytes, image.sums), ...guestTarget(server) });
        reportGuest(t, result);
        t.equal(result.verdict, 'PASS', `guest verdict (${result.reason})`);
        t.equal(result.values.get('ro'), '1', 'kernel marks the device read-only');
        t.equal(result.values.get('device_sha256'), image.imageSha256,
          'the whole device reads back as the served image');
        t.match(result.values.get('raw_write_error') ?? '', /not permitted|read-only/i,
          'the raw write failed with a permission error');
        return result;
      });
    });

  scenario('multi-conn',
    'four connections (-C 4) carry parallel writes that one connection reads back',
    async (t) => {
      const spec = { sizeBytes: WRITABLE_SIZE_BYTES, isReadOnly: false, dir: t.testdir() };
      await withServer(t, startServer, spec, async (server) => {
        const result = await runGuest({ script: multiConnScript(server.exportName,
          spec.sizeBytes), ...guestTarget(server) });
        reportGuest(t, result);
        t.equal(result.verdict, 'PASS', `guest verdict (${result.reason})`);
        t.equal(result.connectionCount, 5, 'four connections, then one to reattach');
        return result;
      });
    });
}
