"""Exports of stored positions as GPX (one track per worker), GeoJSON (a LineString feature per
worker) and CSV (a header line, then a row per position), streamed: a month of a team is never
held in memory. The history page and the API both answer with `export_response`.

The rows come from the database CHUNK_ROWS at a time (on PostgreSQL through a server-side
cursor) on Django's database thread; each chunk is turned into text on a worker thread (the
writers below are plain sync classes), and the text goes out through an async iterator, which
daphne streams without a thread per response. So the event loop, which also carries the live
feed, only hands chunks along: the per-row work of a large export never holds it. GPX and
GeoJSON read the rows by worker then ts, so that each worker's track is written whole before
the next begins (a query per worker, see _chunks_by_worker); CSV reads them by ts, as
positions()."""

import asyncio
import csv
import io
import itertools
import json
from array import array
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal, Protocol

from asgiref.sync import sync_to_async
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from gpxpy import gpx as gpx_model
from gpxpy.gpxfield import gpx_fields_to_xml

from teams.models import Team, Worker
from tracking.history import OPTIONAL_FIELDS, Query, matching, positions

Kind = Literal["gpx", "geojson", "csv"]
Names = dict[int, str]  # worker id -> name

CHUNK_ROWS = 2_000  # rows fetched from the database, and turned into text, at a time

CONTENT_TYPES = {
    "gpx": "application/gpx+xml",
    "geojson": "application/geo+json",
    "csv": "text/csv; charset=utf-8",
}
CSV_HEADER = ("id", "name", "lat", "lng", "ts", "time", *OPTIONAL_FIELDS)
# A row as read: worker_id, ts, lat, lng, then the optional fields (None when absent).
ROW_FIELDS = ("worker_id", "ts", "lat", "lng", *OPTIONAL_FIELDS)
GPX_VERSION = "1.1"


def export_response(kind: Kind, team: Team, query: Query) -> StreamingHttpResponse:
    """A streamed download of the team's positions matching `query`, named after the team and
    the range (Content-Disposition: attachment)."""
    writer = WRITERS[kind]()
    chunks = _chunks_by_worker(team, query) if writer.by_worker else _chunks(_by_ts(team, query))
    stream = _stream(writer, chunks, WorkerNames(team, query))
    response = StreamingHttpResponse(stream, content_type=CONTENT_TYPES[kind])
    response["Content-Disposition"] = f'attachment; filename="{filename(kind, team, query)}"'
    # A download of the past: nothing to cache between managers, and it may hold their routes.
    response["Cache-Control"] = "private, no-store"
    return response


def filename(kind: Kind, team: Team, query: Query) -> str:
    """`<team-slug>[-worker-<id>]-<since>-<until>.<kind>`, the ends in compact UTC ISO 8601
    (`20261129T000000Z`), `start` or `now` when open. A slug is ASCII letters, digits, - and _,
    so the name needs no quoting beyond the header's."""
    ends = [_compact(query.since, "start"), _compact(query.until, "now")]
    worker = [] if query.worker_id is None else [f"worker-{query.worker_id}"]
    return "-".join([team.slug, *worker, *ends]) + f".{kind}"


def _compact(ts: float | None, open_end: str) -> str:
    return open_end if ts is None else _utc(ts).strftime("%Y%m%dT%H%M%SZ")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso(ts: float) -> str:
    """A ts as ISO 8601 UTC, with its fraction only when it has one (2026-11-29T10:00:00Z)."""
    return _utc(ts).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- streaming


class Writer(Protocol):
    """Turns rows into one format's text: begin, then each chunk of rows in order, then end."""

    by_worker: bool  # wants the rows by worker then ts (else by ts)

    def begin(self) -> str: ...

    def write(self, rows: list[tuple], names: Names) -> str: ...

    def end(self, names: Names) -> str: ...


async def _stream(
    writer: Writer, chunks: AsyncIterator[list[tuple]], names: "WorkerNames"
) -> AsyncIterator[str]:
    yield writer.begin()
    async for chunk in chunks:
        await names.fetch({row[0] for row in chunk})
        yield await asyncio.to_thread(writer.write, chunk, names.names)
    # Off the event loop too: GeoJSON writes its last worker's `times` here, a string per point.
    yield await asyncio.to_thread(writer.end, names.names)


