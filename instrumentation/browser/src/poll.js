import { STATE_NOT_FOUND, TERMINAL_STATES } from './conventions.js';

// Polling stops on a terminal state or when the job is unknown (404 `not_found`): nothing changes after either.
const STOP_STATES = [...TERMINAL_STATES, STATE_NOT_FOUND];
// Answers worth asking again: the server or a proxy may recover, or asked us to slow down.
const RETRYABLE_STATUSES = [408, 429, 500, 502, 503, 504];
// Look again this long after a retry's due time: the scheduler needs a moment to move the job.
const DUE_MARGIN_MS = 250;

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

// What the page shows of a status: a change in any of these is news worth an `onState`.
function shownOf(status) {
  const { state, attempt, next_run_at: nextRunAt, stage, progress } = status;
  return JSON.stringify([state, attempt, nextRunAt, stage, progress?.done, progress?.total]);
}

/** The status as the page may show it: a due time already past is not "the next run" (it is due now). */
function asShown(status, nowMs) {
  const due = status.next_run_at ? Date.parse(status.next_run_at) : NaN;
  return Number.isFinite(due) && due <= nowMs ? { ...status, next_run_at: null } : status;
}

/**
 * Poll a job's status URL until it reaches a terminal state; resolve with the final status JSON.
 *
 * Each poll is a fetch span (pass the action's `fetch` to make it a child of the action); the
 * fetch instrumentation records the state the poll returned (ATTR_JOB_STATE). `onState(status)` is
 * called whenever what a page shows changes: state, attempt, next run time, stage or progress. A
 * `next_run_at` already in the past is handed over as null (the retry is due now, never "at" a past time).
 * The wait between polls doubles from `initialDelayMs` up to `maxDelayMs`, starts over after a change,
 * and is cut short to look again just after a retry's due time. Polling never stops on a count:
 * pass an AbortSignal as `signal` to give up.
 */
export async function pollJob(statusUrl, options = {}) {
  const {
    fetch: doFetch = globalThis.fetch,
    onState,
    initialDelayMs = 250,
    maxDelayMs = 4000,
    signal,
    now = Date.now,
  } = options;
  let delayMs = initialDelayMs;
  let lastShown;
  let lookedAfterDue;
  for (;;) {
    signal?.throwIfAborted();
    const answer = await readStatus(doFetch, statusUrl, signal);
    const status = answer && asShown(answer, now());
    if (status) {
      const shown = shownOf(status);
      if (shown !== lastShown) {
        lastShown = shown;
        delayMs = initialDelayMs;
        onState?.(status);
      }
      if (STOP_STATES.includes(status.state)) return status;
    }
    // Look again just after a retry's due time (read from the answer: the shown status hides a past one).
    // Each due time already past gets one quick look, then the usual backoff: no hot loop while it stays overdue.
    const due = answer?.next_run_at;
    const untilDueMs = due ? Date.parse(due) - now() : NaN;
    let waitMs = delayMs;
    if (untilDueMs > 0) {
      waitMs = Math.min(delayMs, untilDueMs + DUE_MARGIN_MS);
    } else if (untilDueMs <= 0 && due !== lookedAfterDue) {
      lookedAfterDue = due;
      waitMs = Math.min(delayMs, DUE_MARGIN_MS);
    }
    await sleep(waitMs, signal);
    delayMs = Math.min(delayMs * 2, maxDelayMs);
  }
}
