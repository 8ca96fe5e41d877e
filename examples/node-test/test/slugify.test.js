'use strict';
// Tests for lib/slugify.js with Node's built-in runner: `node --test` from the skill root.

const test = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const { slugify, main } = require('../lib/slugify');

test('lowercases and joins words with single hyphens', () => {
  assert.strictEqual(slugify('Hello   World'), 'hello-world');
});

test('strips accents', () => {
  assert.strictEqual(slugify('Crème Brûlée Recipes'), 'creme-brulee-recipes');
});

test('drops punctuation at both ends', () => {
  assert.strictEqual(slugify('  --Hello, World!--  '), 'hello-world');
});

test('cuts to max without a trailing hyphen', () => {
  assert.strictEqual(slugify('Hello World', { max: 6 }), 'hello');
});

test('a title with no letters or digits gives an empty slug', () => {
  assert.strictEqual(slugify('!!!'), '');
});

test('refuses bad input', () => {
  assert.throws(() => slugify(42), TypeError);
  assert.throws(() => slugify('x', { max: 0 }), RangeError);
});

test('main returns 2 on a usage error', () => {
  const saved = process.stderr.write;
  process.stderr.write = () => true; // keep the test output clean
  try {
    assert.strictEqual(main([]), 2);
  } finally {
    process.stderr.write = saved;
  }
});

test('runs as a program', () => {
  const script = path.join(__dirname, '..', 'lib', 'slugify.js');
  const out = execFileSync(process.execPath, [script, '--max', '5', 'Hello World'], {
    encoding: 'utf8',
    timeout: 10000,
  });
  assert.strictEqual(out, 'hello\n');
});