def _by_ts(team: Team, query: Query) -> QuerySet:
    return positions(team, query).values_list(*ROW_FIELDS)


def _of_worker(team: Team, query: Query, worker_id: int) -> QuerySet:
    """One worker's rows in time order: a range of the unique (worker, ts) index."""
    one = replace(query, worker_id=worker_id)
    return matching(team, one).order_by("ts").values_list(*ROW_FIELDS)


async def _chunks_by_worker(team: Team, query: Query) -> AsyncIterator[list[tuple]]:
    """The rows by worker then ts, one worker's query after another.

    One query ordered by worker and ts over the team's range makes PostgreSQL sort it all
    before the first row: 128 s of silence for a month of a 1,000-worker team (30 days, 36 M
    rows; docs/performance.md). A query per worker reads its range of the unique (worker, ts)
    index in order and streams at once. The team's workers now come first; then the workers
    who have positions under the team in the range but are in another team now (found on the
    (team, ts) index: for a month that scan takes a while, at the end of the download)."""
    if query.worker_id is not None:
        workers = [query.worker_id]
    else:
        workers = [
            pk
            async for pk in Worker.objects.filter(team=team)
            .order_by("id")
            .values_list("id", flat=True)
        ]
    for worker_id in workers:
        async for chunk in _chunks(_of_worker(team, query, worker_id)):
            yield chunk
    if query.worker_id is not None:
        return
    moved = (
        matching(team, query)
        .exclude(worker__team=team)
        .order_by("worker_id")
        .values_list("worker_id", flat=True)
        .distinct()
    )
    async for worker_id in moved:
        async for chunk in _chunks(_of_worker(team, query, worker_id)):
            yield chunk


async def _chunks(rows: QuerySet) -> AsyncIterator[list[tuple]]:
    """The rows of `rows`, CHUNK_ROWS at a time, read on Django's database thread.

    `QuerySet.aiterator()` would do this, but on a values_list() queryset it runs the query in
    the event loop's thread (SynchronousOnlyOperation in Django 5.2), so the sync iterator is
    made and read in the thread here. It is closed there too, when the download ends or the
    client goes away, which closes the server-side cursor."""
    iterator = rows.iterator(chunk_size=CHUNK_ROWS)  # a generator: no query until read
    try:
        while chunk := await sync_to_async(_next_chunk)(iterator):
            yield chunk
    finally:
        await sync_to_async(iterator.close)()


def _next_chunk(iterator) -> list[tuple]:
    return list(itertools.islice(iterator, CHUNK_ROWS))


class WorkerNames:
    """Workers' names by id: the team's workers now in one query, and any other (a worker who
    has moved to another team since) in one query for the chunk that first has them."""

    def __init__(self, team: Team, query: Query):
        self.team = team
        self.query = query
        self.names: Names = {}
        self.loaded = False

    async def fetch(self, worker_ids: set[int]) -> None:
        if not self.loaded:
            self.loaded = True
            workers = Worker.objects.filter(team=self.team)
            if self.query.worker_id is not None:
                workers = Worker.objects.filter(id=self.query.worker_id)
            self.names.update([row async for row in workers.values_list("id", "name")])
        missing = worker_ids - self.names.keys()
        if missing:
            workers = Worker.objects.filter(id__in=missing).values_list("id", "name")
            self.names.update([row async for row in workers])
            self.names.update((worker_id, "") for worker_id in missing - self.names.keys())


# ---------------------------------------------------------------- GPX


