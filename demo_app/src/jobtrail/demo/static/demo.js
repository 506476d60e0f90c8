// The demo page: each button is one user action traced with the jobtrail browser kit (window.jobtrail).
// What the user reads is what the trace records: the same message goes to the page and to jobtrail's
// result event, and the reference shown is the action's request id (what support pastes into `jobtrail trail`).
'use strict';

const config = JSON.parse(document.getElementById('demo-config').textContent);
jobtrail.init({ serviceName: config.serviceName, screen: config.screen, tracesUrl: '/v1/traces' });

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
    success: async () => 'Your report for this month is ready.',
  },
  receipt: {
    label: 'Send refund receipt',
    url: '/api/receipts',
    body: () => ({
      refund_id: `RF-${Math.floor(1000 + Math.random() * 9000)}`,
      email: 'customer@example.com',
      amount_cents: 4250,
    }),
    success: async () => 'The refund receipt was sent to the customer.',
  },
  import: {
    label: 'Import files',
    url: '/api/imports',
    body: () => ({ files: IMPORT_FILES }),
    success: importOutcome,
  },
};

function timeOf(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : '';
}

function describeStatus(status) {
  const attempt = status.attempt ? ` (attempt ${status.attempt})` : '';
  if (status.state === 'scheduled' && status.next_run_at) {
    const failed = status.attempt ? `, after attempt ${status.attempt} failed` : '';
    return `scheduled for retry at ${timeOf(status.next_run_at)}${failed}`;
  }
  if (status.state === 'started') return `started${attempt}`;
  if (status.state === 'failed') return `failed${attempt}${status.error_reason ? `: ${status.error_reason}` : ''}`;
  return `${status.state}${attempt}`;
}

// The status endpoint keeps every state change with its time (retries included): show them all, as recorded.
function describeHistory(status) {
  return (status.history ?? []).map((change) => `${change.state} ${timeOf(change.at)}`).join(' → ');
}

async function importOutcome({ fetch, jobId }) {
  const response = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/result`, { cache: 'no-store' });
  const { result } = await response.json();
  const done = result.imported.length;
  const lines = [`Imported ${done} of ${result.total} files.`];
  for (const failure of result.failed) lines.push(`${failure.file} was not imported: ${failure.error}`);
  return { message: lines.join(' '), state: result.failed.length ? 'failed' : 'succeeded' };
}

class Card {
  constructor(section) {
    this.section = section;
    this.outcome = section.querySelector('.outcome');
    this.button = section.querySelector('button[data-run]');
  }

  field(name) {
    return this.outcome.querySelector(`[data-field="${name}"]`);
  }

  reset(requestId, traceId) {
    this.outcome.replaceChildren(document.getElementById('outcome-template').content.cloneNode(true));
    this.outcome.hidden = false;
    delete this.section.dataset.final;
    this.field('reference').textContent = requestId;
    this.field('copy').addEventListener('click', () => navigator.clipboard?.writeText(requestId));
    if (config.jaegerTraceLink) {
      this.field('trace-link').href = config.jaegerTraceLink.replace('{trace_id}', traceId);
      for (const element of this.outcome.querySelectorAll('.trace')) element.hidden = false;
    }
    this.show('sending');
  }

  show(state) {
    this.field('state').textContent = state;
  }

  showHistory(status) {
    this.field('history').textContent = describeHistory(status);
  }

  finish(message, state) {
    this.field('message').textContent = message;
    this.section.dataset.final = state;
    this.button.disabled = false;
  }
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
      card.show(`refused (${reason})`);
      return tell(`The request was refused (${reason}). Reference ${requestId}.`, 'failed');
    }
    card.field('job').textContent = accepted.job_id;
    card.show(accepted.status);
    const onState = (status) => {
      card.show(describeStatus(status));
      card.showHistory(status);
    };
    const final = await jobtrail.pollJob(accepted.status_url, { fetch, onState });
    onState(final);
    if (final.state !== 'succeeded') {
      const tries = final.attempt ? ` after ${final.attempt} attempt${final.attempt === 1 ? '' : 's'}` : '';
      const why = final.error_reason ? ` (${final.error_reason})` : '';
      return tell(
        `${scenario.label} did not go through: the job ${final.state}${tries}${why}. ` +
          `Please contact support with reference ${requestId}.`,
        'failed',
      );
    }
    const outcome = await scenario.success({ fetch, jobId: accepted.job_id });
    const { message, state } = typeof outcome === 'string' ? { message: outcome, state: 'succeeded' } : outcome;
    return tell(message, state);
  }).finally(() => jobtrail.flush());
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
