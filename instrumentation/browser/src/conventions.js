// Every jobtrail telemetry name the browser kit uses, once (see shared/CONVENTIONS.md).
// The values equal the constants of the same name in instrumentation/conventions.py;
// tests/browser/test_conventions_js.py keeps the two modules in step.

export const REQUEST_ID_PREFIX = 'req_';
export const REQUEST_ID_HEADER = 'X-Request-ID';
export const JOB_STATE_HEADER = 'X-Job-State';

export const ATTR_REQUEST_ID = 'jobtrail.request.id';
export const ATTR_UI_SCREEN = 'jobtrail.ui.screen';
export const ATTR_UI_ACTION = 'jobtrail.ui.action';
export const EVENT_UI_RESULT = 'jobtrail.ui.result';
export const ATTR_UI_RESULT_MESSAGE = 'jobtrail.ui.result.message';
export const ATTR_UI_RESULT_STATE = 'jobtrail.ui.result.state';
export const ATTR_JOB_STATE = 'jobtrail.job.state';

export const UI_STATE_RUNNING = 'running';
export const UI_STATE_SUCCEEDED = 'succeeded';
export const UI_STATE_FAILED = 'failed';

export const STATE_SUCCEEDED = 'succeeded';
export const STATE_PARTIALLY_SUCCEEDED = 'partially_succeeded';
export const STATE_FAILED = 'failed';
export const STATE_CANCELLED = 'cancelled';
export const STATE_EXPIRED = 'expired';
export const STATE_NOT_FOUND = 'not_found';
export const TERMINAL_STATES = [STATE_SUCCEEDED, STATE_PARTIALLY_SUCCEEDED, STATE_FAILED, STATE_CANCELLED, STATE_EXPIRED];
