#!/usr/bin/env node
// Child script for lib/xvd.js: fragments a freshly formatted two-member pool in one process,
// through the CLI's own catalog port (dist/cli/adapter.js, the seam every `xvd` command uses), so
// that the few thousand creates and deletes cost milliseconds each instead of a process start.
// usage: node frag-fill.js REPO CATALOG VD_BYTES MEMBER...
// Fills each member in turn with one-extent VDs (`onPath`), deletes every other one, creates the
// VD of VD_BYTES into the holes and prints {"id": N, "small": COUNT} on stdout.
'use strict';
const path = require('node:path');

const FILL_MAX = 65536;

async function main() {
  const [repo, catalog, vdBytesText, ...members] = process.argv.slice(2);
  const { openCatalogPort } = require(path.join(repo, 'dist', 'cli', 'adapter.js'));
  const port = openCatalogPort(catalog);
  try {
    const extentBytes = Object.fromEntries(port.members().map((m) => [m.path, m.extentSizeBytes]));
    const ids = [];
    for (const member of members) {
      const sizeBytes = extentBytes[member] || Object.values(extentBytes)[0];
      const idsMember = [];
      for (let count = 0; count < FILL_MAX; count += 1) {
        try {
          idsMember.push(port.create({
            sizeBytes, expirySeconds: 0, name: null, onPath: member, isZeroing: false,
          }));
        } catch {
          break;
        }
      }
      ids.push(...idsMember.sort((a, b) => a - b));
    }
    ids.forEach((id, index) => {
      if (index % 2 === 0) port.delete(id);
    });
    const id = port.create({
      sizeBytes: Number(vdBytesText), expirySeconds: 0, name: 'bench-fragmented', onPath: null,
      isZeroing: true,
    });
    await port.zeroPending();
    process.stdout.write(`${JSON.stringify({ id, small: ids.length })}\n`);
  } finally {
    port.close();
  }
}

main().catch((error) => {
  process.stderr.write(`frag-fill: ${error.message}\n`);
  process.exitCode = 1;
});
