-- +goose Up
-- Clinics state the wire protocol versions they speak (issue 18). NULL: not
-- stated yet (a clinic of a release before ranges: protocol 2 exactly).
ALTER TABLE clinics ADD COLUMN IF NOT EXISTS protocol_min bigint;
ALTER TABLE clinics ADD COLUMN IF NOT EXISTS protocol_max bigint;

-- +goose Down
ALTER TABLE clinics DROP COLUMN IF EXISTS protocol_max;
ALTER TABLE clinics DROP COLUMN IF EXISTS protocol_min;
