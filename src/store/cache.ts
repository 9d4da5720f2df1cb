/**
 * A local copy of everything under a prefix, kept current by a watch: listed once, then changed
 * event by event, so that a reader (the agent's reconcile pass) reads memory instead of listing
 * the store each time. `revision` is the store revision the copy is consistent with.
 *
 * When the watch cannot go on — its next revision was compacted (IPF_E_STORE_COMPACTED), the
 * store was closed or lost it, or applying an event failed — the copy is stale: `synced` turns
 * false, `onLost` is called, and the next sync() lists again and follows on from that list's
 * revision (a full resync). Events are applied whole revisions at a time, so the copy is always
 * the store's state at some revision, never half of one.
 */
import type { KeyValue, Store, Watch, WatchEvent } from './store.js';

/** What keeps the copy: the cache hands it a full list, then each revision's events. */
export interface CacheSink {
  /** Replaces everything with `kvs`, the prefix's keys at `revision`. */
  reset(kvs: readonly KeyValue[], revision: number): void;
  /** Applies the events of one revision, in order. */
  apply(events: readonly WatchEvent[], revision: number): void;
}

export interface PrefixCacheOptions {
  /** After the copy took one revision's events. */
  readonly onEvents?: (events: readonly WatchEvent[], revision: number) => void;
  /** The watch ended: the copy is stale until the next sync(). */
  readonly onLost?: (error: Error) => void;
}

export class PrefixCache {
  private watch?: Watch;
  private rev = 0;
  private following = false;
  /** Bumped by every sync and close: callbacks of an older watch are ignored. */
  private generation = 0;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly prefix: string,
    private readonly sink: CacheSink,
    private readonly options: PrefixCacheOptions = {},
  ) {}

  /** The store revision the copy is consistent with (0 before the first sync). */
  get revision(): number {
    return this.rev;
  }

  /** Whether the copy is being kept current (false before the first sync and after a loss). */
  get synced(): boolean {
    return this.following;
  }

  /**
   * Lists the prefix into the sink and follows it from there, unless already following. Fails
   * when the list fails (the store is unreachable): the caller tries again later.
   */
  async sync(): Promise<void> {
    if (this.following) return;
    if (this.closed) throw new Error('the cache is closed');
    this.stopWatch();
    const generation = ++this.generation;
    const { kvs, revision } = await this.store.list(this.prefix);
    // Closed, or another sync got there first, while the list was on its way.
    if (generation !== this.generation) return;
    this.sink.reset(kvs, revision);
    this.rev = revision;
    this.following = true;
    this.watch = this.store.watch(this.prefix, {
      fromRevision: revision + 1,
      onEvents: (events, at) => {
        if (generation !== this.generation || !this.following || at <= this.rev) return;
        try {
          this.sink.apply(events, at);
        } catch (e) {
          // The copy may hold part of this revision: only a new list can be trusted.
          this.lose(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        this.rev = at;
        this.options.onEvents?.(events, at);
      },
      onError: (error) => {
        if (generation === this.generation) this.lose(error);
      },
    });
  }

  close(): void {
    this.closed = true;
    this.following = false;
    this.generation++;
    this.stopWatch();
  }

  private lose(error: Error): void {
    if (!this.following) return;
    this.following = false;
    this.generation++;
    this.stopWatch();
    this.options.onLost?.(error);
  }

  private stopWatch(): void {
    const watch = this.watch;
    this.watch = undefined;
    watch?.close();
  }
}
