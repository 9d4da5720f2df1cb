/**
 * A write asked for again and again (an agent's health report after every reconcile pass) made
 * at most once per `spacingMs`, one at a time, always with what is current when it runs. A
 * request the writer finds nothing new for (it answers `false`) does not count. The
 * first request after a quiet spell is written at once, so a single change is reported without
 * delay; under churn (hundreds of nodes joining: every agent passes on every join) requests
 * fold into one write per spell instead of queueing one write per pass, which at 500 agents
 * buried etcd under a backlog of hundreds of thousands of writes.
 */
export interface Coalesced {
  /** Ask for a write; it happens once the spacing since the last one has passed. */
  request(): void;
  /** Resolves once no write is due or running (the last request is written). */
  settled(): Promise<void>;
  /** No more writes start; one already running finishes. */
  stop(): void;
}

/** `write` answers whether it wrote anything. */
export function coalesced(write: () => Promise<boolean>, spacingMs: number): Coalesced {
  let due = false;
  let stopped = false;
  let lastWrite = -Infinity;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  const idle: (() => void)[] = [];

  const wakeIdle = (): void => {
    if (due || running || timer) return;
    for (const resolve of idle.splice(0)) resolve();
  };
  const run = (): void => {
    timer = undefined;
    if (stopped || !due) return wakeIdle();
    due = false;
    const started = performance.now();
    // A failed write is the writer's to log or retry; the next request writes the current state.
    running = write()
      .then(
        (wrote) => {
          if (wrote) lastWrite = started;
        },
        () => {
          lastWrite = started;
        },
      )
      .finally(() => {
        running = undefined;
        schedule();
        wakeIdle();
      });
  };
  const schedule = (): void => {
    if (stopped || !due || running || timer) return;
    const wait = lastWrite + spacingMs - performance.now();
    if (wait <= 0) return run();
    timer = setTimeout(run, wait);
    timer.unref();
  };
  return {
    request() {
      due = true;
      schedule();
    },
    settled() {
      if (!due && !running && !timer) return Promise.resolve();
      return new Promise((resolve) => idle.push(resolve));
    },
    stop() {
      stopped = true;
      due = false;
      if (timer) clearTimeout(timer);
      timer = undefined;
      wakeIdle();
    },
  };
}
