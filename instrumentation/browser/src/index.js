// jobtrail browser kit: one user action, one trace.
//
// Browsers have no async context, and this kit does not ship zone.js. So `action(label, fn)`
// hands `fn` a `fetch` bound to the action's context: every request made through it is a child
// of the action span and carries `traceparent` and `X-Request-ID`, however many `await`s come
// before it. A bare `fetch` called after the first `await` inside `fn` starts a trace of its own.
// `X-Request-ID` goes exactly where `traceparent` goes: this origin and `propagateTraceHeaderCorsUrls`.
import { context, createContextKey, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { FetchInstrumentation } from '@opentelemetry/instrumentation-fetch';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, shouldPropagateTraceHeaders, WebTracerProvider } from '@opentelemetry/sdk-trace-web';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

import {
  ATTR_JOB_STATE,
  ATTR_REQUEST_ID,
  ATTR_UI_ACTION,
  ATTR_UI_RESULT_MESSAGE,
  ATTR_UI_RESULT_STATE,
  ATTR_UI_SCREEN,
  EVENT_UI_RESULT,
  JOB_STATE_HEADER,
  REQUEST_ID_HEADER,
  UI_STATE_FAILED,
  UI_STATE_RUNNING,
  UI_STATE_SUCCEEDED,
} from './conventions.js';
import { pollJob } from './poll.js';
import { newRequestId } from './requestId.js';

export { pollJob };

const TRACER_NAME = 'jobtrail-browser';
const UI_STATES = [UI_STATE_RUNNING, UI_STATE_SUCCEEDED, UI_STATE_FAILED];
const REQUEST_ID_KEY = createContextKey('jobtrail request id');

let kit = null;
let latestAction = null;

/**
 * Start tracing the page: spans go as OTLP/JSON to `tracesUrl` (same-origin intake by default).
 * `propagateTraceHeaderCorsUrls` lists other origins that may receive `traceparent`.
 */
export function init({ serviceName, screen, tracesUrl = '/v1/traces', propagateTraceHeaderCorsUrls = [], exportDelayMs = 1000 }) {
  if (kit) throw new Error('jobtrail.init: already initialised');
  if (!serviceName || !screen) throw new TypeError('jobtrail.init: serviceName and screen are required');
  const exporter = new OTLPTraceExporter({ url: new URL(tracesUrl, globalThis.location.href).href });
  const provider = new WebTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: exportDelayMs })],
  });
  provider.register();
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new FetchInstrumentation({
        propagateTraceHeaderCorsUrls,
        requestHook: (span) => {
          const requestId = context.active().getValue(REQUEST_ID_KEY);
          if (requestId) span.setAttribute(ATTR_REQUEST_ID, requestId);
        },
        applyCustomAttributesOnSpan: (span, request, response) => {
          const jobState = response instanceof Response ? response.headers.get(JOB_STATE_HEADER) : null;
          if (jobState) span.setAttribute(ATTR_JOB_STATE, jobState);
        },
      }),
    ],
  });
  kit = { provider, screen, propagateTraceHeaderCorsUrls, tracer: provider.getTracer(TRACER_NAME) };
}

function requireInit(caller) {
  if (!kit) throw new Error(`jobtrail.${caller}: call jobtrail.init first`);
  return kit;
}

/** The URL a fetch will request, as the fetch instrumentation sees it. */
function urlOf(input) {
  return new URL(input instanceof Request ? input.url : String(input), globalThis.location.href).href;
}

/**
 * The caller's request init with this action's request id among its headers (taken from the init,
 * else from a Request), for the URLs that also get `traceparent`; other origins get the init as it is.
 */
function withRequestId(input, requestInit, requestId, corsUrls) {
  if (!shouldPropagateTraceHeaders(urlOf(input), corsUrls)) return requestInit;
  const headers = new Headers(requestInit?.headers ?? (input instanceof Request ? input.headers : undefined));
  headers.set(REQUEST_ID_HEADER, requestId);
  return { ...requestInit, headers };
}

function recordResult(started, message, state) {
  if (!UI_STATES.includes(state)) {
    throw new TypeError(`jobtrail.result: state must be one of ${UI_STATES.join(', ')}, got ${state}`);
  }
  if (started.ended) {
    // An ended span drops events without a word: say so instead of losing what the user saw.
    throw new Error(`jobtrail.result: the action "${started.label}" has ended; record its result inside its fn`);
  }
  started.span.addEvent(EVENT_UI_RESULT, { [ATTR_UI_RESULT_MESSAGE]: String(message), [ATTR_UI_RESULT_STATE]: state });
  if (state === UI_STATE_FAILED) started.span.setStatus({ code: SpanStatusCode.ERROR, message: String(message) });
}

/**
 * Run one user action as a new trace. `fn` receives `{fetch, requestId, span, result}`: `fetch`
 * is bound to the action (use it for every request of the action), `result(message, state)`
 * records what the user saw on this action. The span ends when `fn`'s promise settles.
 */
export function action(label, fn) {
  const { tracer, screen, propagateTraceHeaderCorsUrls } = requireInit('action');
  const requestId = newRequestId();
  const span = tracer.startSpan(
    label,
    {
      kind: SpanKind.INTERNAL,
      attributes: { [ATTR_UI_SCREEN]: screen, [ATTR_UI_ACTION]: label, [ATTR_REQUEST_ID]: requestId },
    },
    ROOT_CONTEXT,
  );
  const started = { label, span, ended: false };
  latestAction = started;
  const actionContext = trace.setSpan(ROOT_CONTEXT.setValue(REQUEST_ID_KEY, requestId), span);
  const boundFetch = (input, requestInit) =>
    context.with(actionContext, () =>
      globalThis.fetch(input, withRequestId(input, requestInit, requestId, propagateTraceHeaderCorsUrls)),
    );
  const handed = {
    fetch: boundFetch,
    requestId,
    span,
    result: (message, state) => recordResult(started, message, state),
  };
  let outcome;
  try {
    outcome = Promise.resolve(context.with(actionContext, () => fn(handed)));
  } catch (error) {
    outcome = Promise.reject(error);
  }
  const end = () => {
    started.ended = true;
    span.end();
  };
  return outcome.then(
    (value) => {
      end();
      return value;
    },
    (error) => {
      span.recordException(error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: String(error?.message ?? error) });
      end();
      throw error;
    },
  );
}

/** Record what the user saw (`running|succeeded|failed`) on the latest action, while it runs. */
export function result(message, state) {
  requireInit('result');
  if (!latestAction) throw new Error('jobtrail.result: no action has started');
  recordResult(latestAction, message, state);
}

/** Export every finished span now (the kit also flushes by itself when the page is hidden). */
export function flush() {
  return requireInit('flush').provider.forceFlush();
}
