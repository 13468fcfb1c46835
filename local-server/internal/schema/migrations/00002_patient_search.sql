-- +goose Up
-- Patient search (issue 21, docs/viewer.md): an index per searched field,
-- ordered as the search pages through it (the folded key, then id), so a
-- prefix search and its keyset paging are index ranges at any clinic size.
-- lower() folds ASCII letters only, as shared/search.Fold does.
CREATE INDEX IF NOT EXISTS patients_search_name ON patients (lower(name), id);
CREATE INDEX IF NOT EXISTS patients_search_chart_no ON patients (lower(chart_no), id);
CREATE INDEX IF NOT EXISTS patients_search_birth_date ON patients (birth_date, id);

-- +goose Down
DROP INDEX IF EXISTS patients_search_name;
DROP INDEX IF EXISTS patients_search_chart_no;
DROP INDEX IF EXISTS patients_search_birth_date;
