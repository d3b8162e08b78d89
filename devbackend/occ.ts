// What Convex's optimistic concurrency control would see. Each call's reads (documents by
// id, and index ranges: the part of the range it actually walked) and writes (every
// version of every document it wrote) are recorded from the syscalls our functions make,
// the same interface Convex's runtime serves. A mutation conflicts when a write committed
// after it arrived touches its read set; a subscribed query needs a re-run only when a
// committed write touches its read set. docs: devbackend/README.md ("Concurrency model").
import { jsonToConvex, type JSONValue, type Value } from "convex/values";

type Field = Value | undefined;
export type Key = Field[];
type Doc = Record<string, Value>;

export type Bound = { value: Field; inclusive: boolean };

/** A walked part of one index: equal prefix, optional bounds, and where the walk stopped. */
export type RangeRead = {
  table: string;
  fields: string[];
  eq: Field[];
  lower?: Bound;
  upper?: Bound;
  /** The walk stopped after this key (not exhausted): keys past it were not read. */
  stop?: { key: Key; order: "asc" | "desc" };
};

export class ReadSet {
  /** Documents read by id: fetched (a get), or read by a write to them. */
  readonly docs = new Set<string>();
  /** Documents fetched with a get (not only written). */
  readonly fetched = new Set<string>();
  readonly ranges: RangeRead[] = [];
  get size(): number {
    return this.docs.size + this.ranges.length;
  }
}

/** Every version (before, after) of each document a call wrote, by id. */
export class WriteSet {
  readonly docs = new Map<string, { table: string; versions: Doc[] }>();
  /** Documents this call created (a write of them by a later call is not contention). */
  readonly inserted = new Set<string>();
  /** Each written document as it was before this call (absent: created by it). */
  readonly before = new Map<string, Doc>();

  add(id: string, table: string, version: Doc | null): void {
    let entry = this.docs.get(id);
    if (entry === undefined) this.docs.set(id, (entry = { table, versions: [] }));
    if (version !== null) entry.versions.push(version);
  }

  get size(): number {
    return this.docs.size;
  }

  tables(): string[] {
    return [...new Set([...this.docs.values()].map((d) => d.table))];
  }
}

// ------------------------------------------------------------------ Convex's value order

const RANK: Record<string, number> = {
  undefined: 0,
  null: 1,
  bigint: 2,
  number: 3,
  boolean: 4,
  string: 5,
  bytes: 6,
  array: 7,
  object: 8,
};

