'use strict';
// Runs every test/*.test.js with node's test runner: `node test/run.js` (npm test), the same
// on Node 18, 20 and 22. (`node --test DIR` runs nothing on Node >= 21, where arguments are
// globs; naming the files works everywhere.) Extra arguments go to `node --test` first,
// e.g. `node test/run.js --test-name-pattern=cancel`.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const files = fs.readdirSync(__dirname)
  .filter((f) => f.endsWith('.test.js'))
  .sort()
  .map((f) => path.join(__dirname, f));
const r = spawnSync(process.execPath, ['--test', ...process.argv.slice(2), ...files], { stdio: 'inherit' });
if (r.error) throw r.error;
process.exit(r.status === null ? 1 : r.status);
