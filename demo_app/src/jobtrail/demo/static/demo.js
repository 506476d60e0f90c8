// The demo page: each button is one user action traced with the jobtrail browser kit (window.jobtrail).
// What the user reads is what the trace records: the same message goes to the page and to jobtrail's
// result event, and the reference shown is the action's request id (what support pastes into `jobtrail trail`).
// Everything shown about a job comes from its status response (docs/jobs.md): state, attempt, stage,
// progress, items, errors and the event list, which the page lists one line per event.
'use strict';

const config = JSON.parse(document.getElementById('demo-config').textContent);
jobtrail.init({ serviceName: config.serviceName, screen: config.screen, tracesUrl: '/v1/traces' });

// The demo's stand-in for a login: one opaque user id per browser, sent as a cookie with every request.
const USER_COOKIE = 'jobtrail_demo_user';
if (!document.cookie.split('; ').some((entry) => entry.startsWith(`${USER_COOKIE}=`))) {
  const id = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('');
  document.cookie = `${USER_COOKIE}=u_${id}; path=/; SameSite=Strict`;
}

const IMPORT_FILES = [
  { name: 'refunds-january.csv', content: 'refund_id,amount\nRF-1001,12.50\nRF-1002,80.00\n' },
  { name: 'refunds-february.csv', content: 'refund_id,amount\nRF-1101,42.00\nRF-1102,twelve\n' },
  { name: 'refunds-march.csv', content: 'refund_id,amount\nRF-1201,9.99\n' },
];

const SCENARIOS = {
  report: {
    label: 'Generate report',
    url: '/api/reports',
    body: () => ({ period: new Date().toISOString().slice(0, 7) }),
    success: () => 'Your report for this month is ready.',
  },
  receipt: {
    label: 'Send refund receipt',
    url: '/api/receipts',
    body: () => ({
      refund_id: `RF-${Math.floor(1000 + Math.random() * 9000)}`,
      email: 'customer@example.com',
      amount_cents: 4250,
    }),
    success: () => 'The refund receipt was sent to the customer.',
  },
  import: {
    label: 'Import files',
    url: '/api/imports',
    body: () => ({ files: IMPORT_FILES }),
    success: importOutcome,
  },
};

const EVENT_WORDS = {
  job_created: 'accepted',
  job_started: 'attempt {attempt} started',
  item_started: '{item}: started',
  item_succeeded: '{item}: done',
  item_failed_retryable: '{item}: failed, will be retried ({detail})',
  item_failed_terminal: '{item}: failed ({detail})',
  job_retry_scheduled: 'attempt {attempt} failed; retry scheduled ({detail})',
  job_succeeded: 'succeeded',
  job_partially_succeeded: 'partially succeeded ({detail})',
  job_failed: 'failed',
  job_cancel_requested: 'cancel requested',
  job_cancelled: 'cancelled',
  job_requeued: 'requeued ({detail})',
  job_expired: 'expired ({detail})',
};

const ISO_TIME = /\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:\d{2})/g;

function timeOf(iso) {
  return iso ? new Date(iso).toLocaleTimeString('en-GB') : ''; // 24-hour HH:MM:SS, as the trail prints times
}

const words = (state) => state.replaceAll('_', ' ');

function describeStatus(status) {
  const attempt = status.attempt ? ` (attempt ${status.attempt})` : '';
  if (status.state === 'scheduled') {
    const failed = status.attempt ? `, after attempt ${status.attempt} failed` : '';
    // The kit drops a due time once it has passed: then the retry is due now, not "at" a past time.
    return status.next_run_at ? `scheduled for retry at ${timeOf(status.next_run_at)}${failed}` : `retry due now${failed}`;
  }
  const stage = status.state === 'started' && status.stage ? `, ${status.stage}` : '';
  const error = status.state === 'failed' && status.last_error ? `: ${status.last_error.type}` : '';
  return `${words(status.state)}${attempt}${stage}${error}`;
}

function describeEvent(event) {
  const template = EVENT_WORDS[event.event] ?? event.event;
  const text = template
    .replace('{attempt}', event.attempt ?? '?')
    .replace('{item}', event.item ?? '')
    .replace('{detail}', (event.detail ?? '').replace(ISO_TIME, (iso) => timeOf(iso)))
    .replace(' ()', '');
  return `${timeOf(event.at) || '—'} ${text}`;
}

// The errors in the user's words: the last one, and the first when it differs.
function describeErrors(status) {
  const { first_error: first, last_error: last } = status;
  if (!last) return '';
  if (first && (first.type !== last.type || first.message !== last.message)) {
    return ` (first error: ${first.type}; last error: ${last.type})`;
  }
  return ` (${last.type})`;
}

function importOutcome({ status }) {
  const done = status.items.filter((item) => item.state === 'succeeded').length;
  const lines = [`Imported ${done} of ${status.items.length} files.`];
  for (const item of status.items) {
    if (item.state !== 'succeeded') lines.push(`${item.id} was not imported: ${item.error?.message ?? item.state}`);
  }
  return { message: lines.join(' '), state: done === status.items.length ? 'succeeded' : 'failed' };
}

class Card {
  constructor(section) {
    this.section = section;
    this.outcome = section.querySelector('.outcome');
    this.button = section.querySelector('button[data-run]');
    this.cancelButton = section.querySelector('button[data-cancel]');
  }

  field(name) {
    return this.outcome.querySelector(`[data-field="${name}"]`);
  }

  reset(requestId, traceId) {
    this.outcome.replaceChildren(document.getElementById('outcome-template').content.cloneNode(true));
    this.outcome.hidden = false;
    delete this.section.dataset.final;
    this.field('reference').textContent = requestId;
    this.field('copy').addEventListener('click', () => this.copy(requestId));
    if (config.jaegerTraceLink) {
      this.field('trace-link').href = config.jaegerTraceLink.replace('{trace_id}', traceId);
      for (const element of this.outcome.querySelectorAll('.trace')) element.hidden = false;
    }
    this.show('sending');
  }