function kind(v: Field): string {
  if (v === undefined) return "undefined";
  if (v === null) return "null";
  if (v instanceof ArrayBuffer) return "bytes";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

/** Convex's total order of values (undefined < null < int64 < float64 < boolean < string ...). */
export function compareValues(a: Field, b: Field): number {
  const ka = kind(a);
  const kb = kind(b);
  if (ka !== kb) return RANK[ka] - RANK[kb];
  switch (ka) {
    case "undefined":
    case "null":
      return 0;
    case "bigint":
    case "number":
    case "boolean":
    case "string":
      return (a as number) < (b as number) ? -1 : (a as number) > (b as number) ? 1 : 0;
    case "bytes":
      return Buffer.compare(Buffer.from(a as ArrayBuffer), Buffer.from(b as ArrayBuffer));
    case "array": {
      const x = a as Value[];
      const y = b as Value[];
      for (let i = 0; i < Math.min(x.length, y.length); i++) {
        const c = compareValues(x[i], y[i]);
        if (c !== 0) return c;
      }
      return x.length - y.length;
    }
    default: {
      const x = Object.entries(a as Record<string, Value>).sort();
      const y = Object.entries(b as Record<string, Value>).sort();
      return compareValues(x as unknown as Value, y as unknown as Value);
    }
  }
}

export function compareKeys(a: Key, b: Key): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = compareValues(a[i], b[i]);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

function fieldOf(doc: Doc, path: string): Field {
  let v: Field = doc;
  for (const part of path.split(".")) {
    if (v === null || v === undefined || typeof v !== "object" || Array.isArray(v)) return undefined;
    v = (v as Record<string, Value>)[part];
  }
  return v;
}

export function keyOf(doc: Doc, fields: string[]): Key {
  return fields.map((f) => fieldOf(doc, f));
}

function decode(value: JSONValue): Field {
  if (value !== null && typeof value === "object" && !Array.isArray(value) && "$undefined" in value) return undefined;
  return jsonToConvex(value);
}

// ------------------------------------------------------------------ ranges

type RangeExpression = { type: "Eq" | "Gt" | "Gte" | "Lt" | "Lte"; fieldPath: string; value: JSONValue };

/** The range a serialized `withIndex(...)` query covers, over the index's full key. */
export function rangeOf(table: string, fields: string[], expressions: RangeExpression[]): RangeRead {
  const range: RangeRead = { table, fields, eq: [] };
  for (const e of expressions) {
    const value = decode(e.value);
    if (e.type === "Eq") range.eq.push(value);
    else if (e.type === "Gt" || e.type === "Gte") range.lower = { value, inclusive: e.type === "Gte" };
    else range.upper = { value, inclusive: e.type === "Lte" };
  }
  return range;
}

export function inRange(range: RangeRead, key: Key): boolean {
  for (let i = 0; i < range.eq.length; i++) if (compareValues(key[i], range.eq[i]) !== 0) return false;
  const next = key[range.eq.length];
  if (range.lower !== undefined) {
    const c = compareValues(next, range.lower.value);
    if (c < 0 || (c === 0 && !range.lower.inclusive)) return false;
  }
  if (range.upper !== undefined) {
    const c = compareValues(next, range.upper.value);
    if (c > 0 || (c === 0 && !range.upper.inclusive)) return false;
  }
  if (range.stop !== undefined) {
    const c = compareKeys(key, range.stop.key);
    if (range.stop.order === "asc" ? c > 0 : c < 0) return false;
  }
  return true;
}

/** Whether `writes` touch anything `reads` saw: a conflict for a mutation, a re-run for a query. */
export function intersects(reads: ReadSet, writes: WriteSet): boolean {
  for (const [id, written] of writes.docs) {
    if (reads.docs.has(id)) return true;
    for (const range of reads.ranges) {
      if (range.table !== written.table) continue;
      for (const version of written.versions) if (inRange(range, keyOf(version, range.fields))) return true;
    }
  }
  return false;
}

/**
 * The hot documents two overlapping mutations share: documents both wrote that `later`
 * would have met whatever `earlier` did, because it read them as they were before
 * `earlier` wrote them (fetched by id, or in an index range it walked). A counter every enqueue
 * bumps is one. A document `later` wrote only because `earlier`'s write brought it into
 * what it read (a slot a worker just offered, a job just enqueued) is not: with Convex,
 * `later` conflicts, is re-run and then writes it, one after the other.
 */
export function sharedDocs(later: WriteSet, laterReads: ReadSet, earlier: WriteSet): string[] {
  return [...later.docs.keys()].filter((id) => {
    const old = earlier.before.get(id);
    if (old === undefined || !earlier.docs.has(id)) return false; // created by `earlier`
    if (laterReads.fetched.has(id)) return true;
    const table = earlier.docs.get(id)!.table;
    return laterReads.ranges.some((r) => r.table === table && inRange(r, keyOf(old, r.fields)));
  });
}

// ------------------------------------------------------------------ one call's recorder

/** The index fields of each table (the schema's indexes, plus Convex's two built-in ones). */
export type IndexFields = (table: string, index: string) => string[] | null;

type Stream = {
  range: RangeRead | null;
  order: "asc" | "desc";
  limit: number | null; // a take(n): the walk ends after n documents, not at the range's end
  returned: number;
  last: Key | null;
  done: boolean;
};

/** Reads and writes of one call, fed by the syscall wrapper (backend.ts). */
export class Recorder {
  readonly reads = new ReadSet();
  readonly writes = new WriteSet();
  private readonly streams = new Map<number, Stream>();

  constructor(private readonly indexFields: IndexFields) {}

  /** 1.0/queryStream: an index range (or a whole table) about to be walked. */
  queryStarted(queryId: number, query: { source: Record<string, unknown>; operators?: unknown[] }): void {
    const source = query.source;
    const order = source.order === "desc" ? "desc" : "asc";
    const limits = (query.operators ?? [])
      .map((op) => (op as { limit?: unknown }).limit)
      .filter((n): n is number => typeof n === "number");
    const limit = limits.length === 0 ? null : Math.min(...limits);
    let range: RangeRead | null;
    if (source.type === "IndexRange") {
      const [table, index] = String(source.indexName).split(".");
      const fields = this.indexFields(table, index);
      range = fields === null ? null : rangeOf(table, fields, source.range as RangeExpression[]);
    } else {
      // A full table scan (or a search): the whole table, in creation order.
      const table = String(source.tableName ?? String(source.indexName ?? "").split(".")[0]);
      range = { table, fields: this.indexFields(table, "by_creation_time") ?? ["_creationTime", "_id"], eq: [] };
    }
    this.streams.set(queryId, { range, order, limit, returned: 0, last: null, done: false });
  }

  /** 1.0/queryStreamNext: one more document, or the end of the range. */
  queryNext(queryId: number, doc: Doc | null, done: boolean): void {
    const s = this.streams.get(queryId);
    if (s === undefined || s.range === null) return;
    if (done) {
      // A take(n) that returned n documents stopped there, not at the range's end.
      s.done = s.limit === null || s.returned < s.limit;
    } else if (doc !== null) {
      s.returned++;
      s.last = keyOf(doc, s.range.fields);
    }
  }

  /** A document read by id: a get (`fetched`), or the read every write makes. */
  docRead(id: string, fetched: boolean): void {
    this.reads.docs.add(id);
    if (fetched) this.reads.fetched.add(id);
  }

  docWritten(id: string, table: string, before: Doc | null, after: Doc | null): void {
    if (!this.writes.docs.has(id)) {
      if (before === null) this.writes.inserted.add(id);
      else this.writes.before.set(id, before);
    }
    this.writes.add(id, table, before);
    this.writes.add(id, table, after);
  }

  /** The call ended: each walked range is as far as it went. */
  finish(): void {
    for (const s of this.streams.values()) {
      if (s.range === null) continue;
      const range = { ...s.range };
      if (!s.done) {
        // Not walked to its end: everything past the last document returned was never
        // read (nothing at all when none was returned: an empty prefix).
        range.stop = s.last === null ? { key: [], order: s.order } : { key: s.last, order: s.order };
        if (s.last === null) continue;
      }
      this.reads.ranges.push(range);
    }
    this.streams.clear();
  }
}
