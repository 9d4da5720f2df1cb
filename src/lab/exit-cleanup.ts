/**
 * Things a run must not leave behind (labs, etcd clusters) even when it is interrupted: while
 * any is tracked, exit, SIGINT and SIGTERM destroy them synchronously. One instance per kind;
 * each restores a signal's default action (terminate) once no other handler is left for it,
 * so Ctrl-C still ends the run.
 */
export interface SyncDestroyable {
  destroySync(): void;
}

export class ExitCleanup<T extends SyncDestroyable> {
  readonly #live = new Set<T>();
  #installed = false;
  readonly #onExit = (): void => {
    for (const item of [...this.#live]) item.destroySync();
  };
  readonly #onSignal = (signal: NodeJS.Signals): void => {
    this.#onExit();
    this.#remove();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };

  track(item: T): void {
    this.#live.add(item);
    if (this.#installed) return;
    this.#installed = true;
    process.on('exit', this.#onExit);
    process.on('SIGINT', this.#onSignal);
    process.on('SIGTERM', this.#onSignal);
  }

  /** Stops tracking `item`; the handlers go when nothing is tracked any more. */
  untrack(item: T): void {
    this.#live.delete(item);
    if (this.#live.size === 0) this.#remove();
  }

  #remove(): void {
    if (!this.#installed) return;
    this.#installed = false;
    process.off('exit', this.#onExit);
    process.off('SIGINT', this.#onSignal);
    process.off('SIGTERM', this.#onSignal);
  }
}
