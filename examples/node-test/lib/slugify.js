#!/usr/bin/env node
'use strict';
// Title -> URL slug. No dependencies: the runner image has node but no npm.

const DEFAULT_MAX = 80;

/**
 * Returns the slug of `title`: lowercase ASCII letters and digits joined by single hyphens,
 * at most `max` characters, never starting or ending with a hyphen.
 */
function slugify(title, { max = DEFAULT_MAX } = {}) {
  if (typeof title !== 'string') {
    throw new TypeError('title must be a string');
  }
  if (!Number.isInteger(max) || max < 1) {
    throw new RangeError('max must be a positive integer');
  }
  const slug = title
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '') // strip combining accents: é -> e
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return slug.slice(0, max).replace(/-+$/, '');
}

function main(argv) {
  let max = DEFAULT_MAX;
  const args = [...argv];
  if (args[0] === '--max') {
    max = Number(args[1]);
    args.splice(0, 2);
  }
  if (args.length !== 1) {
    process.stderr.write('usage: slugify.js [--max N] TITLE\n');
    return 2;
  }
  process.stdout.write(slugify(args[0], { max }) + '\n');
  return 0;
}

module.exports = { slugify, main };

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}
