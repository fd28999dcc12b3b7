-- ffdesk schema 2: throughput samples for the desktop app's graphs.
--
-- Every node writes one row per heartbeat (node = its identifier); once per interval one of
-- them also writes the cluster-wide row (node IS NULL). Rows are small and short-lived: the
-- writer deletes those older than the retention (24 h by default) a batch at a time.
-- No NOTIFY triggers here: samples are not news, the console polls them.

CREATE TABLE samples (
    at          timestamptz NOT NULL DEFAULT now(),
    node        text,                 -- NULL: the cluster-wide row
    fps         real NOT NULL,        -- sum of the fps of running jobs (this node's or all)
    running     int NOT NULL,         -- running jobs (this node's or all)
    -- Cluster rows only (NULL on node rows):
    queued      int,                  -- queue depth
    span_s      real,                 -- the time the counts below cover (since the last row)
    finished    int,                  -- jobs that ended on a node in span_s (not canceled)
    failed      int,                  -- of which failed or dead
    claimed     int,                  -- jobs claimed in span_s: the weight of the percentiles
    queue_p50   real,                 -- time in queue (s) of the jobs claimed in span_s;
    queue_p95   real                  -- NULL when none was claimed
);

-- Window reads and the retention delete both go by time.
CREATE INDEX samples_at_idx ON samples (at);
-- The cluster series is one row in (nodes + 1): its own small index keeps its reads cheap.
CREATE INDEX samples_cluster_idx ON samples (at) WHERE node IS NULL;

-- Who wrote the last cluster row, and when. A row that is UPDATEd under a condition is what
-- makes "at most one cluster row per interval" hold under concurrency: a writer whose
-- snapshot predates another's commit re-checks the condition on the newest row version
-- (READ COMMITTED re-evaluation), which a check against the samples table could not do.
CREATE TABLE sample_clock (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    at       timestamptz NOT NULL DEFAULT '-infinity',
    prev_at  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO sample_clock DEFAULT VALUES;

-- The cluster row counts the jobs that finished and were claimed since the previous one;
-- without these it would read all of jobs every interval. Both stay off the hot path: a
-- running job's progress updates leave finished_at NULL (outside the partial index), and an
-- attempt's claimed_at is written once, at the claim.
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX attempts_claimed_at_idx ON attempts (claimed_at);
