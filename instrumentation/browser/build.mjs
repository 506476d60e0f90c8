// Bundles src/ and the pinned OpenTelemetry packages into ../src/jobtrail/flask/static/jobtrail.js
// (the Python package serves it; JOBTRAIL_KIT_OUT overrides the output for the rebuild test), one IIFE exposing
// `window.jobtrail`. The output is deterministic: tests/browser/test_bundle.py rebuilds it and
// compares it byte for byte with the committed file.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

await build({
  entryPoints: [here('src/index.js')],
  outfile: process.env.JOBTRAIL_KIT_OUT ?? here('../src/jobtrail/flask/static/jobtrail.js'),
  bundle: true,
  format: 'iife',
  globalName: 'jobtrail',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  legalComments: 'none',
  charset: 'utf8',
  banner: {
    js: '/* jobtrail browser kit (Apache-2.0), bundling OpenTelemetry JS (Apache-2.0). Built by build.mjs; do not edit. */',
  },
  logLevel: 'warning',
});
