//go:build windows

package datadir

// GiveToOwner does nothing on Windows: the data directory under ProgramData
// inherits its access list, which the installer sets.
func GiveToOwner(string) (int, error) { return 0, nil }

// MatchOwner does nothing on Windows (access lists are inherited).
func MatchOwner(string, string) error { return nil }
