// Rounds for the comparison. A round runs every (transport, job) group once, and within a group
// every server in turn (one cell each), starting one place further along the server list for
// each round and each group: a load spike or a writeback burst then falls on different servers'
// cells in different rounds instead of on one server's block. The table shows, per cell, the
// median over its rounds; every round's cell is kept (`rounds`) for the JSON and for the ratios
// paired round by round.
'use strict';
const assert = require('node:assert');

/** The names rotated left by `offset` places: [b, c, a] for ([a, b, c], 1). */
function rotate(names, offset) {
  assert(Number.isSafeInteger(offset));
  assert(offset >= 0);
  if (names.length === 0) return [];
  const start = offset % names.length;
  return [...names.slice(start), ...names.slice(0, start)];
}

/** The median of a non-empty list (the mean of the two middle values for an even count). */
function median(values) {
  assert(values.length > 0);
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

const isMeasured = (cell) => cell.value > 0;

/**
 * One table cell from its rounds: median value and median server CPU per GiB over the rounds
 * that measured something, and spread = (max - min) / median of those values. A cell whose every
 * round failed is { error } with the last reason.
 */
function summarizeRounds(cells) {
  assert(cells.length > 0);
  const measured = cells.filter(isMeasured);
  const failedRounds = cells.length - measured.length;
  if (measured.length === 0) {
    const reasons = cells.map((cell) => cell.error).filter(Boolean);
    return { error: reasons[reasons.length - 1] || 'no figure', failedRounds, rounds: cells };
  }
  const values = measured.map((cell) => cell.value);
  const valueMedian = median(values);
  const cpus = measured.map((cell) => cell.cpuSecondsPerGiB)
    .filter((cpu) => cpu !== null && cpu !== undefined);
  return {
    value: valueMedian,
    unit: measured[0].unit,
    cpuSecondsPerGiB: cpus.length === 0 ? null : median(cpus),
    spread: measured.length < 2 ? null : (Math.max(...values) - Math.min(...values)) / valueMedian,
    failedRounds,
    rounds: cells,
  };
}

/**
 * The ratios a/b of two cells' rounds, paired by round (cells of one round ran minutes apart at
 * most, so a load swing that lasts longer hits both), sorted; rounds either side failed are left
 * out. Null when fewer than two rounds pair up. Returns { median, low, high, count }, low and high
 * being the lower and upper quartiles (for 5 or 7 rounds: the second lowest and second highest).
 */
function pairedRatio(a, b) {
  if (!a || !b || !Array.isArray(a.rounds) || !Array.isArray(b.rounds)) return null;
  const byRound = new Map(b.rounds.filter(isMeasured).map((cell) => [cell.round, cell.value]));
  const ratios = a.rounds.filter((cell) => isMeasured(cell) && byRound.has(cell.round))
    .map((cell) => cell.value / byRound.get(cell.round))
    .sort((x, y) => x - y);
  if (ratios.length < 2) return null;
  const last = ratios.length - 1;
  return {
    median: median(ratios),
    low: ratios[Math.floor(last / 4)],
    high: ratios[Math.ceil((3 * last) / 4)],
    count: ratios.length,
  };
}

module.exports = { median, pairedRatio, rotate, summarizeRounds };
