-- +goose Up
-- Baseline: exactly the schema release edfbac7 made with gorm AutoMigrate and
-- the hand-written indexes of its packages, in the order it made them
-- (packages: store, retention, files, editing, auth, audit, mfa, backups).
-- Every statement is IF NOT EXISTS, so on a database that release made (which
-- has no goose_db_version table yet) this migration changes nothing and only
-- records version 1. Do not edit it: change the schema in a new
-- migration (docs/schema.md).

-- cloud-server/internal/store
CREATE TABLE IF NOT EXISTS "clinics" ("id" bigint,"name" text NOT NULL,"node_id" bigint NOT NULL,"token_sha256" text NOT NULL,"conflict_policy" text NOT NULL DEFAULT 'local-wins',"last_seq" bigint NOT NULL DEFAULT 0,"acked_seq" bigint NOT NULL DEFAULT 0,"rewinds" bigint NOT NULL DEFAULT 0,"last_rewind_at" timestamptz,"last_rewind_from" bigint NOT NULL DEFAULT 0,"broker_user" text NOT NULL DEFAULT '',"lockd_token_sha256" text NOT NULL DEFAULT '',"disabled_at" timestamptz,"topology" bigint NOT NULL DEFAULT 0,"created_at" timestamptz,PRIMARY KEY ("id"));
CREATE UNIQUE INDEX IF NOT EXISTS "idx_clinics_token_sha256" ON "clinics" ("token_sha256");
CREATE UNIQUE INDEX IF NOT EXISTS "idx_clinics_node_id" ON "clinics" ("node_id");

-- cloud-server/internal/store
CREATE TABLE IF NOT EXISTS "enrollments" ("token_sha256" text,"name" text NOT NULL,"conflict_policy" text NOT NULL,"expires_at" timestamptz NOT NULL,"used_at" timestamptz,"clinic_id" bigint NOT NULL DEFAULT 0,"created_at" timestamptz,PRIMARY KEY ("token_sha256"));

-- cloud-server/internal/store
CREATE TABLE IF NOT EXISTS "changes" ("clinic_id" bigint,"cloud_seq" bigint,"change_id" bigint NOT NULL,"kind" text NOT NULL,"record_id" bigint NOT NULL,"origin" text NOT NULL,"base_version" text NOT NULL,"new_version" text NOT NULL,"deleted" boolean NOT NULL,"conflict" text NOT NULL DEFAULT '',"conflict_of" bigint NOT NULL DEFAULT 0,"fence" bigint NOT NULL DEFAULT 0,"unfenced" boolean NOT NULL DEFAULT false,"session" text NOT NULL DEFAULT '',"unsync" boolean NOT NULL DEFAULT false,"saved_by" bigint NOT NULL DEFAULT 0,"saved_by_name" text NOT NULL DEFAULT '',"payload" text,"at" timestamptz NOT NULL,"accepted_at" timestamptz NOT NULL,PRIMARY KEY ("clinic_id","cloud_seq"));
CREATE INDEX IF NOT EXISTS "changes_record" ON "changes" ("clinic_id","kind","record_id","cloud_seq");
CREATE UNIQUE INDEX IF NOT EXISTS "changes_clinic_change" ON "changes" ("clinic_id","change_id");

-- cloud-server/internal/store
CREATE TABLE IF NOT EXISTS "parked" ("id" bigserial,"clinic_id" bigint NOT NULL,"wait_kind" text NOT NULL,"wait_id" bigint NOT NULL,"kind" text NOT NULL,"record_id" bigint NOT NULL,"change_id" bigint NOT NULL,"envelope" text NOT NULL,"created_at" timestamptz,PRIMARY KEY ("id"));
CREATE UNIQUE INDEX IF NOT EXISTS "parked_change" ON "parked" ("clinic_id","change_id");
CREATE INDEX IF NOT EXISTS "parked_record" ON "parked" ("clinic_id","kind","record_id");
CREATE INDEX IF NOT EXISTS "parked_wait" ON "parked" ("clinic_id","wait_kind","wait_id");

