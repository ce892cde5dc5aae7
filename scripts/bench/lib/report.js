// Turns the cells of one run into the printed table (rows = job x transport; one column per
// server with "value [server CPU s/GiB]"; xvd / best peer and fragmented / single, as a ratio of
// the medians and as the median of the ratios paired round by round; with the --base servers in
// the columns, also xvd / xvd-base and xvd-frag / xvd-frag-base, paired by round) and into a
// gnuplot pngcairo chart of grouped bars normalized to the best peer = 1.0.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const proc = require('./proc');
const rounds = require('./rounds');

function formatValue(cell) {
  if (!cell || cell.error || !(cell.value > 0)) return 'n/a';
  const value = cell.unit === 'IOPS'
    ? `${(cell.value / 1000).toFixed(1)}k`
    : `${Math.round(cell.value)}`;
  const cpu = cell.cpuSecondsPerGiB;
  return cpu === null || cpu === undefined ? value : `${value} [${cpu.toFixed(2)}]`;
}

function ratio(a, b) {
  if (!a || !b || a.error || b.error || !(a.value > 0) || !(b.value > 0)) return null;
  return a.value / b.value;
}

function formatRatio(value) {
  return value === null ? 'n/a' : `${value.toFixed(2)}x`;
}

/** "1.22x (1.19-1.40)": median and quartiles of the paired ratios; n/a with fewer than 2 rounds. */
function formatPaired(paired) {
  if (paired === null) return 'n/a';
  return `${paired.median.toFixed(2)}x (${paired.low.toFixed(2)}-${paired.high.toFixed(2)})`;
}

/** rows: [{ key, label, unit, cells: { server: cell } }], with best peer and ratios filled in. */
function buildRows(run, peers) {
  return run.rows.map((row) => {
    const peerCells = peers.map((name) => [name, row.cells[name]])
      .filter(([, cell]) => cell && !cell.error && cell.value > 0);
    peerCells.sort((a, b) => b[1].value - a[1].value);
    const best = peerCells[0] || null;
    return {
      ...row,
      bestPeer: best && best[0],
      xvdOverBest: best ? ratio(row.cells.xvd, best[1]) : null,
      fragOverSingle: ratio(row.cells['xvd-frag'], row.cells.xvd),
      xvdOverBestPaired: best ? rounds.pairedRatio(row.cells.xvd, best[1]) : null,
      fragOverSinglePaired: rounds.pairedRatio(row.cells['xvd-frag'], row.cells.xvd),
      xvdOverBasePaired: rounds.pairedRatio(row.cells.xvd, row.cells['xvd-base']),
      fragOverBasePaired: rounds.pairedRatio(row.cells['xvd-frag'], row.cells['xvd-frag-base']),
    };
  });
}

/** The rows whose paired ratio `field` (e.g. 'xvdOverBasePaired') has a median below `floor`. */
function fallenRows(rows, field, floor) {
  return rows.filter((row) => row[field] && row[field].median < floor);
}

/** The paired A/B columns shown: only for the base servers among the columns. */
const BASE_COLUMNS = [
  { server: 'xvd-base', title: 'xvd/base paired', field: 'xvdOverBasePaired' },
  { server: 'xvd-frag-base', title: 'frag/base paired', field: 'fragOverBasePaired' },
];

function renderTable(rows, columns) {
  const baseColumns = BASE_COLUMNS.filter((column) => columns.includes(column.server));
  const header = ['job', 'transport', 'unit', ...columns, 'best peer', 'xvd/best', 'frag/xvd',
    'xvd/best paired', 'frag/xvd paired', ...baseColumns.map((column) => column.title)];
  const lines = rows.map((row) => [
    row.label, row.transport, row.unit,
    ...columns.map((name) => formatValue(row.cells[name])),
    row.bestPeer || 'n/a', formatRatio(row.xvdOverBest), formatRatio(row.fragOverSingle),
    formatPaired(row.xvdOverBestPaired ?? null), formatPaired(row.fragOverSinglePaired ?? null),
    ...baseColumns.map((column) => formatPaired(row[column.field] ?? null)),
  ]);
  const widths = header.map((title, index) =>
    Math.max(title.length, ...lines.map((line) => line[index].length)));
  const format = (cells) =>
    `| ${cells.map((cell, index) => cell.padEnd(widths[index])).join(' | ')} |`;
  return [
    format(header),
    `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`,
    ...lines.map(format),
  ].join('\n');
}

async function drawChart(rows, serverNames, title, pngPath, workDir) {
  const dataPath = path.join(workDir, 'chart.tsv');
  const scriptPath = path.join(workDir, 'chart.gp');
  const lines = [['row', ...serverNames].join('\t')];
  for (const row of rows) {
    const best = row.bestPeer ? row.cells[row.bestPeer].value : null;
    const values = serverNames.map((name) => {
      const cell = row.cells[name];
      if (!best || !cell || cell.error || !(cell.value > 0)) return '?';
      return (cell.value / best).toFixed(4);
    });
    lines.push([`${row.label} ${row.transport}`, ...values].join('\t'));
  }
  fs.writeFileSync(dataPath, `${lines.join('\n')}\n`);
  const quote = (text) => `"${String(text).replace(/["\\]/g, '')}"`;
  fs.writeFileSync(scriptPath, [
    'set terminal pngcairo size 1500,650 font "Sans,10"',
    `set output ${quote(pngPath)}`,
    `set title ${quote(title)}`,
    'set style data histogram',
    'set style histogram clustered gap 1',
    'set style fill solid 0.85 border -1',
    'set boxwidth 0.9',
    'set datafile separator "\\t"',
    'set datafile missing "?"',
    'set yrange [0:*]',
    'set offsets 0, 0, graph 0.08, 0',
    'set ylabel "throughput / best of nbdkit, qemu-nbd, nbd-server"',
    'set xtics rotate by -30 scale 0',
    'set key outside top center horizontal',
    'set grid ytics',
    'set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5',
    `plot for [i=2:${serverNames.length + 1}] ${quote(dataPath)} ` +
      'using i:xtic(1) title columnheader(i)',
    '',
  ].join('\n'));
  const result = await proc.run('gnuplot', [scriptPath], { timeoutMs: 30000 });
  if (result.code !== 0) throw new Error(`gnuplot: ${proc.tail(result.stderr, 3)}`);
}

module.exports = { buildRows, drawChart, fallenRows, renderTable };
