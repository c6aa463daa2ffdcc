"""Fleet memory: insert rate and AskVideo retrieval latency, PostgreSQL beside SQLite, same run.

Each store holds ``N`` captions of 10 robots (SQLite: 10 streams of one file; PostgreSQL: 10
robots of one database, a real server started here on 127.0.0.1), 30-word captions with 384-d
embeddings. Filled in bulk (COPY / executemany), then measured through the stores' own calls:

- ``insert_per_s``: ``store.add`` of one caption at a time (each committed, as the node does);
- ``load_s``: a fleet-wide ``RetrievalIndex`` reading every caption (first question);
- ``select_ms``: ``RetrievalIndex.select`` p50 / p99 (window, MMR under a 10k-token budget).

Vectors are searched in the process (the index); pgvector is not packaged for Debian 12, so the
in-database search could not be measured here. CPU figures; ratios are PostgreSQL / SQLite.
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Emitter, entry_point, environment, summary

from rats_ros.recall.pg_store import PgCaptionStore
from rats_ros.recall.retrieval import RetrievalIndex
from rats_ros.recall.store import CaptionStore
from rats_ros.records import RECORD_FIELDS, CaptionRecord, record_values
from rats_ros.testing.postgres import PostgresServer

DIM, ROBOTS = 384, 10
WORDS = "robot pallet door shelf person forklift box corridor dock light red blue".split()


class HashEmbedder:
    """Deterministic unit vectors from text hashes: retrieval cost without a model's cost."""

    name = "bench-hash"

    def embed(self, texts):
        rows = [np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16))
                .standard_normal(DIM) for t in texts]
        matrix = np.asarray(rows, np.float32)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def captions(n: int, rng) -> list[tuple[int, CaptionRecord, bytes]]:
    """``(robot, record, embedding bytes)`` for n captions, 4 s apart per robot."""
    out = []
    for i in range(n):
        robot, index = i % ROBOTS, i // ROBOTS
        text = " ".join(rng.choice(WORDS, 30))
        emb = rng.standard_normal(DIM).astype("<f4")
        record = CaptionRecord(index, index * 4 * 10**9, (index * 4 + 3) * 10**9, text, 16, 3136,
                               196, 3136, 0.1, "bench")
        out.append((robot, record, (emb / np.linalg.norm(emb)).tobytes()))
    return out


def fill_sqlite(path: Path, rows) -> None:
    CaptionStore(path).close()
    store = CaptionStore(path)
    values = [(f"robot{r}", *record_values(c).values(), 0, e, "bench-hash") for r, c, e in rows]
    columns = ("stream_id", *RECORD_FIELDS, "created_ns", "embedding", "embedder")

    def write(conn):
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO captions ({', '.join(columns)}) VALUES "
                         f"({', '.join('?' * len(columns))})", values)
        conn.executemany("INSERT OR REPLACE INTO streams VALUES (?, ?, 0, 0)",
                         [(f"robot{r}", len(rows) // ROBOTS) for r in range(ROBOTS)])
        conn.execute("COMMIT")

    store.run("filling", write)
    store.close()


def fill_postgres(url: str, rows) -> None:
    store = PgCaptionStore(url, robot="robot0")
    columns = ("robot", "stream_id", *RECORD_FIELDS, "created_ns", "embedding", "embedder")

    def write(conn):
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY rats_captions ({', '.join(columns)}) FROM STDIN") as copy:
                for r, c, e in rows:
                    copy.write_row((f"robot{r}", "default", *record_values(c).values(), 0, e,
                                    "bench-hash"))
            cur.executemany("INSERT INTO rats_streams VALUES (%s, 'default', %s, 0, 0)",
                            [(f"robot{r}", len(rows) // ROBOTS) for r in range(ROBOTS)])

    store.run("filling", write)
    store.close()


def measure(kind: str, writer, reader, n: int, inserts: int, questions: int, rng) -> dict:
    new = captions(inserts, rng)
    started = time.perf_counter()
    for i, (_, record, emb) in enumerate(new):
        record.clip_index = n // ROBOTS + i
        writer.add(record, np.frombuffer(emb, "<f4"), "bench-hash")
    insert_s = time.perf_counter() - started
    embedder = HashEmbedder()
    index = RetrievalIndex(reader, embedder, lambda text: len(text.split()))
    started = time.perf_counter()
    index.refresh()
    load_s = time.perf_counter() - started
    times = []
    for q in range(questions):
        query = embedder.embed([f"where was the pallet {q}"])[0]
        t0 = time.perf_counter()
        index.select(query, budget_tokens=10000)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"store": kind, "captions": n, "insert_per_s": inserts / insert_s, "load_s": load_s,
            "select_ms": summary(times)}


def run(args) -> None:
    emit, rng = Emitter(args.out), np.random.default_rng(0)
    server = PostgresServer(durable=True)  # fsync on, as SQLite's synchronous=FULL
    server.start()
    try:
        for n in [int(x) for x in args.captions.split(",")]:
            rows = captions(n, rng)
            tmp = Path(tempfile.mkdtemp(prefix="rats-fleet-"))
            fill_sqlite(tmp / "c.db", rows)
            database = f"fleet{n}"
            server.createdb(database)
            fill_postgres(server.url(database), rows)
            streams = tuple(f"robot{r}" for r in range(ROBOTS))
            lite = measure("sqlite", CaptionStore(tmp / "c.db", "robot0"),
                           CaptionStore(tmp / "c.db", "robot0", read_streams=streams),
                           n, args.inserts, args.questions, rng)
            pg = measure("postgresql", PgCaptionStore(server.url(database), robot="robot0"),
                         PgCaptionStore(server.url(database), robot="robot0",
                                        read_robots=("*",), read_streams=()),
                         n, args.inserts, args.questions, rng)
            for record in (lite, pg):
                emit({"bench": "fleet", **record, **environment("cpu")})
            emit({"bench": "fleet", "store": "postgresql/sqlite", "captions": n,
                  "insert_per_s": pg["insert_per_s"] / lite["insert_per_s"],
                  "load_s": pg["load_s"] / lite["load_s"],
                  "select_p50": pg["select_ms"]["p50"] / lite["select_ms"]["p50"]})
    finally:
        server.close()


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", default="10000,100000,1000000")
    ap.add_argument("--inserts", type=int, default=500, help="single adds timed per size")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--out", help="append JSON lines here")
    ap.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.captions, args.inserts, args.questions = "1000", 50, 5
    return args


main = entry_point(parse, run)


if __name__ == "__main__":
    raise SystemExit(main())
