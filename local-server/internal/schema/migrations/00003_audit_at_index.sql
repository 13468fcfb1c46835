-- +goose Up
-- The audit log's index on its time (made by gorm's `index` tag on
-- audit.Entry.At before the baseline) serves no query of the clinic: the
-- listing, Verify, the shipper, the backup's catch-up and the restore read
-- a chain by seq (the primary key), filtered by actor or target (their own
-- indexes); nothing prunes the log by time. Every audited write paid for it:
-- an index entry and, in each group commit, a page of the WAL
-- (docs/performance.md, "The clinic's CPU per create"). The cloud keeps its
-- copy: an older cloud node's AutoMigrate would build it again.
DROP INDEX IF EXISTS idx_audit_log_at;

-- +goose Down
CREATE INDEX IF NOT EXISTS `idx_audit_log_at` ON `audit_log`(`at`);
