// Sends spans to an OTLP/HTTP endpoint with the official OpenTelemetry JS exporter, as a Node service would.
// Usage: node send.js URL json|proto gzip|none SPANS BATCH PREFIX
// Prints one JSON line {"exported": n, "failed": n, "errors": [...]}; exit code 0 only when every batch succeeded.
'use strict';

const { BasicTracerProvider, SimpleSpanProcessor, InMemorySpanExporter } = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { ExportResultCode } = require('@opentelemetry/core');

const [url, protocol, compression, spanCount, batchSize, prefix] = process.argv.slice(2);
const { OTLPTraceExporter } = require(
  protocol === 'proto' ? '@opentelemetry/exporter-trace-otlp-proto' : '@opentelemetry/exporter-trace-otlp-http'
);

async function main() {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': `node-${protocol}-${compression}` }),
    spanProcessors: [new SimpleSpanProcessor(memory)],
  });
  const tracer = provider.getTracer('jobtrail-tests');
  for (let index = 0; index < Number(spanCount); index += 1) {
    const span = tracer.startSpan(`${prefix} ${index}`, { attributes: { 'test.index': index } });
    span.end();
  }
  const spans = memory.getFinishedSpans();
  const exporter = new OTLPTraceExporter({ url, compression, timeoutMillis: 30000 });
  const summary = { exported: 0, failed: 0, errors: [] };
  for (let start = 0; start < spans.length; start += Number(batchSize)) {
    const batch = spans.slice(start, start + Number(batchSize));
    const result = await new Promise((resolve) => exporter.export(batch, resolve));
    if (result.code === ExportResultCode.SUCCESS) {
      summary.exported += batch.length;
    } else {
      summary.failed += batch.length;
      summary.errors.push(String(result.error && result.error.message));
    }
  }
  await exporter.shutdown();
  await provider.shutdown();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exitCode = summary.failed === 0 ? 0 : 1;
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exitCode = 2;
});