class GpxWriter:
    """GPX 1.1: one <trk> per worker (named after them) of one <trkseg>, a <trkpt> per position
    with its time (and <ele> from alt).

    gpxpy writes the envelope and each track's opening; the points are written here in the
    form gpxpy gives them (`<trkpt lat= lon=><ele/><time/></trkpt>`), because its serialiser
    costs about 25 µs a point, 30 s of CPU for one day of a 1,000-worker team, against 2 µs.
    The tests read every export back with gpxpy."""

    by_worker = True

    def __init__(self):
        self.current: int | None = None
        document = gpx_model.GPX()
        document.creator = "TeamTrack"
        envelope = document.to_xml(version=GPX_VERSION, prettyprint=False)
        self.head, tail = envelope.rsplit("</gpx>", 1)
        self.tail = "</gpx>" + tail

    def begin(self) -> str:
        return self.head

    def write(self, rows: list[tuple], names: Names) -> str:
        parts = []
        for worker_id, ts, lat, lng, _, _, _, alt, _ in rows:
            if worker_id != self.current:
                if self.current is not None:
                    parts.append("</trkseg></trk>")
                self.current = worker_id
                parts.append(_track_opening(names[worker_id]))
            ele = "" if alt is None else f"<ele>{alt!r}</ele>"
            parts.append(f'<trkpt lat="{lat!r}" lon="{lng!r}">{ele}<time>{iso(ts)}</time></trkpt>')
        return "".join(parts)

    def end(self, names: Names) -> str:
        return ("" if self.current is None else "</trkseg></trk>") + self.tail


def _track_opening(name: str) -> str:
    """`<trk><name>…</name><trkseg>`, as gpxpy writes a track (the name escaped)."""
    track = gpx_model.GPXTrack(name=name)
    text = gpx_fields_to_xml(track, "trk", GPX_VERSION, prettyprint=False)
    opening, _ = text.rsplit("</trk>", 1)
    return opening + "<trkseg>"


# ---------------------------------------------------------------- GeoJSON


class GeoJsonWriter:
    """A FeatureCollection with a feature per worker: a LineString of [lng, lat] (a Point when
    the worker has one position: a LineString needs two), properties `id`, `name` and `times`
    (ISO 8601 UTC, one per coordinate). The properties follow the geometry, so the coordinates
    stream; a worker's times wait in an array of 8 bytes a position until its last. Floats are
    written with repr(), which is JSON for the finite numbers the protocol lets in."""

    by_worker = True

    def __init__(self):
        self.current: int | None = None
        self.times = array("d")
        self.first = ""  # the worker's first coordinate, until a second makes it a LineString

    def begin(self) -> str:
        return '{"type":"FeatureCollection","features":['

    def write(self, rows: list[tuple], names: Names) -> str:
        parts = []
        for worker_id, ts, lat, lng, *_ in rows:
            if worker_id != self.current:
                if self.current is not None:
                    parts.append(self._feature_end(names) + ",")
                self.current, self.times = worker_id, array("d")
            coordinate = f"[{lng!r},{lat!r}]"
            if not self.times:
                self.first = coordinate
            elif len(self.times) == 1:
                parts.append('{"type":"Feature","geometry":{"type":"LineString","coordinates":[')
                parts.append(f"{self.first},{coordinate}")
            else:
                parts.append("," + coordinate)
            self.times.append(ts)
        return "".join(parts)

    def end(self, names: Names) -> str:
        return ("" if self.current is None else self._feature_end(names)) + "]}"

    def _feature_end(self, names: Names) -> str:
        """The rest of the current worker's feature after its coordinates (all of it for a
        single point)."""
        properties = {
            "id": self.current,
            "name": names[self.current],
            "times": [iso(ts) for ts in self.times],
        }
        if len(self.times) == 1:
            head = '{"type":"Feature","geometry":{"type":"Point","coordinates":' + self.first + "}"
        else:
            head = "]}"
        return head + ',"properties":' + json.dumps(properties) + "}"


# ---------------------------------------------------------------- CSV


class CsvWriter:
    """A header line, then a row per position in time order, in the live feed's names: `id`
    (the worker's), `name`, `lat`, `lng`, `ts` (Unix seconds), `time` (ISO 8601 UTC), then the
    optional fields, empty when the position has none."""

    by_worker = False

    def begin(self) -> str:
        return _csv_text([CSV_HEADER])

    def write(self, rows: list[tuple], names: Names) -> str:
        return _csv_text(
            [worker_id, names[worker_id], lat, lng, ts, iso(ts), *optional]
            for worker_id, ts, lat, lng, *optional in rows
        )

    def end(self, names: Names) -> str:
        return ""


def _csv_text(rows) -> str:
    """CSV text of rows (None is written empty), with the csv module's quoting of names."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


WRITERS: dict[Kind, type[Writer]] = {"gpx": GpxWriter, "geojson": GeoJsonWriter, "csv": CsvWriter}
