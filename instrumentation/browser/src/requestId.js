import { REQUEST_ID_PREFIX } from './conventions.js';

/** A fresh request id: the prefix and 16 lowercase hex characters from the browser's CSPRNG. */
export function newRequestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return REQUEST_ID_PREFIX + Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}
