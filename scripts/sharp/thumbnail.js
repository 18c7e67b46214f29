#!/usr/bin/env node
// The old Lambda's thumbnail pipeline, kept as the reference the Pillow port is measured against.
//
//   node thumbnail.js [--width 400] [--height 400] [--quality 80] [--background '#ffffff']
//                     [--repeat 1] [--out-dir DIR] IMAGE...
//
// Prints one JSON line per image: {path, width, height, bytes, ms: [one per repetition]}, or
// {path, error} for an image sharp cannot read (the prebuilt libvips has no HEVC, so no HEIC).
// Timing covers sharp alone (buffer in, JPEG buffer out), not reading the file or node start-up.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
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
    if (opts['out-dir']) {
      const name = path.basename(image, path.extname(image)) + '.jpg';
      fs.writeFileSync(path.join(opts['out-dir'], name), result.data);
    }
    const { width, height, size: bytes } = result.info;
    console.log(JSON.stringify({ path: image, width, height, bytes, ms }));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
