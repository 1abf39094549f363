'use strict';
// The package as npm ships it: `npm pack` contents, and a `--strict` TypeScript file importing
// `houndpool` and `houndpool/tracehound` from the packed tarball (typescript and @types/node are
// devDependencies: `npm install` in clients/node first).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');

const pkgDir = path.resolve(__dirname, '..');
const SHIPPED = ['README.md', 'houndpool.d.ts', 'houndpool.js', 'package.json', 'tracehound.d.ts', 'tracehound.js'];

function npm(args, cwd) {
  return execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

test('npm pack ships the code, its .d.ts files and the README', () => {
  const out = JSON.parse(npm(['pack', '--dry-run', '--json'], pkgDir));
  assert.deepEqual(out[0].files.map((f) => f.path).sort(), SHIPPED);
  const pkg = require('../package.json');
  assert.equal(pkg.private, undefined);
  assert.equal(pkg.exports['.'].types, './houndpool.d.ts');
  assert.equal(pkg.exports['./tracehound'].types, './tracehound.d.ts');
});

test('the exports map resolves both entry points', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'houndpool-exports-'));
  try {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(pkgDir, path.join(dir, 'node_modules', 'houndpool'));
    const script = "const h = require('houndpool'); const t = require('houndpool/tracehound');"
      + "process.stdout.write([typeof h.HoundClient, typeof h.HoundError, typeof t.createHoundPool].join(','));";
    const out = execFileSync(process.execPath, ['-e', script], { cwd: dir, encoding: 'utf8' });
    assert.equal(out, 'function,function,function');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a --strict TypeScript file importing houndpool and houndpool/tracehound type-checks', () => {
  let tsc;
  try {
    tsc = require.resolve('typescript/bin/tsc', { paths: [pkgDir] });
  } catch (e) {
    assert.fail('typescript is not installed: run `npm install` in clients/node (scripts/test.sh does)');
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'houndpool-types-'));
  try {
    // Install what `npm pack` ships, as a user's project would see it.
    const packed = JSON.parse(npm(['pack', '--json', '--pack-destination', dir], pkgDir))[0].filename;
    const into = path.join(dir, 'node_modules', 'houndpool');
    fs.mkdirSync(into, { recursive: true });
    execFileSync('tar', ['-xzf', path.join(dir, packed), '-C', into, '--strip-components=1']);
    fs.symlinkSync(path.join(pkgDir, 'node_modules', '@types'), path.join(dir, 'node_modules', '@types'));
    fs.copyFileSync(path.join(__dirname, 'types', 'check.ts'), path.join(dir, 'check.ts'));
    fs.copyFileSync(path.join(__dirname, 'types', 'wrong.ts'), path.join(dir, 'wrong.ts'));
    const run = (file, module, resolution) => {
      const args = [tsc, '--strict', '--noEmit', '--target', 'es2022', '--module', module,
        '--moduleResolution', resolution, '--types', 'node', file];
      const r = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8' });
      return { status: r.status, out: `${r.stdout}${r.stderr}` };
    };
    for (const [module, resolution] of [['node16', 'node16'], ['commonjs', 'node10'], ['esnext', 'bundler']]) {
      const ok = run('check.ts', module, resolution);
      assert.equal(ok.status, 0, `check.ts with ${resolution}:\n${ok.out}`);
      const bad = run('wrong.ts', module, resolution);
      assert.notEqual(bad.status, 0, `wrong.ts type-checked with ${resolution}`);
      assert.match(bad.out, /TS2345.*bigint/s);
      assert.match(bad.out, /TS2322.*"queue"/s);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
