-- +goose Up
-- Each kind's index on sync_state keeps only the states that stay rare:
-- pending (the in-flight records: the oldest pending age, anti-entropy's
-- in-flight set), conflict (the records needing a person) and excluded
-- records the cloud had (taken out of it by a person). The two states a
-- whole history can be in, synced and excluded never queued (the
-- backfill's candidates, in its own index), are left out: a backfill
-- moved every record's entry twice across an index of the whole table
-- (excluded to pending at its commit, pending to synced at the cloud's
-- acceptance), each move a page of its own in the WAL; now the entry
-- enters and leaves an index of a few thousand entries whose pages a
-- commit shares (docs/performance.md, "The sync_state index only where it
-- is rare"). A query uses it when its condition implies the index's:
-- sync_state = 'pending', a literal. The name is kept, so an older
-- release's AutoMigrate, started on this database again, finds the index
-- and leaves it.
DROP INDEX IF EXISTS idx_patients_sync_state;
CREATE INDEX idx_patients_sync_state ON patients (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_doctors_sync_state;
CREATE INDEX idx_doctors_sync_state ON doctors (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_users_sync_state;
CREATE INDEX idx_users_sync_state ON users (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_report_templates_sync_state;
CREATE INDEX idx_report_templates_sync_state ON report_templates (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_settings_sync_state;
CREATE INDEX idx_settings_sync_state ON settings (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_studies_sync_state;
CREATE INDEX idx_studies_sync_state ON studies (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_images_sync_state;
CREATE INDEX idx_images_sync_state ON images (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_captures_sync_state;
CREATE INDEX idx_captures_sync_state ON captures (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_project_files_sync_state;
CREATE INDEX idx_project_files_sync_state ON project_files (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);
DROP INDEX IF EXISTS idx_reports_sync_state;
CREATE INDEX idx_reports_sync_state ON reports (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1);

-- +goose Down
DROP INDEX IF EXISTS idx_patients_sync_state;
CREATE INDEX `idx_patients_sync_state` ON `patients`(`sync_state`);
DROP INDEX IF EXISTS idx_doctors_sync_state;
CREATE INDEX `idx_doctors_sync_state` ON `doctors`(`sync_state`);
DROP INDEX IF EXISTS idx_users_sync_state;
CREATE INDEX `idx_users_sync_state` ON `users`(`sync_state`);
DROP INDEX IF EXISTS idx_report_templates_sync_state;
CREATE INDEX `idx_report_templates_sync_state` ON `report_templates`(`sync_state`);
DROP INDEX IF EXISTS idx_settings_sync_state;
CREATE INDEX `idx_settings_sync_state` ON `settings`(`sync_state`);
DROP INDEX IF EXISTS idx_studies_sync_state;
CREATE INDEX `idx_studies_sync_state` ON `studies`(`sync_state`);
DROP INDEX IF EXISTS idx_images_sync_state;
CREATE INDEX `idx_images_sync_state` ON `images`(`sync_state`);
DROP INDEX IF EXISTS idx_captures_sync_state;
CREATE INDEX `idx_captures_sync_state` ON `captures`(`sync_state`);
DROP INDEX IF EXISTS idx_project_files_sync_state;
CREATE INDEX `idx_project_files_sync_state` ON `project_files`(`sync_state`);
DROP INDEX IF EXISTS idx_reports_sync_state;
CREATE INDEX `idx_reports_sync_state` ON `reports`(`sync_state`);
