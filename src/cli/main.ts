#!/usr/bin/env node
// placeholder; replaced by the CLI
process.stdout.write('xvd\n');
