// @ts-check
// TrackStorage in IndexedDB: the device token, the enrolment, the seq counter and the queue of
// positions not yet acknowledged, in one database of this origin ("teamtrack-track"). Kept out of
// localStorage so that the token sits with the data it guards and is not readable synchronously
// by any script of the origin; neither is sent to a server unless the page sends it.

/** @typedef {import("../types.js").DevicePosition} DevicePosition */
/** @typedef {import("./types.js").QueuedPosition} QueuedPosition */
/** @typedef {import("./types.js").TrackStorage} TrackStorage */

const DATABASE = "teamtrack-track";
const VERSION = 1;
const META = "meta"; // key -> value: token, enrolment, nextSeq, tracking
const QUEUE = "queue"; // positions by seq

/**
 * @template T
 * @param {IDBRequest<T>} request
 * @returns {Promise<T>}
 */
function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/**
 * @param {IDBTransaction} transaction
 * @returns {Promise<void>}
 */
function committed(transaction) {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error || new Error("transaction aborted"));
  });
}

/** @implements {TrackStorage} */
export class IndexedDbStorage {
  /** @param {IDBDatabase} db */
  constructor(db) {
    this.db = db;
  }

  /**
   * Open (and on first use create) the page's database.
   * @param {IDBFactory} [factory]
   */
  static async open(factory = indexedDB) {
    const request = factory.open(DATABASE, VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(META)) db.createObjectStore(META);
      if (!db.objectStoreNames.contains(QUEUE)) db.createObjectStore(QUEUE, { keyPath: "seq" });
    };
    return new IndexedDbStorage(await done(request));
  }

  /** @param {string} key */
  async get(key) {
    return done(this.db.transaction(META).objectStore(META).get(key));
  }

  /**
   * @param {string} key
   * @param {unknown} value
   */
  async set(key, value) {
    const transaction = this.db.transaction(META, "readwrite");
    transaction.objectStore(META).put(value, key);
    await committed(transaction);
  }

  /** @param {string} key */
  async delete(key) {
    const transaction = this.db.transaction(META, "readwrite");
    transaction.objectStore(META).delete(key);
    await committed(transaction);
  }

  /**
   * Store the position under the next seq and move the counter on, in one transaction.
   * @param {DevicePosition} position
   * @param {number} startSeq
   */
  async append(position, startSeq) {
    const transaction = this.db.transaction([META, QUEUE], "readwrite");
    const meta = transaction.objectStore(META);
    let seq = startSeq;
    // Callbacks, not await: the writes must be made while the transaction is still active.
    const read = meta.get("nextSeq");
    read.onsuccess = () => {
      if (typeof read.result === "number") seq = read.result;
      transaction.objectStore(QUEUE).add({ ...position, seq });
      meta.put(seq + 1, "nextSeq");
    };
    await committed(transaction);
    return seq;
  }

  /** @param {number} limit */
  async oldest(limit) {
    const store = this.db.transaction(QUEUE).objectStore(QUEUE);
    return /** @type {Promise<QueuedPosition[]>} */ (done(store.getAll(null, limit)));
  }

  /** @param {number} seq */
  async removeThrough(seq) {
    const transaction = this.db.transaction(QUEUE, "readwrite");
    transaction.objectStore(QUEUE).delete(IDBKeyRange.upperBound(seq));
    await committed(transaction);
  }

  /** @param {number[]} seqs */
  async remove(seqs) {
    const transaction = this.db.transaction(QUEUE, "readwrite");
    const store = transaction.objectStore(QUEUE);
    for (const seq of seqs) store.delete(seq);
    await committed(transaction);
  }

  async count() {
    return done(this.db.transaction(QUEUE).objectStore(QUEUE).count());
  }

  async clearQueue() {
    const transaction = this.db.transaction(QUEUE, "readwrite");
    transaction.objectStore(QUEUE).clear();
    await committed(transaction);
  }
}
