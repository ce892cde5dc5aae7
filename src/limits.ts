/**
 * limits: every bound xvd enforces, each with the reason it is that value.
 * Invariant 6: no input from a client or a user grows memory without bound; each limit is named
 * here.
 */
export const LIMITS = {
  /** Default pool extent size: the seed tools' 4 MiB default is kept... as bytes. */
  extentSizeDefault: 4 * 1024 * 1024,
  /** Smallest extent: one 512-byte sector. */
  extentSizeMin: 512,
  /** Largest extent: 1 GiB keeps per-extent zeroing work bounded. */
  extentSizeMax: 1024 * 1024 * 1024,
  /** SQLite busy_timeout: many concurrent CLI processes wait this long for the write lock. */
  catalogBusyTimeoutMs: 30_000,
  /** A catalog in RADOS (catalog/ceph-sqlite.ts): an unreachable cluster fails after this many
   * seconds instead of libcephsqlite's 300 (client_mount_timeout, unless CEPH_ARGS sets it). */
  cephMountTimeoutS: 5,
  /** ... the probe of the first open (catalog/ceph-sqlite.ts) may take this much longer than
   * the mount timeout (a Node start, the open) before it counts as failed. */
  cephProbeSlackS: 10,
  /** ... page cache of a catalog connection in 64 KiB pages (16 MiB): reads are RADOS reads. */
  cephCachePages: 256,
  // --- catalog and allocator (src/catalog, src/allocator) ---
  /** How long create/enlarge/import wait for a running server to fence and drain a deleted VD
   * whose extents they need (ERR_VD_SPACE_DRAINING); draining takes one poll plus the requests
   * in flight, so this is generous. */
  vdDrainWaitMs: 20_000,
  /** How long `xvd clone` waits for the running servers of the origin to switch it to
   * copy-on-write (their lease shows the generation the clone bumped): one catalog poll of the
   * server plus its writes in flight, so this is generous. */
  cloneSwitchWaitMs: 10_000,
  /** The most extents one reserveCowExtents call takes (a server refills in batches). */
  cowReserveExtentsMax: 4096,
  /** Zeroing goes in ranges of at most this, re-checking ownership between them. */
  zeroRangeBytesMax: 1024 * 1024 * 1024,
  /** A VBD extent list holds at most this many ranges. */
  catalogVbdRangesMax: 65_536,
  /** Longest expiry (about 317 years): now + this in ms stays a safe integer. */
  vdExpirySecondsMax: 10_000_000_000,
  // --- cli (src/cli) ---
  /** A VBD device name becomes half of the NBD export name `DOMAIN/DEVICE`; Linux names are
   * short. */
  deviceNameLengthMax: 64,
  /** A VD name is a label for people (LVM allows 127 characters in an LV name). */
  vdNameLengthMax: 127,
  /** import/export copy through one buffer of this size: bounded memory, few syscalls. */
  copyChunkBytes: 1024 * 1024,
  /** Extents in one `vbd add extents:` list typed on a command line. */
  vbdExtentListMax: 4096,
  /** quickstart: the sparse pool image it creates when none exists. */
  quickstartPoolBytes: 4 * 1024 * 1024 * 1024,
  /** quickstart: the VD it creates and attaches as domain 0's xvda. */
  quickstartDiskBytes: 1024 * 1024 * 1024,
  // --- engine and backings ---
  /** Writing zeros (last zeroing rung) goes in chunks of one shared 1 MiB zero buffer. */
  zeroWriteChunkBytes: 1024 * 1024,
  /** cache(): readahead by reading into one scratch buffer of this size (bounded memory). */
  cacheChunkBytes: 1024 * 1024,
  /** blockStatus translates at most this many pieces per call, then answers a prefix. */
  blockStatusPiecesMax: 1024,
  /** readSparse asks block status for at most this many runs before treating the rest as data. */
  readSparseRunsMax: 256,
  /** A pool acquire that races with the last release of the same backing retries this often. */
  poolAcquireAttemptsMax: 8,
  /** A short read or write is continued at most this many times before failing with EIO. */
  shortIoRetriesMax: 64,
  /** NBD_INFO_BLOCK_SIZE maximum of an engine export: 32 MiB, the common NBD request cap. */
  exportBlockSizeMax: 32 * 1024 * 1024,
  /** NBD_INFO_BLOCK_SIZE preferred: one page (raised to the sector size of a device backing). */
  exportBlockSizePreferred: 4096,
  /** ExtentMap lookup buckets: at most 2^21 (8 MiB of Uint32) however many extents a map has. */
  extentMapBucketsMax: 2 ** 21,

  // --- nbd (src/nbd); reasons from research/reliability-anchors.md §5.1 ---
  /** Option payload cap: a 4096-byte name plus info requests, or several ~4 KiB meta-context
   * queries (nbdkit's test-long-name), fit easily; longer is a hard disconnect without reading. */
  nbdOptionLengthMax: 64 * 1024,
  /** Options per session before choosing an export (nbdkit allows 32): a client looping on
   * options is disconnected. Generous enough for nbdinfo --list over many exports. */
  nbdOptionCountMax: 64,
  /** proto.md "Strings": names and messages MUST be at most 4096 bytes. */
  nbdStringLengthMax: 4096,
  /** Client text echoed in error messages is cut to this (CVE-2020-10761). */
  nbdEchoLengthMax: 256,
  /** Largest READ/WRITE payload (advertised as the maximum block size): proto.md says 32 MiB
   * must never be treated as denial of service; the kernel sends up to 32 MiB. */
  nbdPayloadMax: 32 * 1024 * 1024,
  /** A WRITE above nbdPayloadMax up to this is read and discarded (EINVAL, stream in sync);
   * above it the server hard-disconnects. Discarding never buffers, so memory stays bounded. */
  nbdWriteDiscardMax: 64 * 1024 * 1024,
  /** Requests in flight per connection; at the cap the server stops reading the socket
   * (qemu uses 16, the kernel sends up to 128; fio qd32 benchmarks need headroom). */
  nbdInflightMax: 64,
  /** Bytes of WRITE payload plus READ replies in flight per connection before reading pauses. */
  nbdInflightBytesMax: 128 * 1024 * 1024,
  /** Concurrent connections per server (qemu QMP default 100). */
  nbdConnectionsMax: 256,
  /** The most `serve --max-connections` may allow: each connection costs a descriptor (two
   * with a data-path thread) and a thread; 4096 stays under the usual 8192-descriptor limit. */
  nbdConnectionsCeiling: 4096,
  /** Handshake deadline including TLS (qemu: 10 s, CVE-2024-7409 slowloris). */
  nbdHandshakeTimeoutMs: 10_000,
  /** Exports listed per NBD_OPT_LIST (nbdkit caps at 10 000). */
  nbdListExportsMax: 10_000,
  /** Descriptors per BLOCK_STATUS chunk (proto.md: SHOULD be at most 2^20; qemu uses 128 Ki). */
  nbdBlockStatusRunsMax: 128 * 1024,
  /** Sparse structured READs only from this length: below, one OFFSET_DATA chunk is cheaper. */
  nbdSparseReadMin: 64 * 1024,
  /** nbd/replies BufferPool: READ replies and WRITE payloads from this size to the max are
   * pooled in power-of-two classes (smaller ones come from Node's slab); at most BytesMax idle
   * bytes are kept per process (node-perf.md §8.3). nbdcopy alone keeps 64 MiB of 256 KiB
   * replies in flight (4 connections x 64 requests), so at 64 MiB the pool dropped buffers and
   * every later reply was a fresh allocation with its page faults; at 256 MiB nbdcopy to null:
   * took 0.48 against 0.65-0.67 server CPU s/GiB over TCP, 1247-1332 against 1000-1078 MiB/s. */
  nbdBufferPoolClassMin: 4096,
  nbdBufferPoolClassMax: 64 * 1024 * 1024,
  nbdBufferPoolBytesMax: 256 * 1024 * 1024,
  /** nbd/arena-receiver: a socket's first receive arena; request/reply traffic stays in it. */
  nbdRecvArenaMin: 256 * 1024,
  /** Room offered to each socket read at least (Node's own read size is 64 KiB). */
  nbdRecvReadMin: 64 * 1024,
  /** Pending bytes moved to an idle arena's front rather than starting a new arena. */
  nbdRecvCompactMax: 64 * 1024,
  /** A new arena holds this many frames of the length in progress, up to ArenaMax (a bigger
   * payload gets an arena of its own size). 4 MiB rather than 16: 1 MiB writes cost 0.51-0.53
   * against 0.56-0.65 server CPU s/GiB (less memory to fault in and keep in cache). */
  nbdRecvArenaFrames: 4,
  nbdRecvArenaMax: 4 * 1024 * 1024,
  /** Frames from this length end their last read at the frame's end (arena-receiver.ts). */
  nbdRecvExactMin: 256 * 1024,
  /** Room kept between frames beyond the last frame's length (its header and more). */
  nbdRecvFrameSlack: 64,
  /** Kernel send buffer of each accepted unix socket (nbd/user-buffer-socket.ts tuneSocket):
   * room for a few 1 MiB READ replies, so one write call takes a whole reply. */
  nbdSocketSendBufferBytes: 4 * 1024 * 1024,
  /** TCP: a frame with this much still to arrive sets SO_RCVLOWAT, to at most LowWaterMax
   * (nbd/user-buffer-socket.ts ReceiveLowWater). */
  nbdRecvLowWaterMin: 256 * 1024,
  nbdRecvLowWaterMax: 1024 * 1024,
  /** A fenced connection whose replies wait on its sender thread (the client is not reading)
   * is closed after this long, so a fence never waits on a client (connection.ts fence()). */
  nbdFenceSenderWaitMs: 2000,
  /** dataplane/datapath: forwarded bytes the JS side has not taken yet beyond which the thread
   * stops reading. The C code takes this and every other limit it shares with JS from
   * native/src/protocol.h, which scripts/gen-protocol.js writes from this file. */
  nbdDatapathForwardMax: 64 * 1024 * 1024,
  /** dataplane/datapath: a data-path thread's receive buffer to start with, and what it shrinks
   * back to once idle (native/src/dp-io.c); grown past it, the rest counts against the budget. */
  nbdDatapathRecvMin: 256 * 1024,
  /** dataplane/datapath: replies gathered into one send (a larger READ reply goes alone). */
  nbdDatapathSendBatch: 1024 * 1024,
  /** dataplane/datapath: READs of at least this many bytes are read by the connection's reader
   * thread while the data-path thread sends the reply before (native/src/dp-reader.c); smaller
   * ones cost less inline than the hand-off. Above nbdcopy's 256 KiB requests: they come over
   * four connections, whose threads already overlap each other's reads and sends (with the
   * reader they measured 0.92x of inline over TCP). */
  nbdDatapathReaderMin: 512 * 1024,
  /** dataplane/datapath: on TCP, a READ reply whose payload is at least this long goes out in two
   * sendmsg calls: the bytes before its payload with MSG_MORE, then the payload (as nbdkit sends
   * every reply). fio 1 MiB reads at qd8 over loopback TCP (Linux 6.18, 2 CPUs) measured 1.5x
   * the throughput of one sendmsg of both (0.19 against 0.26 server CPU seconds per GiB, and the
   * client slept half as often); 4 MiB 1.08x; 128 KiB to 512 KiB no difference beyond noise, so
   * smaller replies keep their one call. Unix sockets: no difference, so not there. */
  nbdDatapathCorkMin: 1024 * 1024,
  /** dataplane/datapath: READs handed to the reader thread and not yet sent, per connection (each
   * holds a reply buffer in the memory budget while it is in flight or not yet shrunk). */
  nbdDatapathReaderSlots: 3,
  /** dataplane/datapath: after its replies went out, a data-path thread whose client sent its
   * last requests within this long tries recv for up to this long before it sleeps (busy-poll; it
   * saves the sleep and wake-up of each round trip, the larger part of a small request's cost
   * here). `serve --busy-poll` sets it, 0 turns it off; at most nbdDatapathSpinMaxUs. */
  nbdDatapathSpinUs: 100,
  nbdDatapathSpinMaxUs: 10_000,
  /** dataplane/datapath: ...and only after a request of at most this many bytes
   * (native/src/dp-loop.c spin()) */
  nbdDatapathSpinLengthMax: 64 * 1024,
  /** dataplane/reply-sender: READs of at least this many bytes go out on the connection's sender
   * thread (smaller ones cost less inline than the hand-off to a thread and back). */
  nbdSenderReadMin: 64 * 1024,
  /** backing/fd-backing: reads up to this size try the page cache inline (preadv2 RWF_NOWAIT)
   * on the JS thread before the libuv pool; larger ones go to the pool. 1 MiB inline against
   * 64 KiB: 1 MiB reads cost 0.42 against 0.51 server CPU s/GiB over a unix socket, 0.55
   * against 0.72 over TCP (medians of 4, scripts/bench/profile.js); a 1 MiB copy holds the loop
   * about 0.1 ms. */
  backingReadInlineMax: 1024 * 1024,
  /**
   * backing: writer threads (one per written writable file, native/src/writer.c) alive at once;
   * files past it write through the libuv pool, one job per request.
   */
  backingWriterThreadsMax: 64,
  /** backing: pieces one batched write (pwriteBatch, a writer thread's job) takes; a request
   * of more goes piece by piece (native/src/pwrite-batch.c). */
  backingBatchPiecesMax: 4096,
  /** backing/file-backing: data runs mapped at open (2 lseeks each); a pool member has about one
   * per extent. Past this, unmapped ranges take the block-status path. */
  fileDataRunsLearnMax: 4096,
  /** backing/file-backing: files whose data runs are kept after close for the next open */
  fileRunsRememberedMax: 256,
  /** A zero run shorter than this is sent as data inside OFFSET_DATA rather than as a hole. */
  nbdSparseHoleMin: 4096,
  /** Grace for close(): requests in flight get this long to finish before sockets are cut. */
  nbdCloseGraceMs: 10_000,
  /** nbd/budget: bytes all connections of a server together may make it hold (READ replies,
   * WRITE payloads, queued reply frames) beyond each one's floor below. Requests past it wait,
   * the connections holding most first (budget.ts). 256 hostile connections stay under 512 MiB
   * of RSS with it (`npm run bench:abuse`); nbdcopy and fio at qd 32 use a few MiB each. */
  nbdBudgetBytesMax: 128 * 1024 * 1024,
  /** nbd/budget: what one connection may always hold, budget or not, so a client of small
   * requests is served while others hold the budget: 64 requests of 4 KiB. At most 64 MiB
   * over nbdBudgetBytesMax at nbdConnectionsMax connections. */
  nbdBudgetFloorBytes: 256 * 1024,
  /** nbd/budget: while requests wait, how often JS looks again at what the data-path threads
   * hold (they give bytes back without telling JS); native/src/dp-loop.c retries as often. */
  nbdBudgetRetryMs: 10,
  /** A connection holding nbdStallHeldMin bytes or more whose client neither sends nor takes
   * a byte this long is ended (ERR_NBD_STALLED), and what it held goes back to the budget. The
   * Linux kernel's nbd client gives up on a request after 30 s by default too. */
  nbdStallTimeoutMs: 30_000,
  nbdStallHeldMin: 1024 * 1024,
  /** How often the server looks for stalled connections. */
  nbdStallCheckMs: 1000,
  /** serve: how often PRAGMA data_version is polled for catalog changes (a no-op when nothing
   * committed); bounds how long a deleted VD's extents stay held by this server. */
  servePollMs: 100,
  /** ... the same for a catalog in RADOS, where each poll takes and gives back the database's
   * RADOS lock (two round trips) that every host's every access shares. */
  servePollCephMs: 500,
  /** serve: open exports are re-resolved at least this often even without commits (expiry is a
   * matter of time, not of commits). */
  serveTickMs: 1_000,
  /** serve --host (serve/host-lease.ts): the lease TTL unless --lease-ttl says otherwise. */
  hostLeaseTtlDefaultMs: 15_000,
  /** ... the longest --lease-ttl (a day); the shortest is one second. */
  hostLeaseTtlMaxMs: 86_400_000,
  /** ... heartbeats per TTL: a lease survives four lost or slow heartbeats in a row. */
  hostHeartbeatsPerTtl: 5,
  /** ... an open tries this many takeovers in a row (each follows a commit by another server). */
  hostTakeoverTriesMax: 3,
  /** ... how long the blocklist of a host taken over lasts (serve/rados-fence.ts): a week. */
  hostBlocklistSeconds: 7 * 24 * 3600,
  /** ... a heartbeat in flight past the TTL is waited for this much longer before the lease is
   * taken as lost: a catalog in RADOS whose lock holder died is locked for up to 30 s (Ceph's
   * cephsqlite_lock_renewal_timeout), and nobody can take over meanwhile. */
  hostCatalogWaitMs: 35_000,
  /** ... how long a takeover waits for a SIGKILLed server of this host to be gone. */
  hostKillWaitMs: 5_000,
  /** ... a server that lost its leases waits this long for its requests in flight to end (they
   * fail at once when it was blocklisted; an unreachable cluster would hold them forever). */
  hostLostDrainMs: 10_000,
  /** serve: heartbeat into the catalog's servers table (informational; liveness is pid based). */
  serveHeartbeatMs: 5_000,
  /** serve: at stop, the catalog writer thread gets this long to finish its last write and close
   * its connection before it is terminated; a write may wait catalogBusyTimeoutMs for the lock. */
  serveWriterCloseMs: 35_000,
  /** serve: libuv pool threads unless --threads says otherwise (node-perf.md: 1-2 beats 4 on
   * this 2-core machine: fewer threads batch completions). */
  serveThreadsDefault: 2,
  /** serve: the most libuv pool threads --threads takes (libuv's own cap is 1024). */
  serveThreadsMax: 128,
  // --- copy-on-write (src/engine/cow.ts) ---
  /** Reserve extents a VD takes from the catalog in one transaction: a fresh clone's first
   * writes then cost one catalog commit per this many copied extents, not one each. */
  cowReserveBatch: 16,
  /** Below this many reserve extents left, the next batch is fetched ahead of need. */
  cowReserveLow: 4,
  /** Passes over a write's shared extents (each copies them all); more than a couple means the
   * VD is being cloned again and again under the write. */
  cowBreakAttemptsMax: 4,
  /** A copy-on-write copies an extent through one buffer of this size. */
  cowCopyChunkBytes: 1024 * 1024,
  /** How long a remap waits for a data-path thread to take the new map before the thread is
   * handed off (every later request of it goes to JS): a client that takes no replies holds
   * its thread in a send. */
  cowThreadSwapWaitMs: 1_000,
} as const;
