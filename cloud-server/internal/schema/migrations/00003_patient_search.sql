-- +goose NO TRANSACTION
-- +goose Up
-- Patient search (issue 21, docs/viewer.md): an index per searched field,
-- per clinic, ordered as the search pages through it (the folded key, then
-- id), so a prefix search and its keyset paging are index ranges. The key
-- is under the "C" collation: byte order, which the prefix's upper bound
-- relies on, and lower() then folds ASCII letters only, as
-- shared/search.Fold and the clinic's SQLite do. Built CONCURRENTLY (hence
-- no transaction): the nodes of the previous release keep writing patients
-- while a rolling upgrade builds them, and no column changes under their
-- cached statements.
-- +goose StatementBegin
CREATE INDEX CONCURRENTLY IF NOT EXISTS patients_search_name ON patients (clinic_id, lower(name COLLATE "C"), id);
-- +goose StatementEnd
-- +goose StatementBegin
CREATE INDEX CONCURRENTLY IF NOT EXISTS patients_search_chart_no ON patients (clinic_id, lower(chart_no COLLATE "C"), id);
-- +goose StatementEnd
-- +goose StatementBegin
CREATE INDEX CONCURRENTLY IF NOT EXISTS patients_search_birth_date ON patients (clinic_id, (birth_date COLLATE "C"), id);
-- +goose StatementEnd

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS patients_search_name;
DROP INDEX CONCURRENTLY IF EXISTS patients_search_chart_no;
DROP INDEX CONCURRENTLY IF EXISTS patients_search_birth_date;
