-- +goose Up
-- Baseline: exactly the schema release edfbac7 made with gorm AutoMigrate and
-- the hand-written indexes of its packages, in the order it made them
-- (packages: store, transfer, editing, auth, audit, app).
-- Every statement is IF NOT EXISTS, so on a database that release made (which
-- has no goose_db_version table yet) this migration changes nothing and only
-- records version 1. Do not edit it: change the schema in a new
-- migration (docs/schema.md).

-- local-server/internal/store
CREATE TABLE IF NOT EXISTS `outbox` (`id` integer PRIMARY KEY AUTOINCREMENT,`change_id` integer NOT NULL,`lane` integer NOT NULL DEFAULT 0,`envelope` text NOT NULL,`created_at` datetime);
CREATE INDEX IF NOT EXISTS `idx_outbox_lane` ON `outbox`(`lane`);
CREATE UNIQUE INDEX IF NOT EXISTS `idx_outbox_change_id` ON `outbox`(`change_id`);

-- local-server/internal/store
CREATE TABLE IF NOT EXISTS `meta` (`key` text,`value` text NOT NULL,PRIMARY KEY (`key`));

-- local-server/internal/store
CREATE TABLE IF NOT EXISTS `versions` (`id` integer PRIMARY KEY AUTOINCREMENT,`kind` text NOT NULL,`record_id` integer NOT NULL,`version` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`origin` text NOT NULL,`change_id` integer NOT NULL,`session` text NOT NULL DEFAULT "",`saved_by` integer NOT NULL DEFAULT 0,`saved_by_name` text NOT NULL DEFAULT "",`fence` integer NOT NULL DEFAULT 0,`unfenced` numeric NOT NULL DEFAULT false,`content` text NOT NULL DEFAULT "",`at` datetime NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS `versions_record` ON `versions`(`kind`,`record_id`,`version`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `patients` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`chart_no` text NOT NULL DEFAULT "",`name` text NOT NULL DEFAULT "",`birth_date` text NOT NULL DEFAULT "",`sex` text NOT NULL DEFAULT "",`phone` text NOT NULL DEFAULT "",`notes` text NOT NULL DEFAULT "",PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_patients_updated_at` ON `patients`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_patients_sync_state` ON `patients`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `doctors` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`name` text NOT NULL DEFAULT "",`license_no` text NOT NULL DEFAULT "",`specialty` text NOT NULL DEFAULT "",`email` text NOT NULL DEFAULT "",`phone` text NOT NULL DEFAULT "",`retired` numeric NOT NULL DEFAULT false,PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_doctors_updated_at` ON `doctors`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_doctors_sync_state` ON `doctors`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `users` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`username` text NOT NULL DEFAULT "",`display_name` text NOT NULL DEFAULT "",`role` text NOT NULL DEFAULT "",`email` text NOT NULL DEFAULT "",`doctor_id` integer NOT NULL DEFAULT 0,`disabled` numeric NOT NULL DEFAULT false,`password_hash` text NOT NULL DEFAULT "",PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_users_updated_at` ON `users`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_users_sync_state` ON `users`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `report_templates` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`name` text NOT NULL DEFAULT "",`modality` text NOT NULL DEFAULT "",`body` text NOT NULL DEFAULT "",PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_report_templates_updated_at` ON `report_templates`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_report_templates_sync_state` ON `report_templates`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `settings` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`key` text NOT NULL DEFAULT "",`value` text NOT NULL DEFAULT "null",PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_settings_updated_at` ON `settings`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_settings_sync_state` ON `settings`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `studies` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`patient_id` integer NOT NULL DEFAULT 0,`doctor_id` integer NOT NULL DEFAULT 0,`study_date` text NOT NULL DEFAULT "",`description` text NOT NULL DEFAULT "",`accession_no` text NOT NULL DEFAULT "",PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_studies_patient_id` ON `studies`(`patient_id`);
CREATE INDEX IF NOT EXISTS `idx_studies_updated_at` ON `studies`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_studies_sync_state` ON `studies`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `images` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`study_id` integer NOT NULL DEFAULT 0,`doctor_id` integer NOT NULL DEFAULT 0,`modality` text NOT NULL DEFAULT "",`study_date` text NOT NULL DEFAULT "",`tags` text NOT NULL DEFAULT 'null',`file_name` text NOT NULL DEFAULT "",`content_type` text NOT NULL DEFAULT "",`sha256` text NOT NULL DEFAULT "",`size` integer NOT NULL DEFAULT 0,`derived_from` integer NOT NULL DEFAULT 0,`notes` text NOT NULL DEFAULT "",PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_images_sha256` ON `images`(`sha256`);
CREATE INDEX IF NOT EXISTS `idx_images_study_date` ON `images`(`study_date`);
CREATE INDEX IF NOT EXISTS `idx_images_study_id` ON `images`(`study_id`);
CREATE INDEX IF NOT EXISTS `idx_images_updated_at` ON `images`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_images_sync_state` ON `images`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `captures` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`study_id` integer NOT NULL DEFAULT 0,`image_id` integer NOT NULL DEFAULT 0,`title` text NOT NULL DEFAULT "",`sha256` text NOT NULL DEFAULT "",`size` integer NOT NULL DEFAULT 0,PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_captures_sha256` ON `captures`(`sha256`);
CREATE INDEX IF NOT EXISTS `idx_captures_study_id` ON `captures`(`study_id`);
CREATE INDEX IF NOT EXISTS `idx_captures_updated_at` ON `captures`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_captures_sync_state` ON `captures`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `project_files` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`study_id` integer NOT NULL DEFAULT 0,`name` text NOT NULL DEFAULT "",`format` text NOT NULL DEFAULT "",`sha256` text NOT NULL DEFAULT "",`size` integer NOT NULL DEFAULT 0,PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_project_files_sha256` ON `project_files`(`sha256`);
CREATE INDEX IF NOT EXISTS `idx_project_files_study_id` ON `project_files`(`study_id`);
CREATE INDEX IF NOT EXISTS `idx_project_files_updated_at` ON `project_files`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_project_files_sync_state` ON `project_files`(`sync_state`);

-- local-server/internal/store (records)
CREATE TABLE IF NOT EXISTS `reports` (`id` integer,`clinic_id` integer NOT NULL,`version` text NOT NULL,`origin` text NOT NULL,`deleted` numeric NOT NULL DEFAULT false,`conflict_of` integer NOT NULL DEFAULT 0,`sync_state` text NOT NULL,`sync_choice` text NOT NULL DEFAULT "",`queued` numeric NOT NULL DEFAULT false,`backfilled` numeric NOT NULL DEFAULT false,`sort_date` text NOT NULL DEFAULT "",`cloud_version` text NOT NULL DEFAULT "",`synced_at` datetime,`pending_change_id` integer NOT NULL DEFAULT 0,`pending_since` datetime,`cloud_seq` integer NOT NULL DEFAULT 0,`fence` integer NOT NULL DEFAULT 0,`edit_session` text NOT NULL DEFAULT "",`unfenced` numeric NOT NULL DEFAULT false,`created_at` datetime,`updated_at` datetime,`study_id` integer NOT NULL DEFAULT 0,`doctor_id` integer NOT NULL DEFAULT 0,`template_id` integer NOT NULL DEFAULT 0,`title` text NOT NULL DEFAULT "",`body` text NOT NULL DEFAULT "",`status` text NOT NULL DEFAULT "",PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_reports_study_id` ON `reports`(`study_id`);
CREATE INDEX IF NOT EXISTS `idx_reports_updated_at` ON `reports`(`updated_at`);
CREATE INDEX IF NOT EXISTS `idx_reports_sync_state` ON `reports`(`sync_state`);
CREATE INDEX IF NOT EXISTS patients_backfill ON patients (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS doctors_backfill ON doctors (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS users_backfill ON users (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS report_templates_backfill ON report_templates (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS settings_backfill ON settings (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS studies_backfill ON studies (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS studies_choice ON studies (sync_choice);
CREATE INDEX IF NOT EXISTS images_backfill ON images (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS captures_backfill ON captures (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS project_files_backfill ON project_files (sort_date DESC, id DESC) WHERE queued = 0;
CREATE INDEX IF NOT EXISTS reports_backfill ON reports (sort_date DESC, id DESC) WHERE queued = 0;

-- local-server/internal/transfer
CREATE TABLE IF NOT EXISTS `file_transfers` (`id` integer PRIMARY KEY AUTOINCREMENT,`direction` text NOT NULL,`sha256` text NOT NULL,`path` text NOT NULL,`size` integer NOT NULL DEFAULT 0,`content_type` text NOT NULL DEFAULT "",`state` text NOT NULL,`bytes_done` integer NOT NULL DEFAULT 0,`attempts` integer NOT NULL DEFAULT 0,`next_attempt_at` datetime NOT NULL,`reason` text NOT NULL DEFAULT "",`upload_id` text NOT NULL DEFAULT "",`part_size` integer NOT NULL DEFAULT 0,`created_at` datetime,`updated_at` datetime,`done_at` datetime);
CREATE INDEX IF NOT EXISTS `idx_file_transfers_next_attempt_at` ON `file_transfers`(`next_attempt_at`);
CREATE INDEX IF NOT EXISTS `idx_file_transfers_state` ON `file_transfers`(`state`);
CREATE UNIQUE INDEX IF NOT EXISTS `ux_file_transfers_key` ON `file_transfers`(`direction`,`sha256`,`path`);

-- local-server/internal/transfer
CREATE TABLE IF NOT EXISTS `file_transfer_parts` (`transfer_id` integer,`number` integer,`upload_id` text NOT NULL,`size` integer NOT NULL,`e_tag` text NOT NULL DEFAULT "",`sent_at` datetime NOT NULL,PRIMARY KEY (`transfer_id`,`number`));

-- shared/editing
CREATE TABLE IF NOT EXISTS `edit_sessions` (`id` text,`clinic_id` integer NOT NULL,`kind` text NOT NULL,`record_id` integer NOT NULL,`side` text NOT NULL,`user` text NOT NULL,`client` text NOT NULL,`fence` integer NOT NULL DEFAULT 0,`secret` text NOT NULL DEFAULT "",`version_at_lock` text NOT NULL,`unfenced` numeric NOT NULL DEFAULT false,`saves` integer NOT NULL DEFAULT 0,`started_at` datetime NOT NULL,`last_activity` datetime NOT NULL,`expires_at` datetime NOT NULL,`warned_at` datetime,`closed_at` datetime,`close_reason` text NOT NULL DEFAULT "",PRIMARY KEY (`id`));
CREATE INDEX IF NOT EXISTS `idx_edit_sessions_closed_at` ON `edit_sessions`(`closed_at`);
CREATE INDEX IF NOT EXISTS `edit_sessions_record` ON `edit_sessions`(`clinic_id`,`kind`,`record_id`);

-- shared/auth
CREATE TABLE IF NOT EXISTS `person_sessions` (`token_hash` text,`clinic_id` integer NOT NULL,`user_id` integer NOT NULL,`created_at` datetime NOT NULL,`last_seen` datetime NOT NULL,`expires_at` datetime NOT NULL,PRIMARY KEY (`token_hash`));
CREATE INDEX IF NOT EXISTS `idx_person_sessions_user_id` ON `person_sessions`(`user_id`);
CREATE INDEX IF NOT EXISTS `idx_person_sessions_clinic_id` ON `person_sessions`(`clinic_id`);

-- shared/audit
CREATE TABLE IF NOT EXISTS `audit_log` (`chain` text,`seq` integer,`at` datetime NOT NULL,`clinic` integer NOT NULL DEFAULT 0,`actor` text NOT NULL,`username` text NOT NULL DEFAULT "",`action` text NOT NULL,`kind` text NOT NULL DEFAULT "",`target` text NOT NULL DEFAULT "",`remote` text NOT NULL DEFAULT "",`outcome` integer NOT NULL,`detail` text NOT NULL DEFAULT "",`prev` text NOT NULL,`hash` text NOT NULL,PRIMARY KEY (`chain`,`seq`));
CREATE INDEX IF NOT EXISTS `idx_audit_log_target` ON `audit_log`(`target`);
CREATE INDEX IF NOT EXISTS `idx_audit_log_actor` ON `audit_log`(`actor`);
CREATE INDEX IF NOT EXISTS `idx_audit_log_at` ON `audit_log`(`at`);

-- shared/audit
CREATE TABLE IF NOT EXISTS `audit_heads` (`chain` text,`seq` integer NOT NULL,`hash` text NOT NULL,PRIMARY KEY (`chain`));

-- local-server/internal/app (audit shipper)
CREATE TABLE IF NOT EXISTS `audit_shipped` (`chain` text,`seq` integer NOT NULL,PRIMARY KEY (`chain`));
