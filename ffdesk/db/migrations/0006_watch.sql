-- ffdesk schema 6: cluster-safe watchfolders.
--
-- Everything a scan needs to know lives here, never in a node's memory nor as lock files in
-- the watched folder: which folders are due (next_scan_at), who scanned last and what went
-- wrong, and one row per file seen with its readiness (size and mtime unchanged for
-- stable_scans scans and min_age_s seconds) and whether it was queued.
--
-- A node claims a due watchfolder with FOR UPDATE SKIP LOCKED (one scanner per folder), walks
-- it, updates watch_files and enqueues the ready files in the same transaction: a crash loses
-- the whole scan or nothing, and the primary key (watchfolder, rel_path) makes "queued once"
-- structural across restarts and rescans.

CREATE TABLE watchfolders (
    name            text PRIMARY KEY,
    folder          text NOT NULL,      -- a root reference (media:incoming) or a local path
    root            text,               -- root of folder; NULL for a local path (then pinned)
    output          text,               -- output folder, stored like folder; NULL: next to input
    preset          text NOT NULL,
    preset_def      jsonb NOT NULL,     -- the preset when added: every scanner plans alike
    max_attempts    int NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    priority        int NOT NULL DEFAULT 0,
    include_globs   text[] NOT NULL DEFAULT '{}',
    exclude_globs   text[] NOT NULL DEFAULT '{}',
    recursive       boolean NOT NULL DEFAULT true,
    interval_s      real NOT NULL DEFAULT 10 CHECK (interval_s > 0),
    stable_scans    int NOT NULL DEFAULT 3 CHECK (stable_scans >= 1),
    min_age_s       real NOT NULL DEFAULT 0 CHECK (min_age_s >= 0),
    requeue_changed boolean NOT NULL DEFAULT false,
    enabled         boolean NOT NULL DEFAULT true,
    pinned_node     text,               -- only this node scans it (a path under no root)
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text,
    next_scan_at    timestamptz NOT NULL DEFAULT now(),
    last_scan_at    timestamptz,
    last_scanned_by text,
    last_scan_files int,                -- media files the last good scan saw
    scan_count      bigint NOT NULL DEFAULT 0,
    error           text,               -- the last scan's problem (folder missing, ...); NULL: fine
    error_at        timestamptz,
    CHECK (root IS NOT NULL OR pinned_node IS NOT NULL)
);
CREATE INDEX watchfolders_due_idx ON watchfolders (next_scan_at) WHERE enabled;

CREATE TABLE watch_files (
    watchfolder     text NOT NULL REFERENCES watchfolders (name) ON DELETE CASCADE,
    rel_path        text NOT NULL,      -- below the folder, '/' separators
    size            bigint NOT NULL,    -- as last seen
    mtime_ns        bigint NOT NULL,
    stable_count    int NOT NULL DEFAULT 0,  -- scans in a row that saw the same size and mtime
    stable_since    timestamptz NOT NULL DEFAULT now(),  -- database clock: unchanged since
    first_seen      timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'queued', 'gone')),
    job_id          bigint REFERENCES jobs (id) ON DELETE SET NULL,  -- the latest job
    queued_size     bigint,             -- what was queued (NULL: never)
    queued_mtime_ns bigint,
    queued_at       timestamptz,
    queue_count     int NOT NULL DEFAULT 0,
    PRIMARY KEY (watchfolder, rel_path)
);
CREATE INDEX watch_files_job_idx ON watch_files (job_id) WHERE job_id IS NOT NULL;
