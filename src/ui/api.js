// The page's link to the agent: its API with the token as a bearer header, and the live-update
// stream (server-sent events read with fetch, since EventSource cannot send a header).

const TOKEN_KEY = 'ipferry.token';

export const session = {
  /** The token of this tab, or null: sessionStorage, so it ends with the tab and stays in it. */
  token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An answer of the API that is not 2xx: its ipferry error (code, message, hint). */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message ?? `the agent answered ${status}`);
    this.status = status;
    this.code = error.code ?? 'IPF_E_HTTP';
    this.hint = error.hint ?? '';
    this.problems = Array.isArray(error.problems) ? error.problems : [];
  }

  /** The message with each problem and the hint, for a person. */
  describe() {
    const problems = this.problems.map((p) => `${p.path} ${p.message}`).join('; ');
    return [this.message, problems, this.hint].filter(Boolean).join(' ');
  }
}

/** Called with no argument when the token is refused (401): the page asks for one again. */
let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

function headers(extra = {}) {
  const token = session.token();
  return { ...(token ? { authorization: `Bearer ${token}` } : {}), ...extra };
}

export async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }),
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    cache: 'no-store',
    credentials: 'omit',
  });
  const text = await response.text();
  const parsed = text ? JSON.parse(text) : undefined;
  if (!response.ok) {
    const error = new ApiError(response.status, parsed);
    if (response.status === 401) onUnauthorized();
    throw error;
  }
  return parsed;
}

export const fipPath = (address) => `/v1/fips/${encodeURIComponent(address)}`;

/**
 * Follows /ui/events until `signal` aborts: `onEvent(name, data)` for each event, `onState`
 * with 'live' or 'down'. After a lost stream it waits (1 s, doubling to 30 s) and reconnects;
 * the `hello` of each new stream tells the page to read everything again.
 */
export async function followEvents({ signal, onEvent, onState }) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const response = await fetch('/ui/events', {
        headers: headers({ accept: 'text/event-stream' }),
        cache: 'no-store',
        credentials: 'omit',
        signal,
      });
      if (response.status === 401) {
        onUnauthorized();
        return;
      }
      if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
      onState('live');
      delay = 1000;
      await readEvents(response.body, onEvent);
    } catch (e) {
      if (signal.aborted) return;
      console.warn('ipferry: event stream lost', e);
    }
    onState('down');
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 30_000);
  }
}

/** Parses a text/event-stream body: blocks separated by a blank line, `event:` and `data:`. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length > 0) onEvent(name, JSON.parse(data.join('\n')));
    }
  }
}
