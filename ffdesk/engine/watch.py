"""Watchfolders: every node scans, one node per folder at a time, state only in the database.

A node's watch loop claims the due watchfolder it may scan (those pinned to it, and unpinned
ones under a storage root it has) with ``FOR UPDATE SKIP LOCKED``, walks the folder, and in
the same transaction updates the folder's file registry and enqueues the files that are
ready. So a file is queued exactly once however many nodes watch and restart, and a crash
mid-scan loses the scan, never a file.

**Readiness.** A file is ready when its size and mtime were the same in ``stable_scans``
scans in a row after the one that first saw them, and have not changed for ``min_age``
seconds (database clock: neither node nor file-server clocks matter). A file that changes
after it was queued is queued again only with ``requeue_changed``; so is a file removed and
added again with other content. A folder that cannot be listed (a share not mounted) is an
error on the watchfolder and changes nothing: when it comes back with the same files, nothing
is queued again.

The pure parts (globs, readiness, the scan plan) are plain functions, tested on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import random
import re
import stat
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from ffdesk.core.errors import FfdeskError
from ffdesk.core.media import is_media_name
from ffdesk.core.model import NewJob
from ffdesk.core.roots import RootMap, is_ref, make_ref, parse_ref
from ffdesk.db import jobs as jobs_sql
from ffdesk.db import watch as wsql
from ffdesk.db.watch import FileWrite, KnownFile, NewWatchfolder, Watchfolder
from ffdesk.engine.dbaccess import backoff
from ffdesk.engine.routing import Placement, routing
from ffdesk.ffmpeg.presets import Preset, PresetError, preset_from_table

log = logging.getLogger("ffdesk.cluster.watch")

DB_TROUBLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_FOLDERS_PER_ROUND = 100  # then look at the clock again (and let a stop through)
JITTER = 0.05  # seconds added to a wait for a due folder


class WatchError(FfdeskError):
    """A watchfolder request is wrong (bad name, glob, interval, folder)."""


# --------------------------------------------------------------------------- globs


def glob_match(pattern: str, rel: str) -> bool:
    """Case-insensitive glob against a file below the watched folder (``rel`` uses '/').

    A pattern without '/' matches the file name (``*.mov``); one with '/' matches the whole
    relative path, anchored at the watched folder (``cams/*/a*.mxf``). ``*`` also crosses
    '/', and a leading ``**/`` may match nothing (``**/*.mov`` matches ``a.mov``); a trailing
    '/' means everything below (``archive/``).
    """
    pat = pattern.strip().replace("\\", "/").lower()
    path = rel.lower()
    if "/" not in pat:
        return fnmatchcase(posixpath.basename(path), pat)
    pat = pat.lstrip("/")
    if pat.endswith("/"):
        pat += "*"
    if fnmatchcase(path, pat):
        return True
    while pat.startswith("**/"):
        pat = pat[3:]
        if fnmatchcase(path, pat):
            return True
    return False


def check_glob(pattern: str) -> str:
    if not pattern.strip():
        raise WatchError("an empty --include/--exclude pattern matches nothing useful")
    if "\x00" in pattern:
        raise WatchError(f"bad pattern {pattern!r}")
    return pattern.strip()


@dataclass(frozen=True)
class Rules:
    """Which files a watchfolder considers: media files only, never hidden files or folders
    nor partial downloads (``.part``, ``.tmp``, ...), then ``include`` (any must match, if
    given) and ``exclude`` (none may match; a pattern without '/' also matches folder names,
    so ``--exclude done`` skips the folder ``done``)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    recursive: bool = True

    def enters(self, rel_dir: str) -> bool:
        """Whether the walk descends into sub-folder ``rel_dir``."""
        name = posixpath.basename(rel_dir)
        if not self.recursive or name.startswith("."):
            return False
        return not any(
            "/" not in g and fnmatchcase(name.lower(), g.strip().lower()) for g in self.exclude
        )

    def accepts(self, rel: str) -> bool:
        parts = rel.split("/")
        if any(not p or p.startswith(".") for p in parts):
            return False
        if not self.recursive and len(parts) > 1:
            return False
        if not is_media_name(Path(parts[-1])):
            return False
        if self.include and not any(glob_match(g, rel) for g in self.include):
            return False
        for g in self.exclude:
            if glob_match(g, rel):
                return False
            if "/" not in g.strip() and any(
                fnmatchcase(p.lower(), g.strip().lower()) for p in parts[:-1]
            ):
                return False
        return True


# --------------------------------------------------------------------------- readiness


def is_ready(stable_count: int, stable_age: float, *, stable_scans: int, min_age: float) -> bool:
    """Unchanged in ``stable_scans`` scans in a row and for at least ``min_age`` seconds."""
    return stable_count >= stable_scans and stable_age >= min_age


@dataclass
class ScanPlan:
    inserts: list[FileWrite] = field(default_factory=list)  # first seen
    updates: list[FileWrite] = field(default_factory=list)  # known rows that change
    gone: list[str] = field(default_factory=list)  # were queued, no longer there
    deletes: list[str] = field(default_factory=list)  # never queued, no longer there

    @property
    def ready(self) -> list[FileWrite]:
        return [w for w in self.updates if w.queue]


def plan_scan(
    listing: Mapping[str, tuple[int, int]],
    known: Mapping[str, KnownFile],
    *,
    stable_scans: int,
    min_age: float,
    requeue_changed: bool,
    unreadable: Sequence[str] = (),
) -> ScanPlan:
    """What one scan changes, from what it saw (rel -> (size, mtime_ns)) and what the registry
    knew. Rows below an ``unreadable`` sub-folder are left as they are (no listing, no news).
    Only rows that really change are written: an idle folder costs no writes."""
    plan = ScanPlan()
    for rel in sorted(listing):
        size, mtime = listing[rel]
        row = known.get(rel)
        if row is None:
            plan.inserts.append(FileWrite(rel, size, mtime, 0, "pending", reset=True))
            continue
        same = (row.size, row.mtime_ns) == (size, mtime)
        as_queued = (row.queued_size, row.queued_mtime_ns) == (size, mtime)
        changed = FileWrite(rel, size, mtime, 0, "pending", reset=True)
        if row.state == "pending":
            if not same:
                plan.updates.append(changed)
                continue
            count = row.stable_count + 1
            if is_ready(count, row.stable_age, stable_scans=stable_scans, min_age=min_age):
                if as_queued:  # changed and changed back: that content is queued already
                    plan.updates.append(FileWrite(rel, size, mtime, count, "queued"))
                else:
                    plan.updates.append(FileWrite(rel, size, mtime, count, "queued", queue=True))
            elif row.stable_count < stable_scans:  # past it, only min_age is awaited
                plan.updates.append(FileWrite(rel, size, mtime, count, "pending"))
        elif row.state == "queued":
            if same:
                continue
            if requeue_changed:
                plan.updates.append(changed)
            else:  # remember what is there now; never queued again
                plan.updates.append(replace(changed, state="queued"))
        else:  # gone, and back
            if row.queued_size is None or (requeue_changed and not as_queued):
                plan.updates.append(changed)
            else:  # the content that was queued, or a new one nobody wants queued
                plan.updates.append(replace(changed, state="queued"))
    prefixes = tuple(f"{d}/" for d in unreadable)
    for rel, row in known.items():
        if rel in listing or row.state == "gone" or rel.startswith(prefixes):
            continue
        if row.queued_size is None:
            plan.deletes.append(rel)
        else:
            plan.gone.append(rel)
    plan.deletes.sort()
    plan.gone.sort()
    return plan


# --------------------------------------------------------------------------- paths


def join_stored(base: str, rel: str) -> str:
    """``rel`` (with '/') below a folder as stored: a root reference or a local path."""
    if is_ref(base):
        root, below = parse_ref(base)
        below = below.strip("/")
        return make_ref(root, f"{below}/{rel}" if below else rel)
    return os.path.join(base, *rel.split("/"))


def rel_under(base: str, path: str | None) -> str | None:
    """``path`` relative to folder ``base`` (both as stored), '/' separators; '' for the
    folder itself; None when it is not below it."""
    if not path:
        return None
    if is_ref(base) != is_ref(path):
        return None
    if is_ref(base):
        root, below = parse_ref(base)
        proot, pbelow = parse_ref(path)
        if proot != root:
            return None
        below, pbelow = below.strip("/"), pbelow.strip("/")
        if not below:
            return pbelow
        if pbelow == below:
            return ""
        return pbelow[len(below) + 1 :] if pbelow.startswith(below + "/") else None
    base_n, path_n = os.path.normpath(base), os.path.normpath(path)
    if path_n == base_n:
        return ""
    prefix = base_n.rstrip(os.sep) + os.sep
    if not path_n.startswith(prefix):
        return None
    return path_n[len(prefix) :].replace(os.sep, "/")


def preset_of(w: Watchfolder) -> Preset:
    """The preset as it was when the watchfolder was added (every scanner plans alike,
    whatever preset files or library edits it sees)."""
    return preset_from_table(w.preset, dict(w.preset_def), f"watchfolder '{w.name}'")


def preset_snapshot(preset: Preset) -> dict[str, Any]:
    return preset.to_table()


def job_meta(w_name: str, rel: str) -> dict[str, Any]:
    return {"watchfolder": w_name, "file": rel}


def plan_job(w: Watchfolder, preset: Preset, rel: str, placement: Placement) -> NewJob:
    """The job for ready file ``rel``. Output: in the output folder (a preset whose output
    starts with ``{rel_dir}/`` mirrors the file's sub-folder below the watched folder there),
    or next to the file. Raises WatchError if it would overwrite its input."""
    stored_input = join_stored(w.folder, rel)
    rel_dir, name = posixpath.split(rel)
    try:
        if w.output:
            stored_output = join_stored(w.output, preset.output_name(Path(name), rel_dir=rel_dir))
        else:
            out_name = preset.output_name(Path(name))
            stored_output = join_stored(w.folder, posixpath.join(rel_dir, out_name))
        meta = preset.job_meta(rel_dir=rel_dir, meta=job_meta(w.name, rel))
    except PresetError as exc:
        raise WatchError(str(exc)) from None
    if stored_output == stored_input:
        raise WatchError(
            f"preset '{w.preset}' would overwrite its input {rel}; the watchfolder needs an "
            "output folder (remove it and add it again with --output-dir)"
        )
    return NewJob(
        input=stored_input,
        output=stored_output,
        preset=w.preset,
        preset_args=list(preset.args),
        needs=list(preset.needs),
        priority=w.priority,
        max_attempts=w.max_attempts,
        meta=meta,
        policy=preset.policy.to_dict(),
        **routing(preset, stored_input, stored_output, placement, pin=w.pinned_node),
    )


# --------------------------------------------------------------------------- walking


@dataclass
class Listing:
    files: dict[str, tuple[int, int]]  # rel -> (size, mtime_ns)
    unreadable: list[str]  # sub-folders (rel) that could not be listed
    bad_names: list[str] = field(default_factory=list)  # not valid UTF-8: cannot be stored


def walk(folder: str, rules: Rules, *, prune: Collection[str] = ()) -> Listing:
    """The files ``rules`` accept below ``folder``. Raises OSError when the folder itself
    cannot be listed (missing, not mounted, no permission). Folder symlinks are not followed
    (no loops); file symlinks are."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, "folder not found", folder)
    files: dict[str, tuple[int, int]] = {}
    unreadable: list[str] = []
    bad_names: list[str] = []
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        path = os.path.join(folder, *rel_dir.split("/")) if rel_dir else folder
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            if not rel_dir:
                raise
            unreadable.append(rel_dir)
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:  # a name the file system gave as raw bytes
                bad_names.append(repr(rel)[1:-1])
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if rules.enters(rel) and rel not in prune:
                        pending.append(rel)
                    continue
                if not rules.accepts(rel):
                    continue
                info = entry.stat()
            except OSError:
                continue  # vanished while we looked: the next scan knows
            if stat.S_ISREG(info.st_mode):
                files[rel] = (info.st_size, info.st_mtime_ns)
    return Listing(files, sorted(unreadable), sorted(bad_names))


def describe_os_error(exc: OSError, folder: str, local: str) -> str:
    reason = exc.strerror or exc.__class__.__name__
    where = folder if folder == local else f"{folder} ({local})"
    return f"cannot read folder {where}: {reason}"


# --------------------------------------------------------------------------- add


def default_name(folder: str) -> str:
    if is_ref(folder):
        root, below = parse_ref(folder)
        base = PurePosixPath(below.strip("/")).name or root
    else:
        base = os.path.basename(os.path.normpath(folder)) or "watch"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:64]
    return name or "watch"


def new_watchfolder(
    *,
    folder: str,
    preset: Preset,
    placement: Placement,
    output: str | None = None,
    name: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    recursive: bool = True,
    interval: float = 10.0,
    stable_scans: int = 3,
    min_age: float = 0.0,
    requeue_changed: bool = False,
    max_attempts: int = 3,
    priority: int = 0,
) -> NewWatchfolder:
    """Validate a ``watch add`` request on the submitting machine and store its paths: as
    root references when under one of this machine's roots, else as local paths, and then the
    watchfolder (its scans and its jobs) is pinned to this node."""
    if is_ref(folder):
        stored_folder = folder
        try:
            local = placement.roots.to_local(folder)
        except ValueError as exc:
            raise WatchError(str(exc)) from None
    else:
        local = os.path.abspath(folder)
        stored_folder = placement.store(local)
    if local is not None and not os.path.isdir(local):
        raise WatchError(f"no such folder: {local}")
    stored_output = None
    if output:
        stored_output = output if is_ref(output) else placement.store(os.path.abspath(output))
    name = name if name is not None else default_name(stored_folder)
    if not NAME.match(name):
        raise WatchError(
            f"watchfolder name '{name}' must be 1-64 letters, digits, '.', '_' or '-' "
            "(give one with --name)"
        )
    if interval < 0.1:
        raise WatchError("--interval must be at least 0.1 seconds")
    if stable_scans < 1:
        raise WatchError("--stable-scans must be at least 1")
    if min_age < 0:
        raise WatchError("--min-age must not be negative")
    if max_attempts < 1:
        raise WatchError("--max-attempts must be at least 1")
    try:  # the stored copy must work on every node, and must not ask for metadata
        preset_from_table(preset.name, preset_snapshot(preset), f"preset '{preset.name}'")
        preset.job_meta(meta=job_meta(name, "x"))
    except PresetError as exc:
        raise WatchError(f"cannot watch with preset '{preset.name}': {exc}") from None
    root = parse_ref(stored_folder)[0] if is_ref(stored_folder) else None
    local_paths = root is None or (stored_output is not None and not is_ref(stored_output))
    pinned = placement.node if local_paths else None
    if local_paths and not pinned:
        raise WatchError("a folder under no storage root needs this machine's node identifier")
    return NewWatchfolder(
        name=name,
        folder=stored_folder,
        root=root,
        output=stored_output,
        preset=preset.name,
        preset_def=preset_snapshot(preset),
        max_attempts=max_attempts,
        include_globs=[check_glob(g) for g in include],
        exclude_globs=[check_glob(g) for g in exclude],
        recursive=recursive,
        interval_s=interval,
        stable_scans=stable_scans,
        min_age_s=min_age,
        requeue_changed=requeue_changed,
        pinned_node=pinned,
        priority=priority,
    )


# --------------------------------------------------------------------------- the loop


class Watcher:
    """One node's watch loop (spawned by :class:`ffdesk.engine.node.Node`)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.scans = 0
        self._wake = asyncio.Event()
        self._shown_errors: dict[str, str | None] = {}  # logged once per change, not per scan

    def wake(self) -> None:
        """A watchfolder was added or resumed (NOTIFY): look at once."""
        self._wake.set()

    @property
    def identifier(self) -> str:
        return self.node.identifier

    @property
    def root_map(self) -> RootMap:
        return self.node.root_map  # this node's own path for each storage root

    async def run(self) -> None:
        poll = self.node.settings.poll_interval
        attempt = 0
        while True:
            self._wake.clear()
            wait = poll
            if self.node.state == "online":  # paused, draining, quarantined: others scan
                try:
                    wait = await self._round(poll)
                    attempt = 0
                except DB_TROUBLE as exc:
                    wait = backoff(attempt, cap=poll)
                    attempt += 1
                    log.warning(
                        "watchfolders: database unavailable (%s); retry in %.1f s",
                        " ".join(str(exc).split())[:200],
                        wait,
                    )
                except Exception:  # a bug here must not stop the node's encoding
                    log.exception("watch loop failed; trying again in %.1f s", poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.01))

    async def _round(self, poll: float) -> float:
        """Scan every due folder this node may scan; seconds until the next one is due."""
        for _ in range(MAX_FOLDERS_PER_ROUND):
            due_in = await self.node.pool.run(self._scan_next)
            if due_in is None:
                return poll
            if due_in > 0:
                # A little jitter: nodes waiting for the same folder take turns instead of
                # racing in lock step (the first one wins the claim, the rest skip it).
                return min(due_in + random.uniform(0, JITTER), poll)
        return 0.0

    async def _scan_next(self, conn: psycopg.AsyncConnection) -> float | None:
        claimed: Watchfolder | None = None
        try:
            async with conn.transaction():
                # Walking a big folder on a slow share can take longer than the node's
                # idle-in-transaction limit (see Node's pool); only this folder's row is held.
                await conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                claimed, due_in = await wsql.claim_next(
                    conn, node=self.identifier, roots=sorted(self.root_map.paths)
                )
                if claimed is None:
                    return due_in
                await self._scan(conn, claimed)
            self.scans += 1
            return 0.0
        except DB_TROUBLE:
            raise
        except Exception as exc:
            if claimed is None:
                raise
            text = exc.message if isinstance(exc, FfdeskError) else f"scan failed: {exc}"
            log.error(
                "watchfolder %s: %s", claimed.name, text, exc_info=not isinstance(exc, FfdeskError)
            )
            await wsql.record_failure(conn, claimed.name, node=self.identifier, error=text)
            return 0.0

    def _show(self, name: str, error: str | None) -> None:
        if self._shown_errors.get(name) == error:
            return
        if error:
            log.warning("watchfolder %s: %s", name, error)
        elif self._shown_errors.get(name):
            log.info("watchfolder %s: scanning again", name)
        self._shown_errors[name] = error

    async def _scan(self, conn: psycopg.AsyncConnection, w: Watchfolder) -> None:
        """One scan, inside the transaction that holds the watchfolder's lock."""
        me = self.identifier
        try:
            local = w.folder if not is_ref(w.folder) else self.root_map.to_local(w.folder)
        except ValueError as exc:
            local, problem = None, str(exc)
        else:
            problem = f"node {me} has no storage root '{w.root}'"
        if local is None:
            await wsql.finish_scan(conn, w.name, node=me, error=problem, files=None)
            self._show(w.name, problem)
            return
        out_rel = rel_under(w.folder, w.output) if w.output else ""
        prune = {out_rel} if out_rel else set()
        rules = Rules(tuple(w.include_globs), tuple(w.exclude_globs), w.recursive)
        known = await wsql.load_files(conn, w.name)
        excluded: set[str] = set()
        if out_rel is not None:  # outputs land inside the watched folder: not new inputs
            for path in await wsql.job_outputs(conn, w.name):
                rel = rel_under(w.folder, path)
                if rel:
                    excluded.add(rel)
        try:
            listing = await asyncio.to_thread(walk, local, rules, prune=prune)
        except OSError as exc:
            # Not mounted, removed, no permission: an error, and nothing else changes. Files
            # are not "gone", so nothing is queued again when the folder comes back.
            error = f"{describe_os_error(exc, w.folder, local)} (scanned by node {me})"
            await wsql.finish_scan(conn, w.name, node=me, error=error, files=None)
            self._show(w.name, error)
            return
        files = {rel: v for rel, v in listing.files.items() if rel not in excluded}
        plan = plan_scan(
            files,
            known,
            stable_scans=w.stable_scans,
            min_age=w.min_age_s,
            requeue_changed=w.requeue_changed,
            unreadable=listing.unreadable,
        )
        problems = [f"cannot read sub-folder {d}" for d in listing.unreadable[:3]]
        if listing.bad_names:
            problems.append(f"skipped name(s) that are not UTF-8: {listing.bad_names[0]}")
        placement = Placement(roots=self.root_map, node=me)
        preset = preset_of(w) if plan.ready else None
        jobs: list[NewJob] = []
        for i, write in enumerate(plan.updates):
            if not write.queue or preset is None:
                continue
            try:
                jobs.append(plan_job(w, preset, write.rel, placement))
            except WatchError as exc:  # stays pending, the error says why
                plan.updates[i] = replace(write, state="pending", queue=False)
                if len(problems) < 4:
                    problems.append(exc.message)
        ready = plan.ready
        if jobs:
            ids = await jobs_sql.enqueue(conn, jobs, submitted_by=f"watch {w.name} on {me}")
            by_rel = {write.rel: job_id for write, job_id in zip(ready, ids, strict=True)}
            plan.updates = [
                replace(u, job_id=by_rel[u.rel]) if u.queue else u for u in plan.updates
            ]
        await wsql.apply_scan(
            conn,
            w.name,
            known=known,
            inserts=plan.inserts,
            updates=plan.updates,
            gone=plan.gone,
            deletes=plan.deletes,
        )
        error = "; ".join(problems) or None
        await wsql.finish_scan(conn, w.name, node=me, error=error, files=len(files))
        self._show(w.name, error)
        if ready:
            shown = ", ".join(u.rel for u in ready[:5]) + (" ..." if len(ready) > 5 else "")
            log.info("watchfolder %s: queued %d file(s): %s", w.name, len(ready), shown)
        log.debug(
            "watchfolder %s scanned: %d file(s), %d new, %d changed, %d gone",
            w.name,
            len(files),
            len(plan.inserts),
            len(plan.updates),
            len(plan.gone),
        )
