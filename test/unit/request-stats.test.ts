/**
 * nbd/request-stats: the log2-µs buckets shared with the data-path thread (bucket 0 is [0, 2)
 * µs, bucket i [2^i, 2^(i+1)), the last open-ended), percentiles read from them, and what one
 * request adds to a connection's counts, with a thread's counts added from the 11-value stats
 * array, or only its request count from an addon that gives 7 values.
 */
import t from 'tap';
import {
  COMMAND_OTHER, RequestCounts, latencyBucketEndUs, latencyBucketOf, latencyQuantileUs,
} from '../../src/nbd/request-stats';
import { NBD_CMD, NBD_E } from '../../src/nbd/constants';
import { LATENCY_BUCKETS } from '../../src/sys/index';

t.test('a service time lands in the bucket of its whole microseconds\' log2', async (t) => {
  const cases: [number, number][] = [[0, 0], [0.5, 0], [1, 0], [1.99, 0], [2, 1], [3.99, 1],
    [4, 2], [1000, 9], [1024, 10], [1e6, 19], [2 ** 22, 22], [2 ** 23 - 1, 22], [2 ** 23, 23],
    [1e12, 23], [-5, 0], [NaN, 0]];
  for (const [micros, bucket] of cases) t.equal(latencyBucketOf(micros), bucket, `${micros} µs`);
  t.equal(LATENCY_BUCKETS, 24);
  t.equal(latencyBucketEndUs(0), 2);
  t.equal(latencyBucketEndUs(22), 2 ** 23);
  t.equal(latencyBucketEndUs(23), Infinity);
});

t.test('percentiles are the upper end of the bucket that holds the rank', async (t) => {
  const buckets = new Float64Array(LATENCY_BUCKETS);
  t.equal(latencyQuantileUs(buckets, 0.5), null, 'none');
  buckets[3] = 90; // [8, 16) µs
  buckets[10] = 9; // [1024, 2048)
  buckets[23] = 1; // 2^23 µs or more
  t.equal(latencyQuantileUs(buckets, 0.5), 16);
  t.equal(latencyQuantileUs(buckets, 0.9), 16, 'the 90th of 100 is still in bucket 3');
  t.equal(latencyQuantileUs(buckets, 0.91), 2048);
  t.equal(latencyQuantileUs(buckets, 0.99), 2048);
  t.equal(latencyQuantileUs(buckets, 1), 2 ** 23, 'the open bucket answers its lower end');
});

t.test('a request adds its command, bytes on success, errno on failure, and its time',
  async (t) => {
    const counts = new RequestCounts();
    counts.settled(NBD_CMD.WRITE, 4096, 0, performance.now());
    counts.settled(NBD_CMD.WRITE, 4096, NBD_E.ENOSPC, performance.now() - 3); // 3 ms
    counts.refused(NBD_CMD.READ, NBD_E.EINVAL);
    counts.refused(0x1234, NBD_E.EINVAL);
    t.equal(counts.requests[NBD_CMD.WRITE], 2);
    t.equal(counts.bytes[NBD_CMD.WRITE], 4096, 'only the write that succeeded');
    t.equal(counts.requests[NBD_CMD.READ], 1);
    t.equal(counts.requests[COMMAND_OTHER], 1, 'a type that names no command');
    t.equal(counts.errors[NBD_E.ENOSPC], 1);
    t.equal(counts.errors[NBD_E.EINVAL], 2);
    const write = counts.latencyOf(NBD_CMD.WRITE);
    t.equal(write.reduce((sum, value) => sum + value, 0), 2, 'both writes timed');
    t.equal(write[11], 1, '3 ms is in [2048, 4096) µs');
    t.ok(counts.latencySumSeconds[NBD_CMD.WRITE]! >= 0.003);
    t.equal(counts.latencyOf(NBD_CMD.READ).reduce((sum, value) => sum + value, 0), 0,
      'a refused request is not timed');
  });

t.test('a thread\'s counts add to READ and WRITE; a 7-value array adds its count only',
  async (t) => {
    const counts = new RequestCounts();
    const latency = new Float64Array(LATENCY_BUCKETS);
    latency[5] = 7;
    counts.addThread(Float64Array.from([10, 1, 2, 3, 4, 5, 6, 4, 16384, 6, 393216]), latency);
    t.equal(counts.threadRequests, 10);
    t.equal(counts.requests[NBD_CMD.READ], 4);
    t.equal(counts.bytes[NBD_CMD.READ], 16384);
    t.equal(counts.requests[NBD_CMD.WRITE], 6);
    t.equal(counts.bytes[NBD_CMD.WRITE], 393216);
    counts.addThread(Float64Array.from([5, 1, 2, 3, 4, 5, 6]), null);
    t.equal(counts.threadRequests, 15);
    t.equal(counts.requests[NBD_CMD.READ], 4, 'no split without the 11 values');
    counts.settled(NBD_CMD.FLUSH, 0, 0, performance.now());
    const all = counts.allLatency();
    t.equal(all[5], 7, 'the thread\'s buckets');
    t.equal(all.reduce((sum, value) => sum + value, 0), 8, 'and the JS path\'s');
    const sum = new RequestCounts();
    sum.add(counts);
    sum.add(counts);
    t.equal(sum.threadRequests, 30);
    t.equal(sum.threadLatency[5], 14);
    t.equal(sum.requests[NBD_CMD.FLUSH], 2);
  });