-- cloud-server/internal/store
CREATE TABLE IF NOT EXISTS "outbox" ("id" bigserial,"clinic_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"created_at" timestamptz,PRIMARY KEY ("id"));

-- shared/editing
CREATE TABLE IF NOT EXISTS "edit_sessions" ("id" text,"clinic_id" bigint NOT NULL,"kind" text NOT NULL,"record_id" bigint NOT NULL,"side" text NOT NULL,"user" text NOT NULL,"client" text NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"secret" text NOT NULL DEFAULT '',"version_at_lock" text NOT NULL,"unfenced" boolean NOT NULL DEFAULT false,"saves" bigint NOT NULL DEFAULT 0,"started_at" timestamptz NOT NULL,"last_activity" timestamptz NOT NULL,"expires_at" timestamptz NOT NULL,"warned_at" timestamptz,"closed_at" timestamptz,"close_reason" text NOT NULL DEFAULT '',PRIMARY KEY ("id"));
CREATE INDEX IF NOT EXISTS "idx_edit_sessions_closed_at" ON "edit_sessions" ("closed_at");
CREATE INDEX IF NOT EXISTS "edit_sessions_record" ON "edit_sessions" ("clinic_id","kind","record_id");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "patients" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"chart_no" text NOT NULL DEFAULT '',"name" text NOT NULL DEFAULT '',"birth_date" text NOT NULL DEFAULT '',"sex" text NOT NULL DEFAULT '',"phone" text NOT NULL DEFAULT '',"notes" text NOT NULL DEFAULT '',PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_patients_updated_at" ON "patients" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "doctors" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"name" text NOT NULL DEFAULT '',"license_no" text NOT NULL DEFAULT '',"specialty" text NOT NULL DEFAULT '',"email" text NOT NULL DEFAULT '',"phone" text NOT NULL DEFAULT '',"retired" boolean NOT NULL DEFAULT false,PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_doctors_updated_at" ON "doctors" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "users" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"username" text NOT NULL DEFAULT '',"display_name" text NOT NULL DEFAULT '',"role" text NOT NULL DEFAULT '',"email" text NOT NULL DEFAULT '',"doctor_id" bigint NOT NULL DEFAULT 0,"disabled" boolean NOT NULL DEFAULT false,"password_hash" text NOT NULL DEFAULT '',PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_users_updated_at" ON "users" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "report_templates" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"name" text NOT NULL DEFAULT '',"modality" text NOT NULL DEFAULT '',"body" text NOT NULL DEFAULT '',PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_report_templates_updated_at" ON "report_templates" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "settings" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"key" text NOT NULL DEFAULT '',"value" text NOT NULL DEFAULT 'null',PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_settings_updated_at" ON "settings" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "studies" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"patient_id" bigint NOT NULL DEFAULT 0,"doctor_id" bigint NOT NULL DEFAULT 0,"study_date" text NOT NULL DEFAULT '',"description" text NOT NULL DEFAULT '',"accession_no" text NOT NULL DEFAULT '',PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_studies_patient_id" ON "studies" ("patient_id");
CREATE INDEX IF NOT EXISTS "idx_studies_updated_at" ON "studies" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "images" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"study_id" bigint NOT NULL DEFAULT 0,"doctor_id" bigint NOT NULL DEFAULT 0,"modality" text NOT NULL DEFAULT '',"study_date" text NOT NULL DEFAULT '',"tags" text NOT NULL DEFAULT 'null',"file_name" text NOT NULL DEFAULT '',"content_type" text NOT NULL DEFAULT '',"sha256" text NOT NULL DEFAULT '',"size" bigint NOT NULL DEFAULT 0,"derived_from" bigint NOT NULL DEFAULT 0,"notes" text NOT NULL DEFAULT '',PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_images_sha256" ON "images" ("sha256");
CREATE INDEX IF NOT EXISTS "idx_images_study_date" ON "images" ("study_date");
CREATE INDEX IF NOT EXISTS "idx_images_study_id" ON "images" ("study_id");
CREATE INDEX IF NOT EXISTS "idx_images_updated_at" ON "images" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "captures" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"study_id" bigint NOT NULL DEFAULT 0,"image_id" bigint NOT NULL DEFAULT 0,"title" text NOT NULL DEFAULT '',"sha256" text NOT NULL DEFAULT '',"size" bigint NOT NULL DEFAULT 0,PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_captures_sha256" ON "captures" ("sha256");
CREATE INDEX IF NOT EXISTS "idx_captures_study_id" ON "captures" ("study_id");
CREATE INDEX IF NOT EXISTS "idx_captures_updated_at" ON "captures" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "project_files" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"study_id" bigint NOT NULL DEFAULT 0,"name" text NOT NULL DEFAULT '',"format" text NOT NULL DEFAULT '',"sha256" text NOT NULL DEFAULT '',"size" bigint NOT NULL DEFAULT 0,PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_project_files_sha256" ON "project_files" ("sha256");
CREATE INDEX IF NOT EXISTS "idx_project_files_study_id" ON "project_files" ("study_id");
CREATE INDEX IF NOT EXISTS "idx_project_files_updated_at" ON "project_files" ("updated_at");

-- cloud-server/internal/store (records)
CREATE TABLE IF NOT EXISTS "reports" ("clinic_id" bigint,"id" bigint,"version" text NOT NULL,"origin" text NOT NULL,"deleted" boolean NOT NULL DEFAULT false,"conflict" boolean NOT NULL DEFAULT false,"conflict_of" bigint NOT NULL DEFAULT 0,"local_version" text NOT NULL DEFAULT '',"last_change_id" bigint NOT NULL,"cloud_seq" bigint NOT NULL,"fence" bigint NOT NULL DEFAULT 0,"edit_session" text NOT NULL DEFAULT '',"unfenced" boolean NOT NULL DEFAULT false,"retention_state" text NOT NULL DEFAULT '',"unsynced" boolean NOT NULL DEFAULT false,"created_at" timestamptz,"updated_at" timestamptz,"study_id" bigint NOT NULL DEFAULT 0,"doctor_id" bigint NOT NULL DEFAULT 0,"template_id" bigint NOT NULL DEFAULT 0,"title" text NOT NULL DEFAULT '',"body" text NOT NULL DEFAULT '',"status" text NOT NULL DEFAULT '',PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_reports_study_id" ON "reports" ("study_id");
CREATE INDEX IF NOT EXISTS "idx_reports_updated_at" ON "reports" ("updated_at");

-- cloud-server/internal/store (retention)
CREATE TABLE IF NOT EXISTS "clinic_retention" ("clinic_id" bigint,"mode" text NOT NULL DEFAULT 'keep',"after_days" bigint NOT NULL DEFAULT 0,"updated_at" timestamptz,"run_at" timestamptz,"last_error" text NOT NULL DEFAULT '',PRIMARY KEY ("clinic_id"));

-- cloud-server/internal/store (retention)
CREATE TABLE IF NOT EXISTS "retention_events" ("id" bigserial,"clinic_id" bigint NOT NULL,"kind" text NOT NULL,"record_id" bigint NOT NULL,"action" text NOT NULL,"actor" text NOT NULL,"cloud_seq" bigint NOT NULL DEFAULT 0,"reason" text NOT NULL DEFAULT '',"hold_until" timestamptz,"at" timestamptz NOT NULL,PRIMARY KEY ("id"));
CREATE INDEX IF NOT EXISTS "retention_events_record" ON "retention_events" ("clinic_id","kind","record_id");

-- cloud-server/internal/files
CREATE TABLE IF NOT EXISTS "files" ("clinic_id" bigint,"sha256" char(64),"state" text NOT NULL,"size" bigint NOT NULL,"content_type" text NOT NULL DEFAULT '',"mode" text NOT NULL DEFAULT '',"upload_id" text NOT NULL DEFAULT '',"upload_started_at" timestamptz,"part_size" bigint NOT NULL DEFAULT 0,"reason" text NOT NULL DEFAULT '',"created_at" timestamptz NOT NULL,"updated_at" timestamptz NOT NULL,"verified_at" timestamptz,"unsynced_at" timestamptz,"archived_at" timestamptz,"removed_at" timestamptz,PRIMARY KEY ("clinic_id","sha256"));
CREATE INDEX IF NOT EXISTS "idx_files_unsynced_at" ON "files" ("unsynced_at");
CREATE INDEX IF NOT EXISTS "idx_files_upload_started_at" ON "files" ("upload_started_at");
CREATE INDEX IF NOT EXISTS "idx_files_state" ON "files" ("state");
CREATE INDEX IF NOT EXISTS images_clinic_sha256 ON images (clinic_id, sha256);
CREATE INDEX IF NOT EXISTS captures_clinic_sha256 ON captures (clinic_id, sha256);
CREATE INDEX IF NOT EXISTS project_files_clinic_sha256 ON project_files (clinic_id, sha256);

-- shared/auth
CREATE TABLE IF NOT EXISTS "person_sessions" ("token_hash" varchar(64),"clinic_id" bigint NOT NULL,"user_id" bigint NOT NULL,"created_at" timestamptz NOT NULL,"last_seen" timestamptz NOT NULL,"expires_at" timestamptz NOT NULL,PRIMARY KEY ("token_hash"));
CREATE INDEX IF NOT EXISTS "idx_person_sessions_user_id" ON "person_sessions" ("user_id");
CREATE INDEX IF NOT EXISTS "idx_person_sessions_clinic_id" ON "person_sessions" ("clinic_id");

-- shared/audit
CREATE TABLE IF NOT EXISTS "audit_log" ("chain" varchar(64),"seq" bigint,"at" timestamptz NOT NULL,"clinic" bigint NOT NULL DEFAULT 0,"actor" text NOT NULL,"username" text NOT NULL DEFAULT '',"action" text NOT NULL,"kind" text NOT NULL DEFAULT '',"target" text NOT NULL DEFAULT '',"remote" text NOT NULL DEFAULT '',"outcome" bigint NOT NULL,"detail" text NOT NULL DEFAULT '',"prev" text NOT NULL,"hash" text NOT NULL,PRIMARY KEY ("chain","seq"));
CREATE INDEX IF NOT EXISTS "idx_audit_log_target" ON "audit_log" ("target");
CREATE INDEX IF NOT EXISTS "idx_audit_log_actor" ON "audit_log" ("actor");
CREATE INDEX IF NOT EXISTS "idx_audit_log_at" ON "audit_log" ("at");

-- shared/audit
CREATE TABLE IF NOT EXISTS "audit_heads" ("chain" varchar(64),"seq" bigint NOT NULL,"hash" text NOT NULL,PRIMARY KEY ("chain"));

-- cloud-server/internal/mfa
CREATE TABLE IF NOT EXISTS "person_totp" ("clinic_id" bigint,"user_id" bigint,"sealed" text NOT NULL,"confirmed_at" timestamptz,"last_step" bigint NOT NULL DEFAULT 0,"failures" bigint NOT NULL DEFAULT 0,"locked_until" timestamptz,"created_at" timestamptz,"updated_at" timestamptz,PRIMARY KEY ("clinic_id","user_id"));

-- cloud-server/internal/backups
CREATE TABLE IF NOT EXISTS "clinic_backups" ("clinic_id" bigint,"id" bigint,"state" text NOT NULL,"size" bigint NOT NULL,"sha256" char(64) NOT NULL,"checkpoint" bigint NOT NULL DEFAULT 0,"records" bigint NOT NULL DEFAULT 0,"created_at" timestamptz,"completed_at" timestamptz,PRIMARY KEY ("clinic_id","id"));
CREATE INDEX IF NOT EXISTS "idx_clinic_backups_state" ON "clinic_backups" ("state");
