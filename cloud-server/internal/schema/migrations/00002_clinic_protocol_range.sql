-- +goose Up
-- The wire protocol versions each clinic stated (issue 18); no row: none
-- stated (a clinic of a release before ranges speaks protocol 2 exactly).
-- A table of its own, not columns of clinics: nodes of the release before
-- read clinics with cached prepared `SELECT *` statements, which PostgreSQL
-- refuses once the table's columns change ("cached plan must not change
-- result type"), so during a rolling upgrade they would fail until
-- restarted. A new table is what they never read.
CREATE TABLE IF NOT EXISTS "clinic_protocols" ("clinic_id" bigint,"protocol_min" bigint NOT NULL,"protocol_max" bigint NOT NULL,PRIMARY KEY ("clinic_id"));

-- +goose Down
DROP TABLE IF EXISTS "clinic_protocols";
