package store

import (
	"testing"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/audit/audittest"
)

// TestAuditImportMatchesGorm: on the clinic's SQLite (a restored clinic
// brings back the cloud's copy of its chain, backup.CatchUpAudit), Import
// writes with its multi-row INSERTs the rows gorm's import wrote, times
// in the same text, and answers as it did (audittest.CheckImport).
func TestAuditImportMatchesGorm(t *testing.T) {
	audittest.CheckImport(t, func(t *testing.T) *gorm.DB { return open(t).DB() })
}
