import { STATE_NOT_FOUND, TERMINAL_STATES } from './conventions.js';

// Polling stops on a terminal state or when the job is unknown (404 `not_found`): nothing changes after either.
const STOP_STATES = [...TERMINAL_STATES, STATE_NOT_FOUND];
// Answers worth asking again: the server or a proxy may recover, or asked us to slow down.
const RETRYABLE_STATUSES = [408, 429, 500, 502, 503, 504];

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** One status answer; null when asking again may help (network error, 408, 429, 5xx). */
async function readStatus(doFetch, statusUrl, signal) {
  let response;
  let status;
  try {
    response = await doFetch(statusUrl, { cache: 'no-store', headers: { Accept: 'application/json' }, signal });
    if (RETRYABLE_STATUSES.includes(response.status)) return null;
    status = await response.json();
  } catch (error) {
    if (signal?.aborted) throw error;
    // A network failure (TypeError) may pass; a body that is not JSON (SyntaxError) will not.
    if (!(error instanceof SyntaxError)) return null;
  }
  if ((response.ok || response.status === 404) && typeof status?.state === 'string') return status;
  throw new Error(`jobtrail.pollJob: ${statusUrl} answered ${response.status} without a job status`);
}

/**
 * Poll a job's status URL until it reaches a terminal state; resolve with the final status JSON.
 *
 * Each poll is a fetch span (pass the action's `fetch` to make it a child of the action); the
 * fetch instrumentation records the state the poll returned (ATTR_JOB_STATE). The wait
 * between polls doubles from `initialDelayMs` up to `maxDelayMs` and polling never stops on a count:
 * pass an AbortSignal as `signal` to give up.
 */
export async function pollJob(statusUrl, options = {}) {
  const { fetch: doFetch = globalThis.fetch, onState, initialDelayMs = 250, maxDelayMs = 4000, signal } = options;
  let delayMs = initialDelayMs;
  let lastState;
  for (;;) {
    signal?.throwIfAborted();
    const status = await readStatus(doFetch, statusUrl, signal);
    if (status && status.state !== lastState) {
      lastState = status.state;
      onState?.(status);
    }
    if (status && STOP_STATES.includes(status.state)) return status;
    await sleep(delayMs, signal);
    delayMs = Math.min(delayMs * 2, maxDelayMs);
  }
}