  async copy(requestId) {
    const copied = this.field('copied');
    try {
      await navigator.clipboard.writeText(requestId);
      copied.textContent = 'Copied';
    } catch {
      copied.textContent = 'Could not copy: select the reference and copy it by hand';
    }
  }

  show(state) {
    this.field('state').textContent = state;
  }

  showStatus(status) {
    this.show(describeStatus(status));
    this.field('history').replaceChildren(
      ...status.events.map((event) => Object.assign(document.createElement('li'), { textContent: describeEvent(event) })),
    );
    const progress = status.progress;
    for (const element of this.outcome.querySelectorAll('.progress')) element.hidden = !progress;
    if (progress) {
      const stage = status.stage ? ` (${status.stage})` : '';
      this.field('progress').textContent = `${progress.done} of ${progress.total}${stage}`;
    }
    for (const element of this.outcome.querySelectorAll('.items')) element.hidden = !status.items.length;
    this.field('items').replaceChildren(
      ...status.items.map((item) => {
        const line = document.createElement('li');
        line.dataset.itemState = item.state;
        const error = item.error ? `: ${item.error.message}` : '';
        line.textContent = `${item.id}: ${words(item.state)}${error}`;
        return line;
      }),
    );
  }

  finish(message, state) {
    this.field('message').textContent = message;
    this.section.dataset.final = state;
    this.button.disabled = false;
    if (this.cancelButton) this.cancelButton.hidden = true;
  }
}

function finalMessage(scenario, status, requestId) {
  if (status.state === 'cancelled') {
    return `${scenario.label} was cancelled; nothing more will be done. Reference ${requestId}.`;
  }
  const tries = status.attempt ? ` after ${status.attempt} attempt${status.attempt === 1 ? '' : 's'}` : '';
  return (
    `${scenario.label} did not go through: the job ${words(status.state)}${tries}${describeErrors(status)}. ` +
    `Please contact support with reference ${requestId}.`
  );
}

function run(key, card) {
  const scenario = SCENARIOS[key];
  card.button.disabled = true;
  return jobtrail.action(scenario.label, async ({ fetch, requestId, span, result }) => {
    card.reset(requestId, span.spanContext().traceId);
    const tell = (message, state) => {
      result(message, state);
      card.finish(message, state);
    };
    let response;
    try {
      response = await fetch(scenario.url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(scenario.body()),
      });
    } catch {
      card.show('not sent');
      return tell(`We could not reach the server; nothing was sent. Reference ${requestId}.`, 'failed');
    }
    const accepted = await response.json().catch(() => ({}));
    if (response.status !== 202) {
      const reason = accepted?.error?.reason ?? `HTTP ${response.status}`;
      const detail = accepted?.error?.detail ? `: ${accepted.error.detail}` : '';
      card.show(`refused (${reason})`);
      return tell(`The request was refused${detail} (${reason}). Reference ${requestId}.`, 'failed');
    }
    card.field('job').textContent = accepted.job_id;
    card.show(accepted.status);
    if (card.cancelButton) {
      card.cancelButton.hidden = false;
      card.cancelButton.onclick = () => cancel(scenario, accepted.status_url, card);
    }
    const onState = (status) => card.showStatus(status);
    const final = await jobtrail.pollJob(accepted.status_url, { fetch, onState });
    card.showStatus(final);
    if (final.state === 'succeeded' || final.state === 'partially_succeeded') {
      const outcome = await scenario.success({ status: final });
      const { message, state } = typeof outcome === 'string' ? { message: outcome, state: 'succeeded' } : outcome;
      return tell(message, state);
    }
    return tell(finalMessage(scenario, final, requestId), 'failed');
  }).finally(() => jobtrail.flush());
}

// Cancel is its own user action (its own trace and request id); the polling action sees the job end.
function cancel(scenario, statusUrl, card) {
  card.cancelButton.disabled = true;
  return jobtrail.action(`Cancel ${scenario.label.toLowerCase()}`, async ({ fetch, result }) => {
    const response = await fetch(`${statusUrl}/cancel`, { method: 'POST' });
    const body = await response.json().catch(() => ({}));
    if (response.status === 202) {
      card.showStatus(body);
      result(body.terminal ? 'Cancelled.' : 'Cancel requested; the job stops at its next safe point.', 'succeeded');
    } else {
      const detail = body?.error?.detail ?? `HTTP ${response.status}`;
      result(`Could not cancel: ${detail}`, 'failed');
    }
  }).finally(() => {
    card.cancelButton.disabled = false;
  });
}

async function toggleEmailProvider(checkbox) {
  checkbox.disabled = true;
  await jobtrail.action('Switch email provider', async ({ fetch, result }) => {
    const response = await fetch('/api/email-provider', {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ down: checkbox.checked }),
    });
    const { down } = await response.json();
    checkbox.checked = down;
    checkbox.dataset.down = String(down);
    result(down ? 'The email provider is now down for good.' : 'The email provider works again.', 'succeeded');
  }).finally(() => {
    checkbox.disabled = false;
  });
}

for (const section of document.querySelectorAll('section[data-scenario]')) {
  const card = new Card(section);
  card.button.addEventListener('click', () => run(section.dataset.scenario, card));
}
const providerSwitch = document.getElementById('email-provider-down');
providerSwitch.addEventListener('change', () => toggleEmailProvider(providerSwitch));
fetch('/api/email-provider').then((response) => response.json()).then(({ down }) => {
  providerSwitch.checked = down;
  providerSwitch.dataset.down = String(down);
});
