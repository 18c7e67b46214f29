#!/usr/bin/env node
// The old Lambda's thumbnail pipeline, kept as the reference the Pillow port is measured against.
//
//   node thumbnail.js [--width 400] [--height 400] [--quality 80] [--background '#ffffff']
//                     [--repeat 1] [--out-dir DIR] IMAGE...
//   node thumbnail.js --serve [--width ...] [--out-dir DIR]
//
// Prints one JSON line per image: {path, width, height, bytes, ms: [one per repetition]}, or
// {path, error} for an image sharp cannot read (the prebuilt libvips has no HEVC, so no HEIC).
// Timing covers sharp alone (buffer in, JPEG buffer out), not reading the file or node start-up.
//
// With --serve it stays up, warm, for a caller that interleaves sharp's runs with its own: it
// reads one image path per line on stdin, makes that image's thumbnail once, and answers with
// one JSON line as above (ms with one entry); the file is read once and kept in memory, and the
// thumbnail is written to --out-dir each time. It ends when stdin closes.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { parseArgs } = require('node:util');
const sharp = require('sharp');

const { values: opts, positionals: images } = parseArgs({
  allowPositionals: true,
  options: {
    width: { type: 'string', default: '400' },
    height: { type: 'string', default: '400' },
    quality: { type: 'string', default: '80' },
    background: { type: 'string', default: '#ffffff' },
    repeat: { type: 'string', default: '1' },
    'out-dir': { type: 'string' },
    serve: { type: 'boolean', default: false },
  },
});

// Every repetition must decode again, as the Lambda did once per upload.
sharp.cache(false);

function thumbnail (input) {
  return sharp(input)
    .rotate()
    .resize(Number(opts.width), Number(opts.height), { fit: 'inside', withoutEnlargement: true })
    .flatten({ background: opts.background })
    .jpeg({ quality: Number(opts.quality) })
    .toBuffer({ resolveWithObject: true });
}

function save (image, data) {
  if (opts['out-dir']) {
    const name = path.basename(image, path.extname(image)) + '.jpg';
    fs.writeFileSync(path.join(opts['out-dir'], name), data);
  }
}

async function serve () {
  const inputs = new Map();
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const image of lines) {
    if (!image) continue;
    let answer;
    try {
      if (!inputs.has(image)) inputs.set(image, fs.readFileSync(image));
      const start = process.hrtime.bigint();
      const result = await thumbnail(inputs.get(image));
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      save(image, result.data);
      const { width, height, size: bytes } = result.info;
      answer = { path: image, width, height, bytes, ms: [ms] };
    } catch (err) {
      answer = { path: image, error: err.message };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  }
}

async function main () {
  for (const image of images) {
    const input = fs.readFileSync(image);
    const ms = [];
    let result;
    try {
      for (let i = 0; i < Number(opts.repeat); i++) {
        const start = process.hrtime.bigint();
        result = await thumbnail(input);
        ms.push(Number(process.hrtime.bigint() - start) / 1e6);
      }
    } catch (err) {
      console.log(JSON.stringify({ path: image, error: err.message }));
      continue;
    }
    save(image, result.data);
    const { width, height, size: bytes } = result.info;
    console.log(JSON.stringify({ path: image, width, height, bytes, ms }));
  }
}

(opts.serve ? serve() : main()).catch((err) => {
  console.error(err);
  process.exit(1);
});
